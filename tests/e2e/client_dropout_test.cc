// Clients killed mid-upload: one `tessera coordinator`, three honest `tessera client` processes
// and two stalling_uploader processes on loopback. Each stalling uploader opens its upload
// stream, sends half of its bytes and says so; the test then SIGKILLs it. The round must not
// wait for the dead: it completes at its deadline with the honest results (the killed clients
// counted dropped), or, with over-selection, as soon as the honest clients reach the target.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/testing/e2e.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;

using testing::kFashionMnist;
using testing::kTessera;
using testing::ReadLog;

const std::string kStallingUploader = std::string(TESSERA_BINARY_DIR) + "/tests/e2e/stalling_uploader";
constexpr int kHonest = 3;
constexpr int kStalling = 2;

// What the coordinator wrote to --output.
struct RunOutput {
  std::vector<json> rounds;  // metrics.jsonl, one object per round
  json summary;              // summary.json
};

// Runs a federation of kHonest clients and kStalling uploaders that are killed mid-upload, with
// `coordinator_flags` added to the coordinator's; returns its output once every process ended.
class ClientDropoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    ASSERT_TRUE(fs::exists(kTessera)) << kTessera;
    ASSERT_TRUE(fs::exists(kStallingUploader)) << kStallingUploader;
    dir_ = testing::MakeTempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }

  std::string Log(const std::string& name) const { return ReadLog(dir_ / (name + ".log")); }

  void RunFederation(const std::vector<std::string>& coordinator_flags, RunOutput* out) {
    const fs::path output = dir_ / "coordinator";
    std::vector<std::string> argv = {kTessera, "coordinator", "--insecure", "--address", "127.0.0.1:0",
                                     "--port-file", (dir_ / "port").string(), "--min-clients",
                                     std::to_string(kHonest + kStalling), "--fraction", "1.0", "--model", "logreg",
                                     "--local-epochs", "1", "--batch-size", "20", "--linger", "2", "--output",
                                     output.string(), "--log-level", "info"};
    argv.insert(argv.end(), coordinator_flags.begin(), coordinator_flags.end());
    testing::Subprocess coordinator(argv, (dir_ / "coordinator.log").string());
    ASSERT_TRUE(coordinator.started());
    const int port = testing::WaitForPort(dir_ / "port", coordinator);
    ASSERT_GT(port, 0) << Log("coordinator");
    const std::string address = "127.0.0.1:" + std::to_string(port);

    std::vector<std::unique_ptr<testing::Subprocess>> stalling, honest;
    for (int k = 0; k < kStalling; ++k) {
      const std::string id = "stalling-" + std::to_string(k);
      stalling.push_back(std::make_unique<testing::Subprocess>(
          std::vector<std::string>{kStallingUploader, address, id}, (dir_ / (id + ".log")).string()));
      ASSERT_TRUE(stalling.back()->started());
    }
    for (int k = 0; k < kHonest; ++k) {
      const std::string id = "client-" + std::to_string(k);
      honest.push_back(std::make_unique<testing::Subprocess>(
          std::vector<std::string>{kTessera, "client", "--insecure", "--coordinator", address, "--id", id, "--model",
                                   "logreg", "--num-partitions", "30", "--partition-index", std::to_string(k),
                                   "--log-level", "info"},
          (dir_ / (id + ".log")).string()));
      ASSERT_TRUE(honest.back()->started());
    }

    // Each stalling uploader dies the moment its upload is half sent.
    for (int k = 0; k < kStalling; ++k) {
      const std::string id = "stalling-" + std::to_string(k);
      ASSERT_TRUE(testing::WaitForLogText(dir_ / (id + ".log"), "stalled mid-upload", *stalling[k], milliseconds(60'000)))
          << id << " never got to its upload\n"
          << Log(id) << "--- coordinator:\n"
          << Log("coordinator");
      stalling[k]->Kill();
    }

    for (int k = 0; k < kHonest; ++k) {
      const std::string id = "client-" + std::to_string(k);
      auto code = honest[k]->Wait(milliseconds(60'000));
      ASSERT_TRUE(code.has_value()) << id << " still running\n" << Log(id) << "--- coordinator:\n" << Log("coordinator");
      EXPECT_EQ(*code, 0) << Log(id);
    }
    auto code = coordinator.Wait(milliseconds(30'000));
    ASSERT_TRUE(code.has_value()) << Log("coordinator");
    ASSERT_EQ(*code, 0) << Log("coordinator");

    std::ifstream metrics(output / "metrics.jsonl");
    for (std::string line; std::getline(metrics, line);) out->rounds.push_back(json::parse(line));
    out->summary = json::parse(ReadLog(output / "summary.json"), nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(out->summary.is_object()) << "summary.json\n" << Log("coordinator");
    for (int v = 1; v <= static_cast<int>(out->rounds.size()); ++v) {
      const fs::path model = output / "models" / ("model_v00000" + std::to_string(v) + ".safetensors");
      EXPECT_TRUE(fs::exists(model)) << model;
    }
  }

  fs::path dir_;
};

TEST_F(ClientDropoutTest, RoundCompletesAtItsDeadlineWithTheHonestResults) {
  constexpr double kDeadline = 8;
  RunOutput out;
  ASSERT_NO_FATAL_FAILURE(RunFederation({"--rounds", "1", "--min-results", "3", "--round-timeout", "8"}, &out));

  ASSERT_EQ(out.rounds.size(), 1u) << Log("coordinator");
  const json& r = out.rounds[0];
  EXPECT_EQ(r["outcome"], "completed") << r.dump();
  EXPECT_EQ(r["sampled"], kHonest + kStalling) << r.dump();
  EXPECT_EQ(r["reported"], kHonest) << r.dump();
  EXPECT_EQ(r["rejected"], 0) << r.dump();
  EXPECT_EQ(r["dropped"], kStalling) << r.dump();  // the killed uploads, counted at the deadline
  EXPECT_EQ(r["model_version"], 1) << r.dump();
  // It waited for the dead until the deadline (the ticker runs every 100 ms), and no longer.
  const double seconds = r["durations"]["round_seconds"].get<double>();
  EXPECT_GE(seconds, kDeadline) << r.dump();
  EXPECT_LT(seconds, kDeadline + 2) << r.dump();
  EXPECT_EQ(out.summary["completed_rounds"], 1) << out.summary.dump();
  EXPECT_EQ(out.summary["final_model_version"], 1) << out.summary.dump();
}

TEST_F(ClientDropoutTest, OverSelectionCompletesTheRoundsBeforeTheirDeadline) {
  // 5 sampled, over-selection 2: the round closes at ceil(5 / 2) = 3 valid results, i.e. the
  // honest clients'. Its deadline (120 s) is far beyond the test's bound.
  RunOutput out;
  ASSERT_NO_FATAL_FAILURE(
      RunFederation({"--rounds", "2", "--over-selection", "2", "--min-results", "3", "--round-timeout", "120"}, &out));

  ASSERT_EQ(out.rounds.size(), 2u) << Log("coordinator");
  for (int i = 0; i < 2; ++i) {
    const json& r = out.rounds[i];
    SCOPED_TRACE(r.dump());
    EXPECT_EQ(r["outcome"], "completed");
    // The dead are still registered (their liveness timeout is 30 s), so round 2 samples them too.
    EXPECT_EQ(r["sampled"], kHonest + kStalling);
    EXPECT_EQ(r["reported"], kHonest);
    EXPECT_EQ(r["rejected"], 0);
    // Closed by over-selection, not by the deadline: the killed clients are stragglers cut off,
    // not counted as dropped.
    EXPECT_EQ(r["dropped"], 0);
    EXPECT_EQ(r["model_version"], i + 1);
    EXPECT_LT(r["durations"]["round_seconds"].get<double>(), 20.0);
  }
  EXPECT_EQ(out.summary["completed_rounds"], 2) << out.summary.dump();
  EXPECT_EQ(out.summary["final_model_version"], 2) << out.summary.dump();
}

}  // namespace
}  // namespace tessera
