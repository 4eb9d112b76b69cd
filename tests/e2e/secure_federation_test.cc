// Secure aggregation over gRPC with separate processes: a `tessera coordinator
// --secure-aggregation` and four `tessera client` processes; one client is killed with SIGKILL
// while it trains (after the key stages, before its masked input). The round must complete with
// the other three, and the new model must equal the FedAvg of their updates within the
// fixed-point error, which needs the coordinator to rebuild the dead client's mask key from its
// neighbours' shares and remove its pairwise masks.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <thread>

#include "core/file_io.h"
#include "core/safetensors.h"
#include "tests/testing/e2e.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

using testing::kFashionMnist;
using testing::kTessera;
using testing::MakeTempDir;
using testing::ReadLog;
using testing::WaitForPort;

bool WaitForLog(const fs::path& log, const std::string& needle, testing::Subprocess& process, int timeout_ms) {
  for (int waited = 0; waited < timeout_ms; waited += 20) {
    if (ReadLog(log).find(needle) != std::string::npos) return true;
    if (process.Wait(milliseconds(20))) return false;
  }
  return false;
}

TEST(SecureFederationE2eTest, ClientKilledMidRoundIsRecoveredAndTheSumIsTheSurvivorsFedAvg) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fs::path dir = fs::temp_directory_path() / ("tessera_secure_e2e_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path out = dir / "coordinator";
  const fs::path coord_log = dir / "coordinator.log";

  testing::Subprocess coordinator(
      {kTessera, "coordinator", "--insecure", "--address", "127.0.0.1:0", "--port-file", (dir / "port").string(),
       "--rounds", "1", "--min-clients", "4", "--fraction", "1.0", "--model", "mlp", "--local-epochs", "1",
       "--batch-size", "20", "--lr", "0.05", "--round-timeout", "10", "--secure-aggregation",
       "--secure-aggregation-stage-timeout", "10", "--linger", "3", "--output", out.string(), "--log-level", "info"},
      coord_log.string());
  ASSERT_TRUE(coordinator.started());
  const int port = WaitForPort(dir / "port", coordinator);
  ASSERT_GT(port, 0) << ReadLog(coord_log);

  // Clients 0-2 train on a thirtieth of Fashion-MNIST each; client 3 (the victim) on all of it,
  // so that it is still training when it is killed.
  std::vector<std::unique_ptr<testing::Subprocess>> clients;
  for (int k = 0; k < 4; ++k) {
    const std::string id = "client-" + std::to_string(k);
    std::vector<std::string> args = {kTessera, "client", "--insecure", "--coordinator", "127.0.0.1:" + std::to_string(port),
                                     "--id", id, "--model", "mlp", "--save-uploads", (dir / id).string(),
                                     "--log-level", "info"};
    if (k < 3) {
      args.insert(args.end(), {"--num-partitions", "30", "--partition-index", std::to_string(k)});
    }
    clients.push_back(std::make_unique<testing::Subprocess>(args, (dir / (id + ".log")).string()));
    ASSERT_TRUE(clients.back()->started());
  }
  ASSERT_TRUE(WaitForLog(coord_log, "secure aggregation stage 1 closed", coordinator, 60'000)) << ReadLog(coord_log);
  std::this_thread::sleep_for(milliseconds(300));
  clients[3]->Signal(SIGKILL);
  EXPECT_EQ(clients[3]->Wait(milliseconds(5000)).value_or(-1), 128 + SIGKILL);

  for (int k = 0; k < 3; ++k) {
    auto code = clients[k]->Wait(milliseconds(120'000));
    ASSERT_TRUE(code.has_value()) << ReadLog(dir / ("client-" + std::to_string(k) + ".log"));
    EXPECT_EQ(*code, 0) << ReadLog(dir / ("client-" + std::to_string(k) + ".log"));
  }
  auto code = coordinator.Wait(milliseconds(60'000));
  ASSERT_TRUE(code.has_value()) << ReadLog(coord_log);
  ASSERT_EQ(*code, 0) << ReadLog(coord_log);
  // The victim never got its masked input in: no copy of a trained model from it.
  EXPECT_FALSE(fs::exists(dir / "client-3" / "round_1.safetensors"));

  auto v0 = core::ReadSafetensorsFile((out / "models" / "model_v000000.safetensors").string());
  auto v1 = core::ReadSafetensorsFile((out / "models" / "model_v000001.safetensors").string());
  ASSERT_TRUE(v0.ok() && v1.ok()) << ReadLog(coord_log);
  // Expected: v0 + sum_i n_i (w_i - v0) / sum_i n_i over the three survivors.
  std::vector<std::vector<double>> expected(v0->weights.tensors.size());
  for (size_t t = 0; t < expected.size(); ++t) expected[t].assign(v0->weights.tensors[t].numel(), 0.0);
  double total = 0;
  for (int k = 0; k < 3; ++k) {
    auto up = core::ReadSafetensorsFile((dir / ("client-" + std::to_string(k)) / "round_1.safetensors").string());
    ASSERT_TRUE(up.ok()) << up.status();
    const double n = std::stod(up->metadata["num_examples"]);
    total += n;
    for (size_t t = 0; t < expected.size(); ++t) {
      auto w = up->weights.tensors[t].f32();
      auto g = v0->weights.tensors[t].f32();
      for (size_t i = 0; i < w.size(); ++i) expected[t][i] += n * (static_cast<double>(w[i]) - g[i]);
    }
  }
  double max_diff = 0;
  for (size_t t = 0; t < expected.size(); ++t) {
    auto g = v0->weights.tensors[t].f32();
    auto got = v1->weights.tensors[t].f32();
    for (size_t i = 0; i < got.size(); ++i) {
      max_diff = std::max(max_diff, std::abs(got[i] - (g[i] + expected[t][i] / total)));
    }
  }
  // One fixed-point step (clip 1, 16 bits) plus float rounding.
  EXPECT_LE(max_diff, 2.0 / 65535 + 1e-5);
  const std::string log = ReadLog(coord_log);
  EXPECT_NE(log.find("completed  sampled   4  reported   3"), std::string::npos) << log;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
