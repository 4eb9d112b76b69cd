// A real deployment on loopback: one `tessera coordinator` and three `tessera client` processes
// run two rounds; the coordinator's final model must equal the FedAvg the test computes itself
// from the updates the clients uploaded (each client keeps an audit copy with --save-uploads).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "aggregation/fedavg.h"
#include "core/file_io.h"
#include "core/safetensors.h"
#include "tests/testing/e2e.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

using testing::kFashionMnist;
using testing::kTessera;
using testing::MakeTempDir;
using testing::ReadLog;
using testing::WaitForPort;

TEST(FederationE2eTest, CoordinatorModelEqualsFedAvgOfClientUploads) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  ASSERT_TRUE(fs::exists(kTessera)) << kTessera;
  const fs::path dir = MakeTempDir("fedavg");
  const fs::path out = dir / "coordinator";

  testing::Subprocess coordinator(
      {kTessera, "coordinator", "--insecure", "--address", "127.0.0.1:0", "--port-file", (dir / "port").string(),
       "--rounds", "2", "--min-clients", "3", "--fraction", "1.0", "--min-results", "3", "--model", "logreg",
       "--local-epochs", "1", "--batch-size", "20", "--lr", "0.05", "--round-timeout", "120", "--linger", "3",
       "--output", out.string(), "--log-level", "info"},
      (dir / "coordinator.log").string());
  ASSERT_TRUE(coordinator.started());
  const int port = WaitForPort(dir / "port", coordinator);
  ASSERT_GT(port, 0) << ReadLog(dir / "coordinator.log");

  std::vector<std::unique_ptr<testing::Subprocess>> clients;
  for (int k = 0; k < 3; ++k) {
    const std::string id = "client-" + std::to_string(k);
    clients.push_back(std::make_unique<testing::Subprocess>(
        std::vector<std::string>{kTessera, "client", "--insecure", "--coordinator",
                                 "127.0.0.1:" + std::to_string(port), "--id", id, "--model", "logreg",
                                 "--num-partitions", "30", "--partition-index", std::to_string(k),
                                 "--save-uploads", (dir / id).string(), "--log-level", "info"},
        (dir / (id + ".log")).string()));
    ASSERT_TRUE(clients.back()->started());
  }
  for (int k = 0; k < 3; ++k) {
    auto code = clients[k]->Wait(milliseconds(180'000));
    ASSERT_TRUE(code.has_value()) << "client " << k << " still running\n" << ReadLog(dir / ("client-" + std::to_string(k) + ".log"));
    EXPECT_EQ(*code, 0) << ReadLog(dir / ("client-" + std::to_string(k) + ".log"));
  }
  auto code = coordinator.Wait(milliseconds(60'000));
  ASSERT_TRUE(code.has_value()) << ReadLog(dir / "coordinator.log");
  ASSERT_EQ(*code, 0) << ReadLog(dir / "coordinator.log");

  // FedAvg of round 2's uploads, weighted by the num_examples each client declared.
  std::vector<core::ModelWeights> uploads;
  std::vector<double> weights;
  for (int k = 0; k < 3; ++k) {
    auto file = core::ReadSafetensorsFile((dir / ("client-" + std::to_string(k)) / "round_2.safetensors").string());
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ(file->metadata["round"], "2");
    uploads.push_back(std::move(file->weights));
    weights.push_back(std::stod(file->metadata["num_examples"]));
  }
  std::vector<const core::ModelWeights*> ptrs;
  for (auto& u : uploads) ptrs.push_back(&u);
  auto expected = aggregation::ReferenceWeightedMean(ptrs, weights);
  ASSERT_TRUE(expected.ok()) << expected.status();

  auto final_model = core::ReadSafetensorsFile((out / "models" / "model_v000002.safetensors").string());
  ASSERT_TRUE(final_model.ok()) << final_model.status();
  EXPECT_EQ(final_model->metadata["round"], "2");
  auto diff = core::MaxAbsDiff(final_model->weights, *expected);
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_LE(*diff, 1e-5);
  // The clients really trained: round 2's model moved away from round 1's.
  auto v1 = core::ReadSafetensorsFile((out / "models" / "model_v000001.safetensors").string());
  ASSERT_TRUE(v1.ok());
  EXPECT_GT(*core::MaxAbsDiff(v1->weights, final_model->weights), 1e-4);

  // metrics.jsonl has one line per round and summary.json exists.
  std::ifstream metrics(out / "metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line);) ++lines;
  EXPECT_EQ(lines, 2);
  EXPECT_TRUE(fs::exists(out / "summary.json"));
  fs::remove_all(dir);
}

TEST(FederationE2eTest, UnreachableCoordinatorIsOneLineErrorAndNonzeroExit) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fs::path dir = MakeTempDir("unreachable");
  // Port 1 on loopback: nothing listens there.
  testing::Subprocess client({kTessera, "client", "--insecure", "--coordinator", "127.0.0.1:1", "--id", "c",
                              "--model", "logreg", "--num-partitions", "100", "--connect-attempts", "2"},
                             (dir / "client.log").string());
  auto code = client.Wait(milliseconds(60'000));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  std::string log = ReadLog(dir / "client.log");
  EXPECT_NE(log.find("cannot reach the coordinator at 127.0.0.1:1"), std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
