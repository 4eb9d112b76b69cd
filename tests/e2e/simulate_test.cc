// The acceptance run, as a user types it: a simulated federation of 100 Fashion-MNIST
// clients (McMahan's 2NN, E=5, B=10, C=0.1) reaches 0.83 test accuracy in 10 rounds, writes
// metrics.jsonl and summary.json, and a second run with the same seed reproduces every
// round's accuracy exactly.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/testing/e2e.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::kFashionMnist;
using testing::kTessera;
using testing::MakeTempDir;
using testing::ReadLog;
using testing::WaitForPort;

std::vector<json> ReadJsonLines(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

// Runs the acceptance command into `out`, with `extra` flags; returns the exit code.
int RunAcceptance(const fs::path& out, const fs::path& log, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {kTessera, "simulate", "--clients", "100", "--fraction", "0.1", "--rounds", "10",
                                   "--model", "mlp", "--partition", "iid", "--local-epochs", "5", "--batch-size", "10",
                                   "--lr", "0.05", "--seed", "1", "--output", out.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  testing::Subprocess sim(args, log.string());
  auto code = sim.Wait(std::chrono::minutes(8));
  return code.value_or(-1);
}

TEST(SimulateAcceptanceTest, FashionMnistMlpReaches083AndIsReproducible) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fs::path dir = fs::temp_directory_path() / ("tessera_sim_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);

  ASSERT_EQ(RunAcceptance(dir / "a", dir / "a.log"), 0) << ReadLog(dir / "a.log");
  ASSERT_EQ(RunAcceptance(dir / "b", dir / "b.log"), 0) << ReadLog(dir / "b.log");

  auto a = ReadJsonLines(dir / "a" / "metrics.jsonl");
  auto b = ReadJsonLines(dir / "b" / "metrics.jsonl");
  ASSERT_EQ(a.size(), 10u);
  ASSERT_EQ(b.size(), 10u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["round"], i + 1);
    EXPECT_EQ(a[i]["sampled"], 10);
    EXPECT_EQ(a[i]["reported"], 10);
    EXPECT_TRUE(a[i].contains("loss") && a[i].contains("durations"));
    // Bit for bit: the JSON numbers are the same doubles.
    EXPECT_EQ(a[i]["accuracy"].get<double>(), b[i]["accuracy"].get<double>()) << "round " << i + 1;
    EXPECT_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>()) << "round " << i + 1;
  }
  const double final_accuracy = a.back()["accuracy"].get<double>();
  EXPECT_GE(final_accuracy, 0.83);

  json summary = json::parse(ReadLog(dir / "a" / "summary.json"));
  EXPECT_EQ(summary["final_accuracy"].get<double>(), final_accuracy);
  EXPECT_EQ(summary["rounds"], 10);
  EXPECT_EQ(summary["config"]["clients"], 100);
  EXPECT_GT(summary["wall_seconds"].get<double>(), 0);
  // Every global model version is on disk.
  EXPECT_TRUE(fs::exists(dir / "a" / "models" / "model_v000010.safetensors"));
  // A progress line per round on the terminal.
  const std::string log = ReadLog(dir / "a.log");
  EXPECT_NE(log.find("round  10/10"), std::string::npos) << log;
  fs::remove_all(dir);
}

// The same federation with SecAgg+ (a sparse graph: 4 neighbours of the 10 sampled clients)
// reaches the plain run's accuracy within one point over the same rounds: fixed-point
// encoding (16 bits over [-1, 1], stochastic rounding) costs no accuracy.
TEST(SimulateAcceptanceTest, SecureAggregationMatchesPlainAccuracy) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fs::path dir = fs::temp_directory_path() / ("tessera_sim_secure_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  ASSERT_EQ(RunAcceptance(dir / "plain", dir / "plain.log"), 0) << ReadLog(dir / "plain.log");
  ASSERT_EQ(RunAcceptance(dir / "secure", dir / "secure.log",
                          {"--secure-aggregation", "--secure-aggregation-neighbours", "4"}),
            0)
      << ReadLog(dir / "secure.log");
  auto plain = ReadJsonLines(dir / "plain" / "metrics.jsonl");
  auto secure = ReadJsonLines(dir / "secure" / "metrics.jsonl");
  ASSERT_EQ(plain.size(), 10u);
  ASSERT_EQ(secure.size(), 10u);
  for (const auto& round : secure) {
    EXPECT_EQ(round["outcome"], "completed");
    EXPECT_EQ(round["reported"], 10);
  }
  const double a = plain.back()["accuracy"].get<double>();
  const double b = secure.back()["accuracy"].get<double>();
  EXPECT_NEAR(b, a, 0.01) << "plain " << a << ", secure " << b;
  json summary = json::parse(ReadLog(dir / "secure" / "summary.json"));
  EXPECT_EQ(summary["config"]["secure_aggregation"], true);
  EXPECT_EQ(summary["config"]["secagg"]["neighbours"], 4);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
