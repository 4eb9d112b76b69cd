// DP-FedAvg in the round state machine: clients are told the clip norm, the published model
// carries Gaussian noise of stddev z*S/m, epsilon is accounted per round (and equals an RDP
// accountant stepped by hand), a round that would exceed the budget does not start, and the
// spent budget survives a restart.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "coordinator/round_state_machine.h"
#include "security/dp/accountant.h"
#include "core/file_io.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"

namespace tessera::coordinator {
namespace {

using core::ClientId;
using testutil::FloatModel;
using testutil::ResultFor;

constexpr int kClients = 4;
constexpr int kParams = 20000;

struct DpHarness {
  explicit DpHarness(RoundConfig::Dp dp, std::string state_file = "", core::RoundNumber rounds = 5)
      : registry(absl::Hours(1)) {
    RoundConfig config;
    config.run_id = "dp";
    config.num_rounds = rounds;
    config.dp = dp;
    config.privacy_state_file = std::move(state_file);
    FedAvgOptions fedavg;
    fedavg.fraction = 0.5;  // 2 of 4 clients per round: sampling rate 0.5
    fedavg.min_available_clients = kClients;
    strategy = FedAvgStrategy::Create(fedavg).value();
    store = ModelStore::Create("", FloatModel(std::vector<float>(kParams, 0.0f)), "dp").value();
    RoundDeps deps;
    deps.strategy = strategy.get();
    deps.store = store.get();
    deps.registry = &registry;
    deps.sender = &sender;
    deps.clock = &clock;
    created = RoundStateMachine::Create(config, deps);
    if (created.ok()) machine = std::move(*created);
    for (int i = 0; i < kClients; ++i) registry.Register(ClientId{"c" + std::to_string(i)}, {}, clock.Now());
  }

  // Every sampled client answers with all-ones weights.
  void FinishRound() {
    const core::RoundNumber r = machine->current_round();
    for (const auto& [id, task] : sender.TasksOfRound(r)) {
      ASSERT_OK(machine->OnTrainResult(id, ResultFor(task, FloatModel(std::vector<float>(kParams, 1.0f)), 10)).status());
    }
  }

  core::FakeClock clock;
  ClientRegistry registry;
  testutil::RecordingSender sender;
  std::unique_ptr<FedAvgStrategy> strategy;
  std::unique_ptr<ModelStore> store;
  absl::StatusOr<std::unique_ptr<RoundStateMachine>> created = absl::UnknownError("");
  std::unique_ptr<RoundStateMachine> machine;
};

RoundConfig::Dp Dp(double z, double budget = 0) {
  RoundConfig::Dp dp;
  dp.clip_norm = 2.0;
  dp.noise_multiplier = z;
  dp.delta = 1e-5;
  dp.epsilon_budget = budget;
  dp.noise_seed = 1234;
  return dp;
}

TEST(DpRoundTest, TasksCarryTheClipNormAndNoiseHasStddevZSOverM) {
  DpHarness h(Dp(1.5));
  ASSERT_OK(h.machine->MaybeStartRound());
  for (const auto& [id, task] : h.sender.TasksOfRound(1)) EXPECT_EQ(task.dp.clip_norm, 2.0);
  h.FinishRound();
  ASSERT_EQ(h.machine->history().size(), 1u);
  // Every client sent all-ones: the published model is 1 + N(0, (z S / m)^2) per element.
  const double expected = 1.5 * 2.0 / 2;
  double sum = 0, sq = 0;
  for (float v : h.store->Current()->weights->tensors[0].f32()) {
    sum += v - 1.0;
    sq += (v - 1.0) * (v - 1.0);
  }
  const double mean = sum / kParams;
  const double stddev = std::sqrt(sq / kParams - mean * mean);
  EXPECT_NEAR(mean, 0.0, 4 * expected / std::sqrt(kParams));
  EXPECT_NEAR(stddev, expected, 0.03 * expected);  // ~4 standard errors of the estimate
}

TEST(DpRoundTest, EpsilonPerRoundEqualsTheAccountantsAndGrows) {
  DpHarness h(Dp(1.0));
  security::dp::RdpAccountant reference;
  double last = 0;
  for (int r = 1; r <= 3; ++r) {
    ASSERT_OK(h.machine->MaybeStartRound());
    h.FinishRound();
    ASSERT_OK(reference.Step(1.0, 0.5));
    const double eps = h.machine->history().back().epsilon;
    EXPECT_DOUBLE_EQ(eps, reference.Epsilon(1e-5).value());
    EXPECT_GT(eps, last);
    last = eps;
  }
}

TEST(DpRoundTest, ARoundThatWouldExceedTheBudgetDoesNotStart) {
  // Budget for exactly two rounds at z = 1, q = 0.5.
  security::dp::RdpAccountant two;
  ASSERT_OK(two.Step(1.0, 0.5, 2));
  const double budget = two.Epsilon(1e-5).value() + 1e-9;
  DpHarness h(Dp(1.0, budget));
  for (int r = 0; r < 2; ++r) {
    ASSERT_OK(h.machine->MaybeStartRound());
    h.FinishRound();
  }
  ASSERT_OK(h.machine->MaybeStartRound());
  EXPECT_EQ(h.machine->phase(), RoundPhase::kFinished);
  EXPECT_EQ(h.machine->history().size(), 2u);
  EXPECT_NE(h.machine->finish_reason().find("privacy budget"), std::string::npos);
  EXPECT_LE(h.machine->epsilon(), budget);
}

TEST(DpRoundTest, SpentBudgetSurvivesARestart) {
  const std::string file = (std::filesystem::temp_directory_path() / ("dp_state_" + std::to_string(getpid()))).string();
  std::filesystem::remove(file);
  double spent = 0;
  {
    DpHarness h(Dp(1.0), file);
    for (int r = 0; r < 2; ++r) {
      ASSERT_OK(h.machine->MaybeStartRound());
      h.FinishRound();
    }
    spent = h.machine->epsilon();
    ASSERT_GT(spent, 0);
  }
  DpHarness restarted(Dp(1.0), file);
  EXPECT_DOUBLE_EQ(restarted.machine->epsilon(), spent);
  ASSERT_OK(restarted.machine->MaybeStartRound());
  restarted.FinishRound();
  EXPECT_GT(restarted.machine->epsilon(), spent);
  // A budget the earlier run already used up stops the restarted one before its first round.
  DpHarness exhausted(Dp(1.0, spent), file);
  ASSERT_OK(exhausted.machine->MaybeStartRound());
  EXPECT_EQ(exhausted.machine->phase(), RoundPhase::kFinished);
  std::filesystem::remove(file);
}

TEST(DpRoundTest, RefusesNonsensicalDpSettings) {
  RoundConfig::Dp noise_without_clip = Dp(1.0);
  noise_without_clip.clip_norm = 0;
  EXPECT_CODE(DpHarness(noise_without_clip).created, absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(DpHarness(Dp(0.0, 3.0)).created, absl::StatusCode::kInvalidArgument);  // budget without noise
  RoundConfig::Dp bad_delta = Dp(1.0);
  bad_delta.delta = 1.5;
  EXPECT_CODE(DpHarness(bad_delta).created, absl::StatusCode::kInvalidArgument);
}

TEST(DpRoundTest, CorruptPrivacyStateIsRefusedNotReset) {
  const std::string file = (std::filesystem::temp_directory_path() / ("dp_bad_" + std::to_string(getpid()))).string();
  ASSERT_OK(core::WriteFileAtomic(file, "not an accountant"));
  EXPECT_CODE(DpHarness(Dp(1.0), file).created, absl::StatusCode::kInvalidArgument);
  std::filesystem::remove(file);
}

}  // namespace
}  // namespace tessera::coordinator
