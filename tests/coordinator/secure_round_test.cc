// Secure rounds through the real Coordinator and ClientRuntime: clients with fake trainers (known
// updates) run the SecAgg+ stages over the in-memory channel, each on its own thread, some
// dropping out at a chosen stage. The new global model must equal the plaintext FedAvg of the
// clients whose inputs made it into the sum, within the fixed-point error; with too many
// dropouts the round aborts and the model stays as it was.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "client/client_runtime.h"
#include "coordinator/coordinator.h"
#include "coordinator/strategy_factory.h"
#include "core/rng.h"
#include "simulations/in_memory_channel.h"
#include "tests/testing/status_macros.h"

namespace tessera::coordinator {
namespace {

using core::ClientId;
namespace sa = security::secagg;

constexpr int kParams = 50;

core::ModelWeights Model(const std::vector<float>& v) {
  core::ModelWeights w;
  w.tensors.push_back(core::NamedTensor::FromFloats("w", {static_cast<int64_t>(v.size())}, v));
  return w;
}

// Trains by adding a fixed, client-specific delta; reports a client-specific example count.
class FakeTrainer final : public client::Trainer {
 public:
  FakeTrainer(std::vector<float> delta, int64_t n) : delta_(std::move(delta)), n_(n) {}
  absl::StatusOr<client::TrainOutput> Train(const core::ModelWeights& global, const core::TrainConfig&) override {
    client::TrainOutput out;
    out.weights = global;
    auto w = out.weights.tensors[0].mutable_f32();
    for (size_t i = 0; i < w.size(); ++i) w[i] += delta_[i];
    out.num_examples = n_;
    return out;
  }
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights&) override {
    return absl::FailedPreconditionError("no local test data");
  }

 private:
  std::vector<float> delta_;
  int64_t n_;
};

// Fails instead of sending from `drop_before` on (a client that went away).
class DroppingChannel final : public client::CoordinatorChannel {
 public:
  DroppingChannel(client::CoordinatorChannel* inner, int drop_before) : inner_(inner), drop_before_(drop_before) {}
  absl::StatusOr<core::RegisterReply> Register(const ClientId& c, const std::map<std::string, std::string>& p) override {
    return inner_->Register(c, p);
  }
  absl::Status Heartbeat(const ClientId& c) override { return inner_->Heartbeat(c); }
  absl::StatusOr<core::PullTaskReply> PullTask(const ClientId& c, absl::Duration w) override { return inner_->PullTask(c, w); }
  absl::StatusOr<core::ModelWeights> DownloadModel(const ClientId& c, const core::TrainTask& t) override {
    return inner_->DownloadModel(c, t);
  }
  absl::StatusOr<core::UploadAck> UploadResult(const ClientId& c, const core::TrainResult& r) override {
    return inner_->UploadResult(c, r);
  }
  absl::StatusOr<sa::StageReply> SecAggStep(const ClientId& c, const core::TrainTask& t, const sa::StageRequest& r,
                                            absl::Duration w) override {
    if (static_cast<int>(r.stage()) >= drop_before_) return absl::CancelledError("gone");
    return inner_->SecAggStep(c, t, r, w);
  }

 private:
  client::CoordinatorChannel* inner_;
  int drop_before_;
};

struct SecureRun {
  int num_clients = 20;
  std::map<int, int> drop_before;  // client index -> stage it never sends (0..3)
  sa::SecAggConfig secagg;
  std::vector<std::vector<float>> deltas;
  std::vector<int64_t> weights;
  StrategyOptions strategy;  // fedavg unless set
  std::vector<RoundSummary> history;
  std::vector<float> initial, final_model;
  bool finalize_off_lock = true;

  void Run() {
    core::Rng rng(99);
    initial.resize(kParams);
    for (float& v : initial) v = static_cast<float>(rng.UniformDouble() - 0.5);
    for (int i = 0; i < num_clients; ++i) {
      std::vector<float> d(kParams);
      for (float& v : d) v = static_cast<float>(rng.UniformDouble() * 1.6 - 0.8);  // inside the clip range
      deltas.push_back(d);
      weights.push_back(1 + static_cast<int64_t>(rng.Uniform(500)));
    }
    CoordinatorOptions options;
    options.round.run_id = "secure";
    options.round.num_rounds = 1;
    options.round.round_deadline = absl::Seconds(20);
    options.round.secure_aggregation = secagg;
    options.liveness_timeout = absl::InfiniteDuration();
    options.finalize_off_lock = finalize_off_lock;
    FedAvgOptions fedavg;
    fedavg.fraction = 1.0;
    fedavg.min_available_clients = num_clients;
    auto coordinator =
        Coordinator::Create(options, MakeStrategy(strategy, fedavg, /*secure_aggregation=*/true).value(), Model(initial))
            .value();
    std::vector<std::thread> threads;
    for (int i = 0; i < num_clients; ++i) {
      ASSERT_OK(coordinator->Register(ClientId{"c" + std::to_string(i)}, {}).status());
    }
    for (int i = 0; i < num_clients; ++i) {
      threads.emplace_back([&, i] {
        const ClientId id{"c" + std::to_string(i)};
        simulations::InMemoryChannel channel(coordinator.get());
        auto drop = drop_before.find(i);
        DroppingChannel dropping(&channel, drop == drop_before.end() ? 99 : drop->second);
        FakeTrainer trainer(deltas[i], weights[i]);
        client::ClientOptions co;
        co.id = id;
        client::ClientRuntime runtime(co, &dropping, &trainer);
        auto reply = channel.PullTask(id, absl::Seconds(5));
        if (!reply.ok() || !reply->task) return;
        if (!runtime.RunTask(*reply->task).ok()) coordinator->ReportFailure(id);
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_TRUE(coordinator->WaitFinished(absl::Seconds(30)));
    history = coordinator->history();
    auto w = coordinator->global_model()->weights->tensors[0].f32();
    final_model.assign(w.begin(), w.end());
  }

  // Clients whose masked input reached the server: those that did not drop before stage 2.
  std::vector<float> ExpectedModel() const {
    std::vector<double> sum(kParams, 0);
    double total = 0;
    for (int i = 0; i < num_clients; ++i) {
      auto d = drop_before.find(i);
      if (d != drop_before.end() && d->second <= 2) continue;
      for (int j = 0; j < kParams; ++j) sum[j] += weights[i] * static_cast<double>(deltas[i][j]);
      total += weights[i];
    }
    std::vector<float> out(kParams);
    for (int j = 0; j < kParams; ++j) out[j] = static_cast<float>(initial[j] + sum[j] / total);
    return out;
  }
};

// One grid step of the default fixed point (clip 1, 16 bits), plus float rounding.
constexpr double kFixedPointError = 2.0 / 65535 + 1e-6;

void ExpectModel(const std::vector<float>& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t j = 0; j < actual.size(); ++j) EXPECT_NEAR(actual[j], expected[j], kFixedPointError) << j;
}

TEST(SecureRoundTest, NoDropoutsEqualsPlaintextFedAvg) {
  SecureRun run;
  run.Run();
  ASSERT_EQ(run.history.size(), 1u);
  EXPECT_EQ(run.history[0].outcome, RoundOutcome::kCompleted) << run.history[0].reason;
  EXPECT_EQ(run.history[0].reported, 20);
  ExpectModel(run.final_model, run.ExpectedModel());
}

// A server optimizer takes the decoded mean update as its pseudo-gradient: the new model is its
// step from the plaintext FedAvg of the same clients.
TEST(SecureRoundTest, ServerOptimizerStepsFromTheSecureMean) {
  SecureRun run;
  run.strategy.name = "fedyogi";
  run.strategy.server_lr = 0.05;
  run.Run();
  ASSERT_EQ(run.history.size(), 1u);
  EXPECT_EQ(run.history[0].outcome, RoundOutcome::kCompleted) << run.history[0].reason;
  FedAvgOptions sampling;
  auto plaintext = MakeStrategy(run.strategy, sampling, false).value();
  auto expected = plaintext->NextGlobalModel(Model(run.initial), Model(run.ExpectedModel())).value();
  auto w = expected.tensors[0].f32();
  std::vector<float> want(w.begin(), w.end());
  double from_fedavg = 0;
  for (size_t j = 0; j < want.size(); ++j) {
    EXPECT_NEAR(run.final_model[j], want[j], 1e-4) << j;
    from_fedavg = std::max(from_fedavg, std::abs(double(run.final_model[j]) - run.ExpectedModel()[j]));
  }
  EXPECT_GT(from_fedavg, 1e-2) << "the strategy's step, not the FedAvg model, was published";
}

TEST(SecureRoundTest, HundredClientsTwentyPercentDropAfterMaskedInput) {
  SecureRun run;
  run.num_clients = 100;
  for (int i = 0; i < 100; i += 5) run.drop_before[i] = 3;  // their inputs are in; they never unmask
  run.Run();
  ASSERT_EQ(run.history.size(), 1u);
  EXPECT_EQ(run.history[0].outcome, RoundOutcome::kCompleted) << run.history[0].reason;
  EXPECT_EQ(run.history[0].reported, 100);
  ExpectModel(run.final_model, run.ExpectedModel());
}

// Unmasking runs on the coordinator's finalizer thread by default; inside the event that closes
// the Unmasking stage (under the lock) when asked: the round comes out the same either way.
class DropoutsAtEveryStageTest : public ::testing::TestWithParam<bool> {};

TEST_P(DropoutsAtEveryStageTest, RoundCompletesWithTheSurvivorsSum) {
  SecureRun run;
  run.num_clients = 40;
  run.finalize_off_lock = GetParam();
  run.drop_before = {{1, 0}, {7, 0}, {12, 1}, {20, 1}, {25, 2}, {33, 2}, {38, 3}};
  run.Run();
  ASSERT_EQ(run.history.size(), 1u);
  EXPECT_EQ(run.history[0].outcome, RoundOutcome::kCompleted) << run.history[0].reason;
  EXPECT_EQ(run.history[0].reported, 40 - 6);  // everyone but those who dropped before their input
  ExpectModel(run.final_model, run.ExpectedModel());
}

INSTANTIATE_TEST_SUITE_P(Finalize, DropoutsAtEveryStageTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("OffTheLock") : std::string("InsideTheEvent");
                         });

TEST(SecureRoundTest, TooManyDropoutsAbortAndKeepTheModel) {
  SecureRun run;
  run.num_clients = 10;  // complete graph, t = 5 by default
  for (int i = 0; i < 6; ++i) run.drop_before[i] = 2;  // 4 inputs left
  run.Run();
  ASSERT_EQ(run.history.size(), 1u);
  EXPECT_EQ(run.history[0].outcome, RoundOutcome::kAbandoned);
  EXPECT_EQ(run.history[0].model_version, 0u);
  EXPECT_EQ(run.final_model, run.initial);  // nothing partial released
}

TEST(SecureRoundTest, PlaintextResultsAreRefusedInASecureRound) {
  CoordinatorOptions options;
  sa::SecAggConfig no_dropout;
  no_dropout.expected_dropout = 0;  // 3 clients: t = 2 of k = 2 leaves no room for dropouts
  options.round.secure_aggregation = no_dropout;
  FedAvgOptions fedavg;
  fedavg.fraction = 1.0;
  fedavg.min_available_clients = 3;
  auto coordinator = Coordinator::Create(options, FedAvgStrategy::Create(fedavg).value(), Model({0, 0})).value();
  for (const char* id : {"a", "b", "c"}) ASSERT_OK(coordinator->Register(ClientId{id}, {}).status());
  simulations::InMemoryChannel channel(coordinator.get());
  auto reply = channel.PullTask(ClientId{"a"}, absl::ZeroDuration());
  ASSERT_OK(reply.status());
  ASSERT_TRUE(reply->task && reply->task->secure_aggregation);
  core::TrainResult r;
  r.ref = reply->task->ref;
  r.num_examples = 1;
  r.weights = Model({1, 1});
  EXPECT_CODE(coordinator->SubmitResult(ClientId{"a"}, r), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace tessera::coordinator
