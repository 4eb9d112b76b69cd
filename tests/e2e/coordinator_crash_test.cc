// Crash safety at the process level: the coordinator is SIGKILLed in the middle of a round and
// started again with the same command; the round finishes with every update it had accepted
// counted exactly once, and real clients carry on against the restarted coordinator by
// themselves.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "aggregation/fedavg.h"
#include "client/grpc/grpc_channel.h"
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

// One line of metrics.jsonl per round.
std::vector<nlohmann::json> MetricsLines(const fs::path& out) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(out / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line, nullptr, false));
  return lines;
}

// `tessera coordinator` for this test, on `address`, logging to `log` (appended).
std::unique_ptr<testing::Subprocess> StartCoordinator(const fs::path& dir, const std::string& address,
                                                      const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {kTessera, "coordinator", "--insecure", "--address", address, "--port-file",
                                   (dir / "port").string(), "--model", "logreg", "--round-timeout", "120",
                                   "--linger", "2", "--output", (dir / "out").string(), "--log-level", "info"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  fs::remove(dir / "port");
  return std::make_unique<testing::Subprocess>(argv, (dir / "coordinator.log").string());
}

// The test plays four clients through the real gRPC channel, so it knows exactly which updates
// the coordinator acknowledged before it was killed.
TEST(CoordinatorCrashE2eTest, KilledAfterKAcceptedUpdatesTheRoundCountsEachOnce) {
  ASSERT_TRUE(fs::exists(kTessera)) << kTessera;
  const fs::path dir = MakeTempDir("crash_k");
  const std::vector<std::string> flags = {"--rounds", "1", "--min-clients", "4", "--fraction", "1.0",
                                          "--min-results", "4"};
  auto coordinator = StartCoordinator(dir, "127.0.0.1:0", flags);
  const int port = WaitForPort(dir / "port", *coordinator);
  ASSERT_GT(port, 0) << ReadLog(dir / "coordinator.log");
  const std::string address = "127.0.0.1:" + std::to_string(port);

  client::ChannelTlsOptions tls;
  tls.insecure = true;
  client::ChannelOptions options;
  options.retry.max_attempts = 40;  // rides out the restart
  options.retry.initial_backoff = absl::Milliseconds(50);
  options.retry.max_backoff = absl::Milliseconds(500);
  auto channel = client::GrpcCoordinatorChannel::Create(address, tls, options);
  ASSERT_TRUE(channel.ok()) << channel.status();

  const int kClients = 4, kAccepted = 2;
  std::vector<core::ClientId> ids;
  std::vector<core::TrainTask> tasks;
  for (int i = 0; i < kClients; ++i) {
    ids.push_back(core::ClientId{"device-" + std::to_string(i)});
    ASSERT_TRUE((*channel)->Register(ids.back(), {}).ok());
  }
  for (const auto& id : ids) {
    auto reply = (*channel)->PullTask(id, absl::Seconds(10));
    ASSERT_TRUE(reply.ok() && reply->task) << reply.status();
    tasks.push_back(*reply->task);
  }
  auto global = (*channel)->DownloadModel(ids[0], tasks[0]);
  ASSERT_TRUE(global.ok()) << global.status();

  // Each client's update: the global model shifted by its own constant.
  std::vector<core::ModelWeights> updates;
  std::vector<double> weights;
  for (int i = 0; i < kClients; ++i) {
    core::ModelWeights u = *global;
    for (auto& t : u.tensors) {
      for (float& v : t.mutable_f32()) v += 0.25f * static_cast<float>(i + 1);
    }
    updates.push_back(std::move(u));
    weights.push_back(100.0 * (i + 1));
  }
  auto upload = [&](int i) {
    core::TrainResult r;
    r.ref = tasks[i].ref;
    r.weights = updates[i];
    r.num_examples = static_cast<int64_t>(weights[i]);
    return (*channel)->UploadResult(ids[i], r);
  };
  for (int i = 0; i < kAccepted; ++i) {
    auto ack = upload(i);
    ASSERT_TRUE(ack.ok()) << ack.status();
    EXPECT_FALSE(ack->duplicate);
  }

  // k accepted updates, then the coordinator dies without a chance to clean up.
  coordinator->Signal(SIGKILL);
  ASSERT_TRUE(coordinator->Wait(milliseconds(10'000)).has_value());
  coordinator = StartCoordinator(dir, address, flags);
  ASSERT_GT(WaitForPort(dir / "port", *coordinator), 0) << ReadLog(dir / "coordinator.log");

  // A client that never heard its acknowledgement sends again: it is a duplicate, not a new vote.
  auto again = upload(0);
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << ReadLog(dir / "coordinator.log");
  EXPECT_TRUE(again->duplicate);
  for (int i = kAccepted; i < kClients; ++i) {
    auto ack = upload(i);
    ASSERT_TRUE(ack.ok()) << ack.status() << "\n" << ReadLog(dir / "coordinator.log");
    EXPECT_FALSE(ack->duplicate);
  }
  auto code = coordinator->Wait(milliseconds(30'000));
  ASSERT_TRUE(code.has_value()) << ReadLog(dir / "coordinator.log");
  ASSERT_EQ(*code, 0) << ReadLog(dir / "coordinator.log");

  std::vector<const core::ModelWeights*> ptrs;
  for (auto& u : updates) ptrs.push_back(&u);
  auto expected = aggregation::ReferenceWeightedMean(ptrs, weights);
  ASSERT_TRUE(expected.ok());
  auto v1 = core::ReadSafetensorsFile((dir / "out" / "models" / "model_v000001.safetensors").string());
  ASSERT_TRUE(v1.ok()) << v1.status();
  auto diff = core::MaxAbsDiff(v1->weights, *expected);
  ASSERT_TRUE(diff.ok());
  EXPECT_LE(*diff, 1e-5) << "an update was lost or counted twice";
  const auto lines = MetricsLines(dir / "out");
  ASSERT_EQ(lines.size(), 1u) << ReadLog(dir / "out" / "metrics.jsonl");
  EXPECT_EQ(lines[0]["outcome"], "completed");
  EXPECT_EQ(lines[0]["reported"], kClients);
  EXPECT_NE(ReadLog(dir / "coordinator.log").find("round 1 resumed: 2 of 4"), std::string::npos);
  fs::remove_all(dir);
}

// Real `tessera client` processes: the coordinator is killed while round 2 runs; restarted on
// the same address, it finishes the run with the same clients, which never restarted.
TEST(CoordinatorCrashE2eTest, ClientsCarryOnAgainstTheRestartedCoordinator) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fs::path dir = MakeTempDir("crash_clients");
  const std::vector<std::string> flags = {"--rounds", "3", "--min-clients", "3", "--fraction", "1.0",
                                          "--min-results", "3", "--local-epochs", "3", "--batch-size", "10"};
  auto coordinator = StartCoordinator(dir, "127.0.0.1:0", flags);
  const int port = WaitForPort(dir / "port", *coordinator);
  ASSERT_GT(port, 0) << ReadLog(dir / "coordinator.log");
  const std::string address = "127.0.0.1:" + std::to_string(port);

  std::vector<std::unique_ptr<testing::Subprocess>> clients;
  for (int k = 0; k < 3; ++k) {
    const std::string id = "phone-" + std::to_string(k);
    clients.push_back(std::make_unique<testing::Subprocess>(
        std::vector<std::string>{kTessera, "client", "--insecure", "--coordinator", address, "--id", id, "--model",
                                 "logreg", "--num-partitions", "20", "--partition-index", std::to_string(k),
                                 "--connect-attempts", "30", "--log-level", "info"},
        (dir / (id + ".log")).string()));
    ASSERT_TRUE(clients.back()->started());
  }
  // Round 1 done, round 2 under way: kill.
  for (int i = 0; i < 1200 && MetricsLines(dir / "out").empty(); ++i) std::this_thread::sleep_for(milliseconds(50));
  ASSERT_EQ(MetricsLines(dir / "out").size(), 1u) << ReadLog(dir / "coordinator.log");
  coordinator->Signal(SIGKILL);
  ASSERT_TRUE(coordinator->Wait(milliseconds(10'000)).has_value());
  std::this_thread::sleep_for(milliseconds(300));
  coordinator = StartCoordinator(dir, address, flags);
  ASSERT_GT(WaitForPort(dir / "port", *coordinator), 0) << ReadLog(dir / "coordinator.log");

  for (int k = 0; k < 3; ++k) {
    const fs::path log = dir / ("phone-" + std::to_string(k) + ".log");
    auto code = clients[k]->Wait(milliseconds(120'000));
    ASSERT_TRUE(code.has_value()) << ReadLog(log);
    EXPECT_EQ(*code, 0) << ReadLog(log);
  }
  auto code = coordinator->Wait(milliseconds(30'000));
  ASSERT_TRUE(code.has_value()) << ReadLog(dir / "coordinator.log");
  ASSERT_EQ(*code, 0) << ReadLog(dir / "coordinator.log");

  // Three rounds, in order, each completed by all three clients; versions moved only forward.
  const auto lines = MetricsLines(dir / "out");
  ASSERT_EQ(lines.size(), 3u) << ReadLog(dir / "out" / "metrics.jsonl");
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(lines[r]["round"], r + 1);
    EXPECT_EQ(lines[r]["outcome"], "completed") << lines[r].dump();
    EXPECT_EQ(lines[r]["reported"], 3) << lines[r].dump();
    EXPECT_EQ(lines[r]["model_version"], r + 1);
  }
  EXPECT_TRUE(fs::exists(dir / "out" / "models" / "model_v000003.safetensors"));
  const std::string log = ReadLog(dir / "coordinator.log");
  EXPECT_NE(log.find("resumed run"), std::string::npos);
  // The kill came while a round was open (round 2, unless the clients were quicker than the test).
  EXPECT_TRUE(log.find("round 2 resumed") != std::string::npos || log.find("round 3 resumed") != std::string::npos)
      << log;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
