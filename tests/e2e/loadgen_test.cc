// `tessera loadgen` end to end, small: 300 virtual clients, 30 of them upload the 2NN's update
// through a coordinator capped at 4 concurrent uploads, so that some are shed and retried. The
// round must complete with every upload, no client lost, and the coordinator stopped cleanly.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/file_io.h"
#include "gmock/gmock.h"
#include "tests/testing/e2e.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using testing::kTessera;
using testing::MakeTempDir;
using testing::ReadLog;
using ::testing::HasSubstr;

TEST(LoadgenE2eTest, SmallRoundCompletesWithSheddingAndNoClientLost) {
  ASSERT_TRUE(fs::exists(kTessera)) << kTessera;
  const fs::path dir = MakeTempDir("loadgen");
  testing::Subprocess loadgen({kTessera, "loadgen", "--clients", "300", "--sampled", "30", "--model", "mlp",
                               "--duration", "50", "--max-concurrent-uploads", "4", "--output",
                               (dir / "out").string(), "--json", (dir / "report.json").string()},
                              (dir / "loadgen.log").string());
  ASSERT_TRUE(loadgen.started());
  auto code = loadgen.Wait(milliseconds(60'000));
  ASSERT_TRUE(code.has_value()) << "loadgen still running after 60 s\n" << ReadLog(dir / "loadgen.log");
  EXPECT_EQ(*code, 0) << ReadLog(dir / "loadgen.log") << ReadLog(dir / "out" / "coordinator.log");

  auto text = core::ReadFile((dir / "report.json").string());
  ASSERT_TRUE(text.ok()) << text.status() << "\n" << ReadLog(dir / "loadgen.log");
  const auto report = nlohmann::json::parse(*text);
  EXPECT_TRUE(report["round_completed"].get<bool>());
  EXPECT_EQ(report["round_reported"].get<int>(), 30);
  EXPECT_EQ(report["registered"].get<int>(), 300);
  EXPECT_EQ(report["clients_lost"].get<int>(), 0);
  EXPECT_EQ(report["uploads_ok"].get<int>(), 30);
  EXPECT_EQ(report["uploads_failed"].get<int>(), 0);
  EXPECT_GT(report["uploads_shed"].get<int>(), 0) << "30 uploads at once against a cap of 4";
  EXPECT_GT(report["heartbeats_ok"].get<int>(), 0);
  EXPECT_EQ(report["coordinator_exit"].get<int>(), 0);
  EXPECT_GT(report["coordinator_peak_rss_mb"].get<double>(), 0);
  EXPECT_THAT(ReadLog(dir / "loadgen.log"), HasSubstr("round completed         yes"));
}

TEST(LoadgenE2eTest, RefusesNonLoopbackAndUnboundedRuns) {
  const fs::path dir = MakeTempDir("loadgen_usage");
  struct Case {
    std::vector<std::string> flags;
    std::string says;
  };
  for (const Case& c : {Case{{"--address", "10.1.2.3"}, "loopback"}, Case{{"--clients", "20001"}, "--clients"},
                        Case{{"--duration", "5000"}, "--duration"}, Case{{"--sampled", "0"}, "--sampled"}}) {
    SCOPED_TRACE(c.flags[0]);
    std::vector<std::string> argv = {kTessera, "loadgen"};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    const fs::path log = dir / (c.flags[0].substr(2) + ".log");
    testing::Subprocess p(argv, log.string());
    auto code = p.Wait(milliseconds(20'000));
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 2) << ReadLog(log);
    EXPECT_THAT(ReadLog(log), HasSubstr(c.says));
  }
}

}  // namespace
}  // namespace tessera
