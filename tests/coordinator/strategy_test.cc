#include "coordinator/strategy.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "coordinator/client_registry.h"
#include "coordinator/model_store.h"
#include "coordinator/round_state_machine.h"
#include "coordinator/strategy_factory.h"
#include "core/clock.h"
#include "core/rng.h"
#include "core/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"

namespace tessera::coordinator {
namespace {

using core::ClientId;
using ::testing::FloatNear;
using ::testing::Pointwise;

std::vector<ClientId> Available(int n) {
  std::vector<ClientId> ids;
  for (int i = 0; i < n; ++i) ids.push_back(ClientId{core::StrCat("client-", 1000 + i)});
  return ids;  // sorted, as ClientRegistry::Available returns them
}

std::unique_ptr<FedAvgStrategy> Make(double fraction, int min_fit = 1, int min_available = 1) {
  FedAvgOptions o;
  o.fraction = fraction;
  o.min_fit_clients = min_fit;
  o.min_available_clients = min_available;
  return FedAvgStrategy::Create(o).value();
}

// Distinct members of `available`.
void ExpectValidSample(const std::vector<ClientId>& sample, const std::vector<ClientId>& available) {
  std::set<ClientId> distinct(sample.begin(), sample.end());
  EXPECT_EQ(distinct.size(), sample.size()) << "a client was sampled twice";
  for (const ClientId& id : sample) {
    EXPECT_TRUE(std::binary_search(available.begin(), available.end(), id)) << id << " is not available";
  }
}

TEST(FedAvgStrategyTest, CreateRefusesBadFractions) {
  for (double f : {0.0, -0.1, 1.5, 1.0000001, std::numeric_limits<double>::quiet_NaN(),
                   std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE(f);
    FedAvgOptions o;
    o.fraction = f;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
  }
  FedAvgOptions ok;
  ok.fraction = 1.0;
  EXPECT_OK(FedAvgStrategy::Create(ok));
  ok.fraction = 1e-6;
  EXPECT_OK(FedAvgStrategy::Create(ok));
}

TEST(FedAvgStrategyTest, CreateRefusesNonPositiveCounts) {
  for (int bad : {0, -1, -100}) {
    SCOPED_TRACE(bad);
    FedAvgOptions o;
    o.min_fit_clients = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
    o = FedAvgOptions{};
    o.min_available_clients = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
    o = FedAvgOptions{};
    o.train.local_epochs = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
    o = FedAvgOptions{};
    o.train.batch_size = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
    o = FedAvgOptions{};
    o.train.learning_rate = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
  }
  FedAvgOptions nan_lr;
  nan_lr.train.learning_rate = std::numeric_limits<double>::quiet_NaN();
  EXPECT_CODE(FedAvgStrategy::Create(nan_lr), absl::StatusCode::kInvalidArgument);
}

TEST(FedAvgStrategyTest, SamplesCeilOfFractionOfTheAvailableClients) {
  struct Case {
    double fraction;
    int n;
    size_t want;
  };
  for (const Case& c : {Case{0.1, 100, 10}, Case{0.1, 95, 10}, Case{0.1, 91, 10}, Case{0.1, 90, 9},
                        Case{0.3, 10, 3}, Case{0.25, 10, 3}, Case{0.5, 3, 2}, Case{1.0, 7, 7},
                        Case{0.01, 5, 1}}) {
    SCOPED_TRACE(core::StrCat("fraction ", c.fraction, " of ", c.n));
    auto s = Make(c.fraction);
    core::Rng rng(42);
    const auto available = Available(c.n);
    const auto sample = s->SampleClients(available, 1, rng);
    EXPECT_EQ(sample.size(), c.want);
    ExpectValidSample(sample, available);
  }
}

TEST(FedAvgStrategyTest, MinFitClientsIsRespected) {
  auto s = Make(0.1, /*min_fit=*/5, /*min_available=*/1);
  EXPECT_EQ(s->MinAvailableClients(), 5);
  core::Rng rng(1);
  const auto available = Available(20);
  const auto sample = s->SampleClients(available, 1, rng);
  EXPECT_EQ(sample.size(), 5u);  // ceil(0.1 * 20) = 2 < 5
  ExpectValidSample(sample, available);
  // Fewer available than min_fit: no round.
  EXPECT_TRUE(s->SampleClients(Available(4), 1, rng).empty());
  EXPECT_EQ(s->SampleClients(Available(5), 1, rng).size(), 5u);
}

TEST(FedAvgStrategyTest, MinAvailableClientsIsRespected) {
  auto s = Make(0.5, /*min_fit=*/1, /*min_available=*/10);
  EXPECT_EQ(s->MinAvailableClients(), 10);
  core::Rng rng(1);
  EXPECT_TRUE(s->SampleClients(Available(9), 1, rng).empty());
  EXPECT_TRUE(s->SampleClients({}, 1, rng).empty());
  EXPECT_EQ(s->SampleClients(Available(10), 1, rng).size(), 5u);
}

TEST(FedAvgStrategyTest, SamplesAreDistinctFromTheAvailableSetAndCoverIt) {
  auto s = Make(0.1);
  const auto available = Available(100);
  std::set<ClientId> seen;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    core::Rng rng(seed);
    const auto sample = s->SampleClients(available, 1, rng);
    ASSERT_EQ(sample.size(), 10u);
    ExpectValidSample(sample, available);
    seen.insert(sample.begin(), sample.end());
  }
  // 2000 draws of 10 out of 100: a uniform sampler reaches every client.
  EXPECT_EQ(seen.size(), 100u);
}

TEST(FedAvgStrategyTest, SamplingIsDeterministicForAGivenRngState) {
  auto s = Make(0.3);
  const auto available = Available(30);
  core::Rng a(7, {1, 2});
  core::Rng b(7, {1, 2});
  EXPECT_EQ(s->SampleClients(available, 1, a), s->SampleClients(available, 1, b));
  core::Rng c(8, {1, 2});
  core::Rng d(7, {1, 2});
  EXPECT_NE(s->SampleClients(available, 1, c), s->SampleClients(available, 1, d));
}

TEST(FedAvgStrategyTest, FullFractionSamplesEveryone) {
  auto s = Make(1.0);
  const auto available = Available(12);
  core::Rng rng(3);
  auto sample = s->SampleClients(available, 1, rng);
  std::sort(sample.begin(), sample.end());
  EXPECT_EQ(sample, available);
}

TEST(FedAvgStrategyTest, ConfigureTrainAndNextModel) {
  FedAvgOptions o;
  o.fraction = 0.5;
  o.train = {3, 16, 0.2, 77};
  auto s = FedAvgStrategy::Create(o).value();
  EXPECT_EQ(s->name(), "fedavg");
  const core::TrainConfig c = s->ConfigureTrain(4);
  EXPECT_EQ(c.local_epochs, 3);
  EXPECT_EQ(c.batch_size, 16);
  EXPECT_EQ(c.learning_rate, 0.2);
  EXPECT_EQ(c.seed, 77u);

  // The aggregator averages by weight, and the average is the next model.
  const core::ModelWeights global = testutil::FloatModel({0, 0});
  auto agg = s->MakeAggregator(global);
  const core::ModelWeights u1 = testutil::FloatModel({1, 2});
  const core::ModelWeights u2 = testutil::FloatModel({4, 8});
  ASSERT_OK(agg->Accumulate({u1, 2.0}));
  ASSERT_OK(agg->Accumulate({u2, 1.0}));
  ASSERT_OK_AND_ASSIGN(core::ModelWeights avg, std::move(*agg).Report());
  ASSERT_OK_AND_ASSIGN(core::ModelWeights next, s->NextGlobalModel(global, avg));
  EXPECT_THAT(testutil::Values(next), Pointwise(FloatNear(1e-6f), std::vector<float>{2, 4}));
}

// ---------------------------------------------------------------- server optimizers

// Every client of a round moves the global model by `delta`: the mean client model is x + delta.
core::ModelWeights Moved(const core::ModelWeights& x, const std::vector<double>& delta) {
  std::vector<float> v = testutil::Values(x);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(v[i] + delta[i]);
  return testutil::FloatModel(v);
}

FedAvgOptions Sampling(double fraction = 0.1, int min_available = 1) {
  FedAvgOptions o;
  o.fraction = fraction;
  o.min_available_clients = min_available;
  return o;
}

// Options naming strategy `name`, with `set` applied.
StrategyOptions Options(std::string name, const std::function<void(StrategyOptions&)>& set = {}) {
  StrategyOptions so;
  so.name = std::move(name);
  if (set) set(so);
  return so;
}

// Rounds 1-3: one coordinate each of a growing, shrinking, sign-flipping and zero update, so that
// Yogi's sign(v - delta^2) takes both signs.
const std::vector<std::vector<double>> kDeltas = {
    {0.5, -0.2, 0.0, 1.0}, {0.4, 0.3, 0.0, -0.01}, {-0.6, 0.05, 0.2, 0.02}};

// Reddi et al. 2021, Algorithm 2 (and Hsu et al. 2019 for fedavgm), in plain double loops: the
// model after each of kDeltas' rounds, from x0.
std::vector<std::vector<double>> ReferenceRounds(const std::string& name, const std::vector<double>& x0, double lr,
                                                 double momentum, double b1, double b2, double tau) {
  std::vector<double> x = x0;
  std::vector<double> m(x.size(), 0.0), v(x.size(), tau * tau);
  std::vector<std::vector<double>> out;
  for (const auto& delta : kDeltas) {
    for (size_t i = 0; i < x.size(); ++i) {
      const double d = delta[i];
      if (name == "fedavgm") {
        m[i] = momentum * m[i] + d;
        x[i] += lr * m[i];
        continue;
      }
      m[i] = b1 * m[i] + (1 - b1) * d;
      if (name == "fedadam") v[i] = b2 * v[i] + (1 - b2) * d * d;
      if (name == "fedyogi") v[i] = v[i] - (1 - b2) * d * d * (v[i] > d * d ? 1 : (v[i] < d * d ? -1 : 0));
      if (name == "fedadagrad") v[i] = v[i] + d * d;
      x[i] += lr * m[i] / (std::sqrt(v[i]) + tau);
    }
    out.push_back(x);
  }
  return out;
}

TEST(ServerOptimizerStrategyTest, ThreeRoundsMatchTheReference) {
  const std::vector<double> x0 = {0.1, -0.3, 0.7, 0.0};
  for (const std::string name : {"fedavgm", "fedadam", "fedyogi", "fedadagrad"}) {
    SCOPED_TRACE(name);
    StrategyOptions so;
    so.name = name;
    so.server_lr = 0.3;
    if (name == "fedavgm") {
      so.server_momentum = 0.8;
    } else {
      so.beta1 = 0.7;
      so.tau = 0.05;
      if (name != "fedadagrad") so.beta2 = 0.9;
    }
    ASSERT_OK_AND_ASSIGN(auto strategy, MakeStrategy(so, Sampling(), /*secure_aggregation=*/false));
    EXPECT_EQ(strategy->name(), name);
    const auto want = ReferenceRounds(name, x0, 0.3, 0.8, 0.7, 0.9, 0.05);
    core::ModelWeights x = testutil::FloatModel({0.1f, -0.3f, 0.7f, 0.0f});
    for (size_t r = 0; r < kDeltas.size(); ++r) {
      // Through the strategy's own aggregator, as a round does: two clients, same model.
      auto agg = strategy->MakeAggregator(x);
      const core::ModelWeights client = Moved(x, kDeltas[r]);
      ASSERT_OK(agg->Accumulate({client, 3.0}));
      ASSERT_OK(agg->Accumulate({client, 5.0}));
      ASSERT_OK_AND_ASSIGN(core::ModelWeights aggregate, std::move(*agg).Report());
      ASSERT_OK_AND_ASSIGN(x, strategy->NextGlobalModel(x, std::move(aggregate)));
      std::vector<float> want_f(want[r].begin(), want[r].end());
      EXPECT_THAT(testutil::Values(x), Pointwise(FloatNear(2e-5f), want_f)) << "round " << r + 1;
    }
  }
}

std::unique_ptr<Strategy> FedAvgM(double lr, double momentum) {
  return MakeStrategy(Options("fedavgm",
                              [&](auto& o) {
                                o.server_lr = lr;
                                o.server_momentum = momentum;
                              }),
                      Sampling(), false)
      .value();
}

TEST(ServerOptimizerStrategyTest, FedAvgMByHand) {
  // lr 1, momentum 0.5, one coordinate from 0: updates 1, 1, 0 give v = 1, 1.5, 0.75 and x = 1,
  // 2.5, 3.25.
  auto strategy = FedAvgM(1.0, 0.5);
  core::ModelWeights x = testutil::FloatModel({0});
  const std::vector<float> updates = {1, 1, 0};
  const std::vector<float> want = {1, 2.5, 3.25};
  for (size_t r = 0; r < updates.size(); ++r) {
    ASSERT_OK_AND_ASSIGN(x, strategy->NextGlobalModel(x, testutil::FloatModel({testutil::Values(x)[0] + updates[r]})));
    EXPECT_FLOAT_EQ(testutil::Values(x)[0], want[r]) << "round " << r + 1;
  }
}

TEST(ServerOptimizerStrategyTest, FedAvgMWithoutMomentumAtRateOneIsFedAvg) {
  auto strategy = FedAvgM(1.0, 0.0);
  core::ModelWeights x = testutil::FloatModel({1, 2, 3});
  for (int r = 0; r < 3; ++r) {
    const core::ModelWeights mean = testutil::FloatModel({1.5f * r, -2.0f, 0.25f + r});
    ASSERT_OK_AND_ASSIGN(x, strategy->NextGlobalModel(x, mean));
    EXPECT_THAT(testutil::Values(x), Pointwise(FloatNear(1e-6f), testutil::Values(mean)));
  }
}

TEST(ServerOptimizerStrategyTest, ARefusedStepLeavesTheStateAsItWas) {
  auto a = MakeStrategy(Options("fedadam"), Sampling(), false).value();
  auto b = MakeStrategy(Options("fedadam"), Sampling(), false).value();
  const core::ModelWeights x = testutil::FloatModel({0, 0});
  for (int r = 0; r < 3; ++r) {
    // Before the first step and between steps: a step with another layout, or one whose result
    // is not finite, is refused and changes nothing.
    EXPECT_CODE(a->NextGlobalModel(x, testutil::FloatModel({1, 1, 1})), absl::StatusCode::kInvalidArgument);
    EXPECT_CODE(a->NextGlobalModel(x, testutil::FloatModel({std::numeric_limits<float>::infinity(), 0})),
                absl::StatusCode::kInvalidArgument);
    const core::ModelWeights mean = testutil::FloatModel({0.5f * (r + 1), -0.25f});
    ASSERT_OK_AND_ASSIGN(core::ModelWeights xa, a->NextGlobalModel(x, mean));
    ASSERT_OK_AND_ASSIGN(core::ModelWeights xb, b->NextGlobalModel(x, mean));
    EXPECT_EQ(testutil::Values(xa), testutil::Values(xb)) << "round " << r + 1;
  }
}

// ---------------------------------------------------------------- the factory

TEST(StrategyFactoryTest, EveryNameMakesItsStrategy) {
  for (const std::string& name : StrategyNames()) {
    SCOPED_TRACE(name);
    StrategyOptions so;
    so.name = name;
    if (name == "norm-bound") so.norm_bound = 1.0;
    // 20 available clients, all sampled: enough for every robust rule with f = 1.
    ASSERT_OK_AND_ASSIGN(auto strategy, MakeStrategy(so, Sampling(1.0, 20), false));
    EXPECT_EQ(strategy->name(), name);
  }
  EXPECT_EQ(StrategyNames().size(), 11u);
}

TEST(StrategyFactoryTest, RefusesBadCombinationsAndValuesInOneLine) {
  struct Case {
    StrategyOptions options;
    std::string named;  // the message says this
    bool secure = false;
  };
  const std::vector<Case> cases = {
      {Options("fedsgd"), "'fedsgd'"},
      {Options("fedadam", [](auto& o) { o.trim_fraction = 0.2; }),
       "--trim-fraction does not apply to --strategy fedadam"},
      {Options("fedavg", [](auto& o) { o.server_lr = 0.5; }), "--server-lr does not apply"},
      {Options("fedadam", [](auto& o) { o.server_lr = 0; }), "learning rate"},
      {Options("fedadam", [](auto& o) { o.beta1 = 1.0; }), "beta1"},
      {Options("fedyogi", [](auto& o) { o.tau = 0; }), "tau"},
      {Options("fedavgm", [](auto& o) { o.server_momentum = -0.1; }), "momentum"},
      {Options("trimmed-mean", [](auto& o) { o.trim_fraction = 0.5; }), "trim fraction"},
      {Options("krum", [](auto& o) { o.byzantine = -1; }), "f must be >= 0"},
      {Options("multi-krum", [](auto& o) { o.multi_krum_m = 0; }), "--multi-krum-m"},
      {Options("norm-bound"), "needs --norm-bound"},
      {Options("norm-bound", [](auto& o) { o.norm_bound = -2; }), "--norm-bound must be positive"},
      // Robust rules need each update: never with secure aggregation.
      {Options("median"), "--secure-aggregation", true},
      {Options("trimmed-mean"), "--secure-aggregation", true},
      {Options("krum"), "--secure-aggregation", true},
      {Options("multi-krum"), "--secure-aggregation", true},
      {Options("bulyan"), "--secure-aggregation", true},
      {Options("norm-bound", [](auto& o) { o.norm_bound = 1; }), "--secure-aggregation", true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.named);
    auto s = MakeStrategy(c.options, Sampling(1.0, 20), c.secure);
    EXPECT_CODE(s, absl::StatusCode::kInvalidArgument);
    const std::string message(s.status().message());
    EXPECT_THAT(message, ::testing::HasSubstr(c.named));
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }
  // The server optimizers compose with secure aggregation.
  EXPECT_OK(MakeStrategy(Options("fedyogi"), Sampling(1.0, 20),
                         /*secure_aggregation=*/true));
}

TEST(StrategyFactoryTest, RobustRulesAreCheckedAgainstTheFewestExpectedResults) {
  // 10% of at least 30 available clients: a round may expect only 3 results.
  StrategyOptions so;
  so.name = "krum";
  so.byzantine = 1;  // needs 5
  auto s = MakeStrategy(so, Sampling(0.1, 30), false);
  EXPECT_CODE(s, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), ::testing::HasSubstr("only 3 results"));
  EXPECT_OK(MakeStrategy(so, Sampling(0.1, 50), false));  // 5 expected
  so.name = "bulyan";                                     // needs 7
  EXPECT_CODE(MakeStrategy(so, Sampling(0.1, 60), false), absl::StatusCode::kInvalidArgument);
  EXPECT_OK(MakeStrategy(so, Sampling(0.1, 70), false));
  // Over-selection: 13 sampled, but the round closes once 10 reported.
  FedAvgOptions over = Sampling(0.1, 100);
  over.over_selection = 1.3;
  so.byzantine = 2;  // bulyan needs 11
  EXPECT_CODE(MakeStrategy(so, over, false), absl::StatusCode::kInvalidArgument);
}

TEST(StrategyFactoryTest, RobustStrategiesAggregateWithTheirRule) {
  StrategyOptions so;
  so.name = "median";
  auto strategy = MakeStrategy(so, Sampling(1.0, 3), false).value();
  const core::ModelWeights global = testutil::FloatModel({0, 0});
  auto agg = strategy->MakeAggregator(global);
  for (float v : {1.0f, 2.0f, 100.0f}) ASSERT_OK(agg->Accumulate({testutil::FloatModel({v, -v}), 1.0}));
  ASSERT_OK_AND_ASSIGN(core::ModelWeights aggregate, std::move(*agg).Report());
  ASSERT_OK_AND_ASSIGN(core::ModelWeights next, strategy->NextGlobalModel(global, std::move(aggregate)));
  EXPECT_EQ(testutil::Values(next), (std::vector<float>{2, -2}));
}

// ---------------------------------------------------------------- in a round

// A RoundStateMachine with `strategy` over 5 registered clients, all sampled, one round.
struct Round {
  explicit Round(std::unique_ptr<Strategy> s) : registry(absl::Hours(1)), strategy(std::move(s)) {
    RoundConfig config;
    config.run_id = "run-1";
    config.num_rounds = 1;
    config.round_deadline = absl::Minutes(10);
    config.min_results = 1;
    store = ModelStore::Create("", testutil::FloatModel({0, 0}), config.run_id).value();
    RoundDeps deps;
    deps.strategy = strategy.get();
    deps.store = store.get();
    deps.registry = &registry;
    deps.sender = &sender;
    deps.clock = &clock;
    machine = RoundStateMachine::Create(config, deps).value();
    for (int k = 0; k < 5; ++k) registry.Register(ClientId{core::StrCat("c", k)}, {}, clock.Now());
  }
  absl::Status Submit(int k, std::vector<float> values) {
    auto task = sender.LastTaskFor(ClientId{core::StrCat("c", k)});
    if (!task) return absl::NotFoundError("no task");
    return machine
        ->OnTrainResult(ClientId{core::StrCat("c", k)},
                        testutil::ResultFor(*task, testutil::FloatModel(std::move(values)), 10))
        .status();
  }

  core::FakeClock clock;
  ClientRegistry registry;
  testutil::RecordingSender sender;
  std::unique_ptr<Strategy> strategy;
  std::unique_ptr<ModelStore> store;
  std::unique_ptr<RoundStateMachine> machine;
};

std::unique_ptr<Strategy> Krum(int min_available) {
  StrategyOptions so;
  so.name = "krum";
  so.byzantine = 1;
  return MakeStrategy(so, Sampling(1.0, min_available), false).value();
}

TEST(RobustStrategyRoundTest, AByzantineClientDoesNotMoveTheModelUnderKrum) {
  Round r(Krum(5));
  ASSERT_OK(r.machine->MaybeStartRound());
  for (int k = 0; k < 4; ++k) ASSERT_OK(r.Submit(k, {1.0f + 0.01f * k, 2.0f - 0.01f * k}));
  ASSERT_OK(r.Submit(4, {1e6f, -1e6f}));
  ASSERT_EQ(r.machine->history().size(), 1u);
  EXPECT_EQ(r.machine->history()[0].outcome, RoundOutcome::kCompleted);
  EXPECT_THAT(testutil::Values(*r.store->Current()->weights),
              Pointwise(FloatNear(0.05f), std::vector<float>{1.0f, 2.0f}));
}

TEST(RobustStrategyRoundTest, TooFewResultsForTheRuleAbandonTheRoundAndKeepTheModel) {
  Round r(Krum(5));
  ASSERT_OK(r.machine->MaybeStartRound());
  for (int k = 0; k < 4; ++k) ASSERT_OK(r.Submit(k, {1, 2}));  // Krum with f = 1 needs 5
  r.clock.Advance(absl::Minutes(10));
  ASSERT_OK(r.machine->OnTick());
  ASSERT_EQ(r.machine->history().size(), 1u);
  const RoundSummary& summary = r.machine->history()[0];
  EXPECT_EQ(summary.outcome, RoundOutcome::kAbandoned);
  EXPECT_THAT(summary.reason, ::testing::HasSubstr("got 4"));
  EXPECT_EQ(r.machine->global_model_version(), 0u);
  EXPECT_EQ(testutil::Values(*r.store->Current()->weights), (std::vector<float>{0, 0}));
}

}  // namespace
}  // namespace tessera::coordinator
