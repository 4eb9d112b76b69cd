#include "coordinator/round_state_machine.h"

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "coordinator/client_registry.h"
#include "coordinator/model_store.h"
#include "coordinator/strategy.h"
#include "core/clock.h"
#include "core/proto_convert.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "core/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"
#include "tests/testing/temp_dir.h"

namespace tessera::coordinator {
namespace {

using core::ClientId;
using core::ModelWeights;
using core::TrainTask;
using testutil::FloatModel;
using testutil::ResultFor;
using testutil::Values;
using ::testing::ElementsAre;
using ::testing::Pointwise;
using ::testing::FloatNear;
using ::testing::UnorderedElementsAre;

constexpr float kTol = 1e-6f;

struct MachineSetup {
  RoundConfig config;
  FedAvgOptions fedavg;
  std::string dir;  // "" = model store in memory
  bool with_evaluator = false;
  absl::Duration liveness = absl::Hours(1);
  ModelWeights initial = FloatModel({1, 2, 3, 4});

  MachineSetup() {
    config.run_id = "run-1";
    config.num_rounds = 1;
    config.round_deadline = absl::Minutes(10);
    config.min_results = 1;
    config.seed = 1234;
    fedavg.fraction = 1.0;
    fedavg.min_fit_clients = 1;
    fedavg.min_available_clients = 1;
    fedavg.train = {2, 32, 0.01, 99};
  }
};

// Everything a RoundStateMachine needs, wired to fakes.
struct Harness {
  explicit Harness(MachineSetup s = MachineSetup()) : setup(std::move(s)), registry(setup.liveness) {
    strategy = FedAvgStrategy::Create(setup.fedavg).value();
    store = ModelStore::Create(setup.dir, setup.initial, setup.config.run_id).value();
    RoundDeps deps;
    deps.strategy = strategy.get();
    deps.store = store.get();
    deps.registry = &registry;
    deps.sender = &sender;
    deps.clock = &clock;
    deps.evaluator = setup.with_evaluator ? &evaluator : nullptr;
    deps.observer = &observer;
    machine = RoundStateMachine::Create(setup.config, deps).value();
  }

  void Register(const std::vector<std::string>& ids) {
    for (const auto& id : ids) registry.Register(ClientId{id}, {}, clock.Now());
  }
  // The latest task sent to `id`; fails the test when there is none.
  TrainTask Task(const std::string& id) const {
    auto t = sender.LastTaskFor(ClientId{id});
    EXPECT_TRUE(t.has_value()) << "no task was sent to " << id;
    return t.value_or(TrainTask{});
  }
  absl::StatusOr<core::UploadAck> Submit(const std::string& id, std::vector<float> values, int64_t num_examples,
                                         core::Metrics metrics = {}) {
    return machine->OnTrainResult(ClientId{id}, ResultFor(Task(id), FloatModel(std::move(values)), num_examples,
                                                          std::move(metrics)));
  }
  std::vector<float> GlobalValues() const { return Values(*store->Current()->weights); }
  std::set<std::string> SampledInRound(core::RoundNumber r) const {
    std::set<std::string> out;
    for (const auto& [id, task] : sender.TasksOfRound(r)) out.insert(id.value);
    return out;
  }

  MachineSetup setup;
  core::FakeClock clock;
  ClientRegistry registry;
  testutil::RecordingSender sender;
  testutil::FakeEvaluator evaluator;
  testutil::RecordingObserver observer;
  std::unique_ptr<FedAvgStrategy> strategy;
  std::unique_ptr<ModelStore> store;
  std::unique_ptr<RoundStateMachine> machine;
};

MachineSetup WithMinAvailable(int n) {
  MachineSetup s;
  s.fedavg.min_available_clients = n;
  return s;
}

// ---- Construction ----

TEST(RoundStateMachineTest, CreateRefusesMissingDependenciesAndNonsensicalConfig) {
  Harness h;
  RoundDeps deps;
  deps.strategy = h.strategy.get();
  deps.store = h.store.get();
  deps.registry = &h.registry;
  deps.sender = &h.sender;
  deps.clock = &h.clock;
  EXPECT_OK(RoundStateMachine::Create(RoundConfig{}, deps));
  for (int missing = 0; missing < 5; ++missing) {
    RoundDeps d = deps;
    if (missing == 0) d.strategy = nullptr;
    if (missing == 1) d.store = nullptr;
    if (missing == 2) d.registry = nullptr;
    if (missing == 3) d.sender = nullptr;
    if (missing == 4) d.clock = nullptr;
    SCOPED_TRACE(missing);
    EXPECT_CODE(RoundStateMachine::Create(RoundConfig{}, d), absl::StatusCode::kInvalidArgument);
  }
  RoundConfig c;
  c.num_rounds = 0;
  EXPECT_CODE(RoundStateMachine::Create(c, deps), absl::StatusCode::kInvalidArgument);
  c = RoundConfig{};
  c.min_results = 0;
  EXPECT_CODE(RoundStateMachine::Create(c, deps), absl::StatusCode::kInvalidArgument);
  c = RoundConfig{};
  c.round_deadline = absl::ZeroDuration();
  EXPECT_CODE(RoundStateMachine::Create(c, deps), absl::StatusCode::kInvalidArgument);
  c = RoundConfig{};
  c.max_num_examples = 0;
  EXPECT_CODE(RoundStateMachine::Create(c, deps), absl::StatusCode::kInvalidArgument);
}

// ---- (1) Opening a round ----

TEST(RoundStateMachineTest, OpensRoundWhenEnoughClientsAreAvailable) {
  Harness h(WithMinAvailable(3));
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.machine->OnTick());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kWaitingForClients);
  EXPECT_EQ(h.machine->current_round(), 0u);
  EXPECT_TRUE(h.sender.sent.empty());

  h.clock.Advance(absl::Seconds(3));
  h.Register({"carol"});
  const absl::Time opened = h.clock.Now();
  ASSERT_OK(h.machine->MaybeStartRound());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining);
  EXPECT_EQ(h.machine->current_round(), 1u);
  ASSERT_EQ(h.sender.sent.size(), 3u);
  EXPECT_EQ(h.SampledInRound(1), (std::set<std::string>{"alice", "bob", "carol"}));

  auto global = h.store->Current();
  std::set<std::string> task_ids;
  for (const auto& [client, task] : h.sender.sent) {
    SCOPED_TRACE(client.value);
    EXPECT_EQ(task.ref.run_id, "run-1");
    EXPECT_EQ(task.ref.round, 1u);
    EXPECT_FALSE(task.ref.task_id.empty());
    task_ids.insert(task.ref.task_id);
    EXPECT_EQ(task.model_version, 0u);
    EXPECT_EQ(task.model_bytes, global->serialized.size());
    EXPECT_EQ(task.model_sha256, core::Sha256Digest(global->serialized));
    EXPECT_EQ(task.deadline, opened + absl::Minutes(10));
    EXPECT_EQ(task.config.local_epochs, 2);
    EXPECT_EQ(task.config.batch_size, 32);
    EXPECT_EQ(task.config.learning_rate, 0.01);
    EXPECT_EQ(task.config.seed, 99u);
    const TrainTask* held = h.machine->TaskFor(client);
    ASSERT_NE(held, nullptr);
    EXPECT_EQ(held->ref, task.ref);
  }
  EXPECT_EQ(task_ids.size(), 3u) << "task ids must be distinct";
  EXPECT_EQ(h.machine->TaskFor(ClientId{"mallory"}), nullptr);

  // An open round is not opened again.
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.machine->OnTick());
  EXPECT_EQ(h.sender.sent.size(), 3u);
  EXPECT_EQ(h.machine->current_round(), 1u);
}

TEST(RoundStateMachineTest, SilentClientsDoNotCountAsAvailable) {
  MachineSetup s = WithMinAvailable(2);
  s.liveness = absl::Seconds(30);
  Harness h(s);
  h.Register({"alice"});
  h.clock.Advance(absl::Seconds(31));
  h.Register({"bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kWaitingForClients);
  ASSERT_OK(h.registry.Touch(ClientId{"alice"}, h.clock.Now()));
  ASSERT_OK(h.machine->MaybeStartRound());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining);
}

// ---- (2) Weighted averaging ----

TEST(RoundStateMachineTest, AveragesWeightedByNumExamplesAndClosesWhenAllAnswered) {
  Harness h(WithMinAvailable(3));
  h.Register({"alice", "bob", "carol"});
  ASSERT_OK(h.machine->MaybeStartRound());

  ASSERT_OK_AND_ASSIGN(core::UploadAck ack, h.Submit("alice", {1, 0, 0, 2}, 1));
  EXPECT_FALSE(ack.duplicate);
  EXPECT_EQ(ack.accepted_round, 1u);
  ASSERT_OK(h.Submit("bob", {0, 3, 0, -1}, 2));
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining);
  EXPECT_EQ(h.machine->global_model_version(), 0u);
  ASSERT_OK(h.Submit("carol", {2, 0, 6, 0.5f}, 5));

  // (1*[1,0,0,2] + 2*[0,3,0,-1] + 5*[2,0,6,0.5]) / 8 = [11,6,30,2.5] / 8
  EXPECT_EQ(h.machine->global_model_version(), 1u);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{1.375f, 0.75f, 3.75f, 0.3125f}));
  EXPECT_EQ(h.machine->phase(), RoundPhase::kFinished);  // num_rounds = 1
  EXPECT_EQ(h.machine->TaskFor(ClientId{"alice"}), nullptr);
  EXPECT_THAT(h.sender.ended, ElementsAre(1u));

  ASSERT_EQ(h.machine->history().size(), 1u);
  const RoundSummary& s = h.machine->history()[0];
  EXPECT_EQ(s.round, 1u);
  EXPECT_EQ(s.outcome, RoundOutcome::kCompleted);
  EXPECT_EQ(s.sampled, 3);
  EXPECT_EQ(s.reported, 3);
  EXPECT_EQ(s.rejected, 0);
  EXPECT_EQ(s.dropped, 0);
  EXPECT_EQ(s.model_version, 1u);
  ASSERT_EQ(h.observer.summaries.size(), 1u);
  EXPECT_EQ(h.observer.summaries[0].model_version, 1u);
  // The published blob is consistent: its bytes parse to its weights and hash to its digest.
  auto blob = h.store->Current();
  EXPECT_EQ(blob->round, 1u);
  EXPECT_EQ(blob->sha256, core::Sha256Digest(blob->serialized));
  ASSERT_OK_AND_ASSIGN(ModelWeights parsed, core::ParseModel(blob->serialized));
  EXPECT_EQ(Values(parsed), h.GlobalValues());
}

TEST(RoundStateMachineTest, ClientMetricsAreWeightedByNumExamples) {
  Harness h(WithMinAvailable(2));
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.Submit("alice", {0, 0, 0, 0}, 10, {{"loss", 1.0}, {"accuracy", 0.5}}));
  ASSERT_OK(h.Submit("bob", {0, 0, 0, 0}, 30, {{"loss", 3.0}, {"accuracy", 0.9}}));
  ASSERT_EQ(h.machine->history().size(), 1u);
  const core::Metrics& m = h.machine->history()[0].client_metrics;
  EXPECT_NEAR(m.at("loss"), (10 * 1.0 + 30 * 3.0) / 40, 1e-12);
  EXPECT_NEAR(m.at("accuracy"), (10 * 0.5 + 30 * 0.9) / 40, 1e-12);
}

// A metric only some clients report is their weighted mean, not diluted by the examples of
// clients that did not report it (or reported NaN).
// Regression: one weight for all metrics once divided every metric's sum, so "loss" below came
// out as 10/100 = 0.1 instead of 1.0.
TEST(RoundStateMachineTest, MetricReportedBySomeClientsIsAveragedOverThoseClients) {
  Harness h(WithMinAvailable(3));
  h.Register({"alice", "bob", "carol"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.Submit("alice", {0, 0, 0, 0}, 10, {{"loss", 1.0}, {"accuracy", 0.5}}));
  ASSERT_OK(h.Submit("bob", {0, 0, 0, 0}, 30, {{"accuracy", 0.9}}));
  ASSERT_OK(h.Submit("carol", {0, 0, 0, 0}, 60,
                     {{"loss", std::numeric_limits<double>::quiet_NaN()}, {"accuracy", 0.1}}));
  ASSERT_EQ(h.machine->history().size(), 1u);
  const core::Metrics& m = h.machine->history()[0].client_metrics;
  EXPECT_NEAR(m.at("accuracy"), (10 * 0.5 + 30 * 0.9 + 60 * 0.1) / 100, 1e-12);
  EXPECT_NEAR(m.at("loss"), 1.0, 1e-12);
}

TEST(RoundStateMachineTest, ServerEvaluationOfTheNewModelIsRecorded) {
  MachineSetup s = WithMinAvailable(2);
  s.with_evaluator = true;
  Harness h(s);
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.Submit("alice", {2, 2, 2, 2}, 1));
  EXPECT_EQ(h.evaluator.calls, 0);
  ASSERT_OK(h.Submit("bob", {4, 4, 4, 4}, 1));
  EXPECT_EQ(h.evaluator.calls, 1);
  EXPECT_THAT(Values(h.evaluator.last_weights), Pointwise(FloatNear(kTol), std::vector<float>{3, 3, 3, 3}));
  ASSERT_EQ(h.machine->history().size(), 1u);
  EXPECT_EQ(h.machine->history()[0].server_metrics, (core::Metrics{{"accuracy", 0.75}}));
}

TEST(RoundStateMachineTest, FailedServerEvaluationDoesNotBlockPublishing) {
  MachineSetup s = WithMinAvailable(1);
  s.with_evaluator = true;
  Harness h(s);
  h.evaluator.error = absl::InternalError("eval data missing");
  h.Register({"alice"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.Submit("alice", {5, 6, 7, 8}, 3));
  EXPECT_EQ(h.machine->global_model_version(), 1u);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{5, 6, 7, 8}));
  ASSERT_EQ(h.machine->history().size(), 1u);
  EXPECT_EQ(h.machine->history()[0].outcome, RoundOutcome::kCompleted);
  EXPECT_TRUE(h.machine->history()[0].server_metrics.empty());
}

// ---- (3) and (4) Deadlines ----

TEST(RoundStateMachineTest, AbandonsRoundWithoutQuorumAtDeadline) {
  MachineSetup s = WithMinAvailable(3);
  s.config.min_results = 3;
  s.config.num_rounds = 2;
  Harness h(s);
  const std::string initial_bytes = h.store->Current()->serialized;
  h.Register({"alice", "bob", "carol"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.Submit("alice", {100, 100, 100, 100}, 50));
  ASSERT_OK(h.Submit("bob", {100, 100, 100, 100}, 50));

  h.clock.Advance(absl::Minutes(10) - absl::Milliseconds(1));
  ASSERT_OK(h.machine->OnTick());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining) << "closed before its deadline";
  EXPECT_TRUE(h.machine->history().empty());

  h.clock.Advance(absl::Milliseconds(1));  // exactly at the deadline
  ASSERT_OK(h.machine->OnTick());
  ASSERT_EQ(h.machine->history().size(), 1u);
  const RoundSummary& r1 = h.machine->history()[0];
  EXPECT_EQ(r1.outcome, RoundOutcome::kAbandoned);
  EXPECT_FALSE(r1.reason.empty());
  EXPECT_EQ(r1.reported, 2);
  EXPECT_EQ(r1.dropped, 1);  // carol never answered
  EXPECT_EQ(r1.model_version, 0u);
  EXPECT_EQ(h.machine->global_model_version(), 0u);  // the model is unchanged
  EXPECT_EQ(h.store->Current()->serialized, initial_bytes);
  EXPECT_EQ(h.GlobalValues(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_THAT(h.sender.ended, ElementsAre(1u));

  // The next round opens at once, on the unchanged model.
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining);
  EXPECT_EQ(h.machine->current_round(), 2u);
  for (const auto& [client, task] : h.sender.TasksOfRound(2)) EXPECT_EQ(task.model_version, 0u);
  EXPECT_EQ(h.sender.TasksOfRound(2).size(), 3u);
}

TEST(RoundStateMachineTest, ClosesWithThePartialSetAtDeadlineWhenQuorumIsMet) {
  MachineSetup s = WithMinAvailable(4);
  s.config.min_results = 2;
  Harness h(s);
  h.Register({"alice", "bob", "carol", "dave"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.Submit("alice", {2, 2, 2, 2}, 1));
  ASSERT_OK(h.Submit("bob", {4, 4, 4, 0}, 3));
  ASSERT_OK(h.machine->OnTick());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining) << "quorum alone must not close the round early";

  h.clock.Advance(absl::Minutes(11));
  ASSERT_OK(h.machine->OnTick());
  ASSERT_EQ(h.machine->history().size(), 1u);
  const RoundSummary& r = h.machine->history()[0];
  EXPECT_EQ(r.outcome, RoundOutcome::kCompleted);
  EXPECT_EQ(r.sampled, 4);
  EXPECT_EQ(r.reported, 2);
  // Regression: the clients silent at the deadline were counted nowhere (sampled 4 = reported 2).
  EXPECT_EQ(r.dropped, 2);
  EXPECT_EQ(h.machine->global_model_version(), 1u);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{3.5f, 3.5f, 3.5f, 0.5f}));
  // A straggler after the close is turned away.
  EXPECT_CODE(h.Submit("carol", {9, 9, 9, 9}, 1), absl::StatusCode::kFailedPrecondition);
}

// ---- (5) Results that belong elsewhere ----

TEST(RoundStateMachineTest, LateResultOfAPreviousRoundIsFailedPreconditionAndIgnored) {
  MachineSetup s = WithMinAvailable(3);
  s.config.num_rounds = 2;
  s.config.min_results = 2;
  Harness h(s);
  h.Register({"alice", "bob", "carol"});
  ASSERT_OK(h.machine->MaybeStartRound());
  const TrainTask carol_round1 = h.Task("carol");
  const TrainTask alice_round1 = h.Task("alice");
  ASSERT_OK(h.Submit("alice", {1, 1, 1, 1}, 1));
  ASSERT_OK(h.Submit("bob", {3, 3, 3, 3}, 1));
  h.clock.Advance(absl::Minutes(10));
  ASSERT_OK(h.machine->OnTick());
  ASSERT_EQ(h.machine->history().size(), 1u);
  ASSERT_EQ(h.machine->current_round(), 2u);
  ASSERT_EQ(h.machine->phase(), RoundPhase::kTraining);
  EXPECT_EQ(h.machine->global_model_version(), 1u);

  // carol's round-1 result arrives while round 2 is open.
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{"carol"}, ResultFor(carol_round1, FloatModel({1e6, 1e6, 1e6, 1e6}), 1000)),
              absl::StatusCode::kFailedPrecondition);
  // A retry of alice's accepted round-1 result gets its first acknowledgement (her reply may
  // have been lost when the round closed) and changes nothing.
  ASSERT_OK_AND_ASSIGN(core::UploadAck retry,
                       h.machine->OnTrainResult(ClientId{"alice"}, ResultFor(alice_round1, FloatModel({1, 1, 1, 1}), 1)));
  EXPECT_TRUE(retry.duplicate);
  EXPECT_EQ(retry.accepted_round, 1u);

  ASSERT_OK(h.Submit("alice", {2, 0, 0, 0}, 1));
  ASSERT_OK(h.Submit("bob", {0, 4, 0, 0}, 1));
  ASSERT_OK(h.Submit("carol", {0, 0, 6, 0}, 2));
  ASSERT_EQ(h.machine->history().size(), 2u);
  EXPECT_EQ(h.machine->history()[1].reported, 3);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{0.5f, 1.0f, 3.0f, 0.0f}));
}

TEST(RoundStateMachineTest, RetryOfTheUploadThatClosedTheRoundIsAcknowledged) {
  MachineSetup s = WithMinAvailable(2);
  s.config.num_rounds = 2;
  Harness h(s);
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  const TrainTask bob_round1 = h.Task("bob");
  ASSERT_OK(h.Submit("alice", {2, 2, 2, 2}, 1));
  ASSERT_OK_AND_ASSIGN(core::UploadAck closing, h.Submit("bob", {4, 4, 4, 4}, 1));
  EXPECT_FALSE(closing.duplicate);
  ASSERT_EQ(h.machine->current_round(), 2u);
  ASSERT_OK_AND_ASSIGN(core::UploadAck retry,
                       h.machine->OnTrainResult(ClientId{"bob"}, ResultFor(bob_round1, FloatModel({4, 4, 4, 4}), 1)));
  EXPECT_TRUE(retry.duplicate);
  EXPECT_EQ(retry.accepted_round, 1u);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{3, 3, 3, 3}));
  // Round 2 did not count the retry.
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining);
}

TEST(RoundStateMachineTest, WrongRoundNumberIsFailedPrecondition) {
  Harness h(WithMinAvailable(2));
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  for (core::RoundNumber wrong : {0ull, 2ull, 100ull}) {
    core::TrainResult r = ResultFor(h.Task("alice"), FloatModel({50, 50, 50, 50}), 100);
    r.ref.round = wrong;
    SCOPED_TRACE(wrong);
    EXPECT_CODE(h.machine->OnTrainResult(ClientId{"alice"}, r), absl::StatusCode::kFailedPrecondition);
  }
  // Nothing was counted: alice can still answer, and only the real answers are averaged.
  ASSERT_OK(h.Submit("alice", {1, 1, 1, 1}, 1));
  ASSERT_OK(h.Submit("bob", {3, 3, 3, 3}, 1));
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{2, 2, 2, 2}));
  EXPECT_EQ(h.machine->history()[0].rejected, 0);
}

TEST(RoundStateMachineTest, WrongRunIdIsFailedPrecondition) {
  Harness h(WithMinAvailable(2));
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  core::TrainResult r = ResultFor(h.Task("alice"), FloatModel({50, 50, 50, 50}), 100);
  r.ref.run_id = "another-run";
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{"alice"}, r), absl::StatusCode::kFailedPrecondition);
  r.ref.run_id = "";
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{"alice"}, r), absl::StatusCode::kFailedPrecondition);
  ASSERT_OK(h.Submit("alice", {1, 1, 1, 1}, 1));
  ASSERT_OK(h.Submit("bob", {3, 3, 3, 3}, 1));
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{2, 2, 2, 2}));
}

TEST(RoundStateMachineTest, UnknownTaskOrUnsampledClientIsNotFound) {
  MachineSetup s = WithMinAvailable(4);
  s.fedavg.fraction = 0.5;
  Harness h(s);
  h.Register({"alice", "bob", "carol", "dave"});
  ASSERT_OK(h.machine->MaybeStartRound());
  const std::set<std::string> sampled = h.SampledInRound(1);
  ASSERT_EQ(sampled.size(), 2u);
  std::string in, in2, out;
  for (const char* id : {"alice", "bob", "carol", "dave"}) {
    if (!sampled.contains(id)) {
      out = id;
    } else if (in.empty()) {
      in = id;
    } else {
      in2 = id;
    }
  }
  EXPECT_EQ(h.machine->TaskFor(ClientId{out}), nullptr);

  // An unsampled client replaying a sampled client's task.
  const TrainTask stolen = h.Task(in);
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{out}, ResultFor(stolen, FloatModel({9, 9, 9, 9}), 100)),
              absl::StatusCode::kNotFound);
  // A client that never registered.
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{"mallory"}, ResultFor(stolen, FloatModel({9, 9, 9, 9}), 100)),
              absl::StatusCode::kNotFound);
  // A sampled client with a task id it does not hold (another client's, or made up).
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{in2}, ResultFor(stolen, FloatModel({9, 9, 9, 9}), 100)),
              absl::StatusCode::kNotFound);
  core::TrainResult bogus = ResultFor(stolen, FloatModel({9, 9, 9, 9}), 100);
  bogus.ref.task_id = "bogus";
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{in}, bogus), absl::StatusCode::kNotFound);

  ASSERT_OK(h.Submit(in, {1, 2, 3, 4}, 1));
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining);
  ASSERT_OK(h.Submit(in2, {3, 2, 1, 0}, 1));
  EXPECT_EQ(h.machine->global_model_version(), 1u);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{2, 2, 2, 2}));
  EXPECT_EQ(h.machine->history()[0].reported, 2);
}

// ---- (6) Idempotent uploads ----

TEST(RoundStateMachineTest, DuplicateSubmissionIsAcknowledgedAndCountedOnce) {
  Harness h(WithMinAvailable(3));
  h.Register({"alice", "bob", "carol"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK_AND_ASSIGN(core::UploadAck first, h.Submit("alice", {4, 4, 4, 4}, 1));
  EXPECT_FALSE(first.duplicate);
  // A retry (here even with other content) acknowledges the first submission.
  ASSERT_OK_AND_ASSIGN(core::UploadAck again, h.Submit("alice", {100, 100, 100, 100}, 50));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.accepted_round, 1u);
  ASSERT_OK_AND_ASSIGN(core::UploadAck third, h.Submit("alice", {4, 4, 4, 4}, 1));
  EXPECT_TRUE(third.duplicate);
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining);

  ASSERT_OK(h.Submit("bob", {8, 8, 8, 8}, 1));
  ASSERT_OK(h.Submit("carol", {0, 0, 0, 0}, 2));
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{3, 3, 3, 3}));
  EXPECT_EQ(h.machine->history()[0].reported, 3);
}

// ---- (7) Invalid results ----

TEST(RoundStateMachineTest, InvalidResultsAreRejectedCountedAndLeftOut) {
  MachineSetup s = WithMinAvailable(10);
  s.config.max_num_examples = 1000;
  Harness h(s);
  const std::vector<std::string> ids = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"};
  h.Register(ids);
  ASSERT_OK(h.machine->MaybeStartRound());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();

  // The valid ones first, so that an invalid one is the last answer and closes the round.
  ASSERT_OK(h.Submit("c0", {2, 4, 6, 8}, 1000));  // exactly the cap is fine
  ASSERT_OK(h.Submit("c1", {4, 8, 12, 16}, 1000));

  EXPECT_CODE(h.Submit("c2", {1, nan, 1, 1}, 10), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(h.Submit("c3", {1, 1, 1, -inf}, 10), absl::StatusCode::kInvalidArgument);
  // Wrong layout: shape, name, dtype, an extra tensor.
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{"c4"}, ResultFor(h.Task("c4"), FloatModel({1, 1, 1, 1, 1}), 10)),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{"c5"}, ResultFor(h.Task("c5"), FloatModel({1, 1, 1, 1}, "v"), 10)),
              absl::StatusCode::kInvalidArgument);
  {
    ModelWeights f64;
    f64.tensors.emplace_back("w", std::vector<int64_t>{4}, core::DType::kFloat64);
    EXPECT_CODE(h.machine->OnTrainResult(ClientId{"c6"}, ResultFor(h.Task("c6"), f64, 10)),
                absl::StatusCode::kInvalidArgument);
  }
  {
    ModelWeights extra = FloatModel({1, 1, 1, 1});
    extra.tensors.emplace_back("extra", std::vector<int64_t>{1});
    EXPECT_CODE(h.machine->OnTrainResult(ClientId{"c7"}, ResultFor(h.Task("c7"), extra, 10)),
                absl::StatusCode::kInvalidArgument);
  }
  EXPECT_CODE(h.Submit("c8", {1, 1, 1, 1}, 0), absl::StatusCode::kInvalidArgument);
  // A rejected client cannot slip a second result in.
  EXPECT_FALSE(h.Submit("c8", {1, 1, 1, 1}, 5).ok());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining);
  EXPECT_CODE(h.Submit("c9", {1, 1, 1, 1}, 1001), absl::StatusCode::kInvalidArgument);

  // c9 was the last to answer: the round closed with the two valid results.
  ASSERT_EQ(h.machine->history().size(), 1u);
  const RoundSummary& r = h.machine->history()[0];
  EXPECT_EQ(r.outcome, RoundOutcome::kCompleted);
  EXPECT_EQ(r.reported, 2);
  EXPECT_EQ(r.rejected, 8);
  EXPECT_EQ(r.sampled, 10);
  EXPECT_EQ(h.machine->global_model_version(), 1u);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{3, 6, 9, 12}));
}

TEST(RoundStateMachineTest, NegativeNumExamplesIsInvalidArgument) {
  Harness h(WithMinAvailable(2));
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  EXPECT_CODE(h.Submit("alice", {1, 1, 1, 1}, -3), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(h.Submit("bob", {1, 1, 1, 1}, std::numeric_limits<int64_t>::min()), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(h.machine->history().size(), 1u);
  EXPECT_EQ(h.machine->history()[0].outcome, RoundOutcome::kAbandoned);
}

TEST(RoundStateMachineTest, AllResultsInvalidAbandonsTheRoundAndKeepsTheModel) {
  Harness h(WithMinAvailable(3));
  const std::string initial_bytes = h.store->Current()->serialized;
  h.Register({"alice", "bob", "carol"});
  ASSERT_OK(h.machine->MaybeStartRound());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_CODE(h.Submit("alice", {nan, nan, nan, nan}, 10), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(h.Submit("bob", {1, std::numeric_limits<float>::infinity(), 1, 1}, 10),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(h.Submit("carol", {1, 1, 1, 1}, 0), absl::StatusCode::kInvalidArgument);

  // Closed as soon as everybody answered, not at the deadline.
  ASSERT_EQ(h.machine->history().size(), 1u);
  const RoundSummary& r = h.machine->history()[0];
  EXPECT_EQ(r.outcome, RoundOutcome::kAbandoned);
  EXPECT_EQ(r.reported, 0);
  EXPECT_EQ(r.rejected, 3);
  EXPECT_EQ(h.machine->global_model_version(), 0u);
  EXPECT_EQ(h.store->Current()->serialized, initial_bytes);
  EXPECT_OK(h.store->Current()->weights->CheckFinite());
  EXPECT_EQ(h.GlobalValues(), (std::vector<float>{1, 2, 3, 4}));
}

// ---- (8) Dropped clients ----

TEST(RoundStateMachineTest, DroppedClientLetsTheRoundCloseWhenEveryoneElseAnswered) {
  Harness h(WithMinAvailable(4));
  h.Register({"alice", "bob", "carol", "dave"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.Submit("alice", {1, 1, 1, 1}, 1));
  ASSERT_OK(h.machine->OnClientDropped(ClientId{"alice"}));  // already answered: not a drop
  ASSERT_OK(h.machine->OnClientDropped(ClientId{"mallory"}));  // not sampled: ignored
  ASSERT_OK(h.machine->OnClientDropped(ClientId{"dave"}));
  ASSERT_OK(h.machine->OnClientDropped(ClientId{"dave"}));  // twice is once
  // A dropped client's result no longer counts.
  EXPECT_FALSE(h.Submit("dave", {100, 100, 100, 100}, 100).ok());
  ASSERT_OK(h.Submit("bob", {3, 3, 3, 3}, 1));
  EXPECT_EQ(h.machine->phase(), RoundPhase::kTraining);

  ASSERT_OK(h.machine->OnClientDropped(ClientId{"carol"}));
  ASSERT_EQ(h.machine->history().size(), 1u);
  const RoundSummary& r = h.machine->history()[0];
  EXPECT_EQ(r.outcome, RoundOutcome::kCompleted);
  EXPECT_EQ(r.reported, 2);
  EXPECT_EQ(r.dropped, 2);
  EXPECT_EQ(r.rejected, 0);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{2, 2, 2, 2}));
}

TEST(RoundStateMachineTest, EverySampledClientDroppingAbandonsTheRound) {
  Harness h(WithMinAvailable(2));
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.machine->OnClientDropped(ClientId{"alice"}));
  ASSERT_OK(h.machine->OnClientDropped(ClientId{"bob"}));
  ASSERT_EQ(h.machine->history().size(), 1u);
  EXPECT_EQ(h.machine->history()[0].outcome, RoundOutcome::kAbandoned);
  EXPECT_EQ(h.machine->history()[0].dropped, 2);
  EXPECT_EQ(h.machine->global_model_version(), 0u);
}

TEST(RoundStateMachineTest, DropWithNoRoundOpenIsHarmless) {
  Harness h(WithMinAvailable(2));
  h.Register({"alice"});
  EXPECT_OK(h.machine->OnClientDropped(ClientId{"alice"}));
  EXPECT_EQ(h.machine->phase(), RoundPhase::kWaitingForClients);
  EXPECT_TRUE(h.machine->history().empty());
}

// ---- (9) Sampling ----

std::vector<std::string> Clients(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back(core::StrCat("client-", i < 10 ? "0" : "", i));
  return ids;
}

std::vector<std::string> SampleOfFirstRound(uint64_t seed, double fraction, int n) {
  MachineSetup s;
  s.config.seed = seed;
  s.fedavg.fraction = fraction;
  s.fedavg.min_available_clients = n;
  Harness h(s);
  h.Register(Clients(n));
  EXPECT_OK(h.machine->MaybeStartRound());
  std::vector<std::string> out;
  for (const auto& [id, task] : h.sender.TasksOfRound(1)) out.push_back(id.value);
  return out;
}

TEST(RoundStateMachineTest, SamplingIsDeterministicForASeedAndDrawsCeilFractionClients) {
  const std::vector<std::string> a = SampleOfFirstRound(7, 0.25, 10);
  const std::vector<std::string> b = SampleOfFirstRound(7, 0.25, 10);
  ASSERT_EQ(a.size(), 3u);  // ceil(0.25 * 10)
  EXPECT_EQ(a, b);          // same clients, same order
  EXPECT_EQ(std::set<std::string>(a.begin(), a.end()).size(), 3u);
  const auto all = Clients(10);
  for (const auto& id : a) EXPECT_NE(std::find(all.begin(), all.end(), id), all.end()) << id;

  std::set<std::vector<std::string>> distinct;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    std::vector<std::string> s = SampleOfFirstRound(seed, 0.25, 10);
    std::sort(s.begin(), s.end());
    distinct.insert(s);
  }
  EXPECT_GE(distinct.size(), 2u) << "the seed does not influence sampling";

  EXPECT_EQ(SampleOfFirstRound(3, 0.1, 25).size(), 3u);   // ceil(2.5)
  EXPECT_EQ(SampleOfFirstRound(3, 0.2, 25).size(), 5u);   // exactly 5, no rounding up
  EXPECT_EQ(SampleOfFirstRound(3, 1.0, 7).size(), 7u);
}

TEST(RoundStateMachineTest, EachRoundDrawsAFreshSample) {
  MachineSetup s;
  s.config.num_rounds = 6;
  s.fedavg.fraction = 0.3;
  s.fedavg.min_available_clients = 10;
  Harness h(s);
  h.Register(Clients(10));
  ASSERT_OK(h.machine->MaybeStartRound());
  std::set<std::set<std::string>> samples;
  for (core::RoundNumber r = 1; r <= 6; ++r) {
    ASSERT_EQ(h.machine->current_round(), r);
    const std::set<std::string> sampled = h.SampledInRound(r);
    ASSERT_EQ(sampled.size(), 3u);
    samples.insert(sampled);
    for (const auto& id : sampled) ASSERT_OK(h.Submit(id, {1, 1, 1, 1}, 1));
  }
  EXPECT_EQ(h.machine->phase(), RoundPhase::kFinished);
  EXPECT_GE(samples.size(), 2u) << "every round sampled the same clients";
}

// ---- (10) Many rounds ----

TEST(RoundStateMachineTest, RunsEveryRoundThenFinishes) {
  MachineSetup s = WithMinAvailable(2);
  s.config.num_rounds = 3;
  Harness h(s);
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  for (core::RoundNumber r = 1; r <= 3; ++r) {
    SCOPED_TRACE(r);
    ASSERT_EQ(h.machine->current_round(), r);
    ASSERT_EQ(h.machine->phase(), RoundPhase::kTraining);
    const auto tasks = h.sender.TasksOfRound(r);
    ASSERT_EQ(tasks.size(), 2u);
    auto global = h.store->Current();
    for (const auto& [id, task] : tasks) {
      EXPECT_EQ(task.model_version, r - 1);
      EXPECT_EQ(task.model_sha256, global->sha256);
    }
    const float v = static_cast<float>(r);
    ASSERT_OK(h.Submit("alice", {v, v, v, v}, 1));
    ASSERT_OK(h.Submit("bob", {3 * v, 3 * v, 3 * v, 3 * v}, 1));
    EXPECT_EQ(h.machine->global_model_version(), r);
    EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>(4, 2 * v)));
  }
  EXPECT_EQ(h.machine->phase(), RoundPhase::kFinished);
  ASSERT_EQ(h.machine->history().size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(h.machine->history()[i].round, i + 1);
    EXPECT_EQ(h.machine->history()[i].outcome, RoundOutcome::kCompleted);
    EXPECT_EQ(h.machine->history()[i].model_version, i + 1);
  }
  EXPECT_THAT(h.sender.ended, ElementsAre(1u, 2u, 3u));

  // Nothing more happens.
  const size_t sent = h.sender.sent.size();
  // alice's last upload retried: its first acknowledgement, nothing counted again.
  ASSERT_OK_AND_ASSIGN(core::UploadAck retry, h.Submit("alice", {1, 1, 1, 1}, 1));
  EXPECT_TRUE(retry.duplicate);
  // A result for a round that never opened.
  TrainTask never = h.Task("alice");
  never.ref.round = 4;
  never.ref.task_id = "run-1/4/alice";
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{"alice"}, ResultFor(never, FloatModel({1, 1, 1, 1}), 1)),
              absl::StatusCode::kFailedPrecondition);
  h.Register({"carol", "dave"});
  h.clock.Advance(absl::Hours(1) - absl::Seconds(1));
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.machine->OnTick());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kFinished);
  EXPECT_EQ(h.machine->current_round(), 3u);
  EXPECT_EQ(h.sender.sent.size(), sent);
  EXPECT_EQ(h.machine->TaskFor(ClientId{"alice"}), nullptr);
  EXPECT_EQ(h.machine->global_model_version(), 3u);
}

TEST(RoundStateMachineTest, ResultsBeforeAnyRoundAreFailedPrecondition) {
  Harness h(WithMinAvailable(2));
  h.Register({"alice"});
  core::TrainResult r;
  r.ref = {"run-1", 1, "run-1/1/alice"};
  r.num_examples = 1;
  r.weights = FloatModel({1, 1, 1, 1});
  EXPECT_CODE(h.machine->OnTrainResult(ClientId{"alice"}, r), absl::StatusCode::kFailedPrecondition);
}

// ---- (11) Model files ----

TEST(RoundStateMachineTest, WritesEveryVersionToTheModelDirectory) {
  testutil::ScopedTempDir dir;
  MachineSetup s = WithMinAvailable(2);
  s.dir = dir.Join("models");
  s.with_evaluator = true;
  Harness h(s);
  ASSERT_EQ(h.store->PathFor(0), dir.Join("models/model_v000000.safetensors"));
  ASSERT_OK_AND_ASSIGN(core::SafetensorsFile v0, core::ReadSafetensorsFile(h.store->PathFor(0)));
  EXPECT_EQ(Values(v0.weights), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(v0.metadata.at("version"), "0");

  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.Submit("alice", {1, 0, 0, 2}, 1));
  ASSERT_OK(h.Submit("bob", {0, 3, 0, -1}, 3));
  ASSERT_EQ(h.machine->global_model_version(), 1u);

  const std::string v1_path = dir.Join("models/model_v000001.safetensors");
  EXPECT_EQ(h.store->PathFor(1), v1_path);
  ASSERT_OK_AND_ASSIGN(core::SafetensorsFile v1, core::ReadSafetensorsFile(v1_path));
  // (1*[1,0,0,2] + 3*[0,3,0,-1]) / 4
  EXPECT_THAT(Values(v1.weights), Pointwise(FloatNear(kTol), std::vector<float>{0.25f, 2.25f, 0.0f, -0.25f}));
  EXPECT_EQ(Values(v1.weights), h.GlobalValues()) << "the file holds exactly the published model";
  EXPECT_EQ(v1.metadata.at("version"), "1");
  EXPECT_EQ(v1.metadata.at("round"), "1");
  EXPECT_EQ(v1.metadata.at("run_id"), "run-1");
  ASSERT_TRUE(v1.metadata.contains("metric.accuracy"));
  EXPECT_DOUBLE_EQ(std::stod(v1.metadata.at("metric.accuracy")), 0.75);
  EXPECT_EQ(dir.List(), std::vector<std::string>{"models"});
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir.Join("models"))) {
    files.push_back(e.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  EXPECT_THAT(files, ElementsAre("model_v000000.safetensors", "model_v000001.safetensors"));
}

TEST(RoundStateMachineTest, AbandonedRoundWritesNoModelFile) {
  testutil::ScopedTempDir dir;
  MachineSetup s = WithMinAvailable(2);
  s.dir = dir.path();
  s.config.min_results = 2;
  Harness h(s);
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_OK(h.Submit("alice", {1, 1, 1, 1}, 1));
  h.clock.Advance(absl::Minutes(10));
  ASSERT_OK(h.machine->OnTick());
  ASSERT_EQ(h.machine->history().size(), 1u);
  EXPECT_EQ(h.machine->history()[0].outcome, RoundOutcome::kAbandoned);
  EXPECT_EQ(dir.List(), std::vector<std::string>{"model_v000000.safetensors"});
}

TEST(RoundStateMachineTest, ModelThatCannotBeStoredIsNotPublished) {
  testutil::ScopedTempDir dir;
  MachineSetup s = WithMinAvailable(1);
  s.dir = dir.Join("models");
  Harness h(s);
  const std::string initial_bytes = h.store->Current()->serialized;
  h.Register({"alice"});
  ASSERT_OK(h.machine->MaybeStartRound());
  std::filesystem::remove_all(dir.Join("models"));  // the disk went away
  ASSERT_OK(h.Submit("alice", {9, 9, 9, 9}, 1));
  ASSERT_EQ(h.machine->history().size(), 1u);
  EXPECT_EQ(h.machine->history()[0].outcome, RoundOutcome::kAbandoned);
  EXPECT_EQ(h.machine->global_model_version(), 0u);
  EXPECT_EQ(h.store->Current()->serialized, initial_bytes);
}

TEST(RoundStateMachineTest, SummaryRecordsTheRoundDuration) {
  MachineSetup s = WithMinAvailable(2);
  s.config.num_rounds = 2;
  Harness h(s);
  h.Register({"alice", "bob"});
  ASSERT_OK(h.machine->MaybeStartRound());
  h.clock.Advance(absl::Seconds(42));
  ASSERT_OK(h.Submit("alice", {1, 1, 1, 1}, 1));
  h.clock.Advance(absl::Seconds(8));
  ASSERT_OK(h.Submit("bob", {1, 1, 1, 1}, 1));
  ASSERT_EQ(h.machine->history().size(), 1u);
  EXPECT_EQ(h.machine->history()[0].duration, absl::Seconds(50));
  // Round 2 opened at the close of round 1: its deadline counts from then.
  const auto tasks = h.sender.TasksOfRound(2);
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].second.deadline, h.clock.Now() + absl::Minutes(10));
}

}  // namespace
}  // namespace tessera::coordinator

namespace tessera::coordinator {
namespace {

// Over-selection: 13 of 13 sampled for a target of 10 (fraction 10/13 of 13 available, x1.3);
// the round closes after the 10th valid result, the 3 stragglers' results are discarded.
TEST(RoundStateMachineOverSelectionTest, ClosesOnceTheTargetCountReported) {
  MachineSetup s;
  s.fedavg.fraction = 10.0 / 13.0;
  s.fedavg.over_selection = 1.3;
  s.fedavg.min_available_clients = 13;
  s.config.num_rounds = 1;
  Harness h(s);
  std::vector<std::string> ids;
  for (int i = 0; i < 13; ++i) ids.push_back("c" + std::to_string(i));
  h.Register(ids);
  ASSERT_OK(h.machine->MaybeStartRound());
  ASSERT_EQ(h.SampledInRound(1).size(), 13u);
  for (int i = 0; i < 10; ++i) ASSERT_OK(h.Submit(ids[i], {1, 1, 1, 1}, 1).status());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kFinished);
  ASSERT_EQ(h.machine->history().size(), 1u);
  EXPECT_EQ(h.machine->history()[0].sampled, 13);
  EXPECT_EQ(h.machine->history()[0].reported, 10);
  EXPECT_CODE(h.Submit(ids[11], {9, 9, 9, 9}, 1), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{1, 1, 1, 1}));
}

TEST(RoundStateMachineOverSelectionTest, StrategyRefusesOverSelectionBelowOne) {
  FedAvgOptions o;
  o.over_selection = 0.8;
  EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::coordinator
