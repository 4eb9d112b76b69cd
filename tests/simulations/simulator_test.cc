// The simulator in process: reproducible for a seed whatever the number of worker threads
// (results commit in sampling order), and clear errors for bad options.
#include "simulations/simulator.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/safetensors.h"
#include "tests/testing/status_macros.h"

namespace tessera::simulations {
namespace {

namespace fs = std::filesystem;
const char kFashionMnist[] = "/usr/share/datasets/fashion-mnist";

SimulationOptions Small(int threads, const std::string& out) {
  SimulationOptions o;
  o.num_clients = 20;
  o.fraction = 0.3;
  o.rounds = 3;
  o.model = "logreg";
  o.partition = "dirichlet:0.5";
  o.local_epochs = 1;
  o.batch_size = 20;
  o.learning_rate = 0.05;
  o.seed = 7;
  o.threads = threads;
  o.output_dir = out;
  o.progress = nullptr;
  return o;
}

TEST(SimulatorTest, SameSeedSameModelWhateverTheThreadCount) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fs::path dir = fs::temp_directory_path() / ("tessera_simtest_" + std::to_string(getpid()));
  fs::remove_all(dir);
  ASSERT_OK_AND_ASSIGN(SimulationReport one, RunSimulation(Small(1, (dir / "one").string())));
  ASSERT_OK_AND_ASSIGN(SimulationReport two, RunSimulation(Small(2, (dir / "two").string())));
  ASSERT_EQ(one.rounds.size(), 3u);
  ASSERT_EQ(two.rounds.size(), 3u);
  for (size_t r = 0; r < 3; ++r) {
    EXPECT_EQ(one.rounds[r].sampled, 6);
    EXPECT_EQ(one.rounds[r].reported, 6);
    EXPECT_EQ(one.rounds[r].server_metrics.at("accuracy"), two.rounds[r].server_metrics.at("accuracy"));
  }
  ASSERT_OK_AND_ASSIGN(auto m1, core::ReadSafetensorsFile((dir / "one" / "models" / "model_v000003.safetensors").string()));
  ASSERT_OK_AND_ASSIGN(auto m2, core::ReadSafetensorsFile((dir / "two" / "models" / "model_v000003.safetensors").string()));
  ASSERT_OK_AND_ASSIGN(double diff, core::MaxAbsDiff(m1.weights, m2.weights));
  EXPECT_EQ(diff, 0.0);
  // Training moved the model: round 3's model differs from the initial one.
  ASSERT_OK_AND_ASSIGN(auto m0, core::ReadSafetensorsFile((dir / "one" / "models" / "model_v000000.safetensors").string()));
  ASSERT_OK_AND_ASSIGN(double moved, core::MaxAbsDiff(m0.weights, m1.weights));
  EXPECT_GT(moved, 1e-3);
  fs::remove_all(dir);
}

TEST(SimulatorTest, RefusesBadOptionsWithInvalidArgument) {
  SimulationOptions o = Small(1, "");
  o.num_clients = 0;
  EXPECT_CODE(RunSimulation(o), absl::StatusCode::kInvalidArgument);
  o = Small(1, "");
  o.fraction = 0;
  EXPECT_CODE(RunSimulation(o), absl::StatusCode::kInvalidArgument);
  o = Small(1, "");
  o.partition = "shards:0";
  EXPECT_CODE(RunSimulation(o), absl::StatusCode::kInvalidArgument);
  o = Small(1, "");
  o.dataset = "mnist-of-the-future";
  EXPECT_CODE(RunSimulation(o), absl::StatusCode::kInvalidArgument);
}

TEST(SimulatorTest, MissingDataDirectoryIsNotFound) {
  SimulationOptions o = Small(1, "");
  o.data_dir = "/nonexistent/fashion-mnist";
  EXPECT_CODE(RunSimulation(o), absl::StatusCode::kNotFound);
}

TEST(SimulatorTest, MoreClientsThanExamplesIsInvalidArgument) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  SimulationOptions o = Small(1, "");
  o.num_clients = 70000;
  o.partition = "iid";
  EXPECT_CODE(RunSimulation(o), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::simulations
