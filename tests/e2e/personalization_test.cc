// Personalization acceptance (issue 5): a Fashion-MNIST federation of 100 clients with the
// shards:2 partition (each client sees ~2 classes). The mean over clients of each client's
// held-out accuracy with its personal model must beat the final global model's by at least 10
// points for finetune and fedper; ditto is reported alongside.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/file_io.h"
#include "tests/testing/e2e.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using testing::kFashionMnist;
using testing::kTessera;
using testing::MakeTempDir;
using testing::ReadLog;

struct Case {
  std::string name;
  std::vector<std::string> flags;
  double min_gain;  // personal - global, in accuracy
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class PersonalizationAcceptanceTest : public ::testing::TestWithParam<Case> {};

TEST_P(PersonalizationAcceptanceTest, PersonalModelsBeatTheGlobalOneOnNonIidClients) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const Case& c = GetParam();
  const fs::path dir = MakeTempDir("personal_" + c.name);
  std::vector<std::string> argv = {kTessera,     "simulate", "--clients", "100",     "--fraction", "0.1",
                                   "--rounds",   "10",       "--model",   "mlp",     "--partition", "shards:2",
                                   "--local-epochs", "1",    "--batch-size", "10", "--lr", "0.05",
                                   "--seed", "1", "--output", (dir / "out").string()};
  argv.insert(argv.end(), c.flags.begin(), c.flags.end());
  testing::Subprocess sim(argv, (dir / "log").string());
  auto code = sim.Wait(milliseconds(300'000));
  ASSERT_TRUE(code.has_value()) << ReadLog(dir / "log");
  ASSERT_EQ(*code, 0) << ReadLog(dir / "log");
  auto text = core::ReadFile((dir / "out" / "personalization.json").string());
  ASSERT_TRUE(text.ok()) << text.status() << ReadLog(dir / "log");
  const auto j = nlohmann::json::parse(*text);
  const double global = j["mean_global_accuracy"], personal = j["mean_personal_accuracy"];
  std::printf("%s: mean client accuracy global %.4f, personal %.4f (%d clients)\n", c.name.c_str(), global, personal,
              j["clients"].get<int>());
  EXPECT_EQ(j["clients"], 100);
  EXPECT_GE(personal - global, c.min_gain) << *text;
  // The personal models stayed on the clients' side (one directory each), never in the models/ store.
  EXPECT_TRUE(fs::exists(dir / "out" / "personal"));
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, PersonalizationAcceptanceTest,
    ::testing::Values(Case{"finetune", {"--personalization", "finetune", "--personalization-steps", "20"}, 0.10},
                      Case{"fedper", {"--personalization", "fedper"}, 0.10},
                      Case{"ditto", {"--personalization", "ditto", "--ditto-lambda", "0.1"}, 0.05}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Settings that cannot work are one-line usage errors.
TEST(PersonalizationFlagsTest, ImpossibleSettingsAreRefused) {
  const fs::path dir = MakeTempDir("personal_flags");
  const std::vector<std::vector<std::string>> bad = {
      {"--personalization", "sometimes"},
      {"--personalization", "ditto"},  // no lambda
      {"--personalization", "finetune"},  // no steps
      {"--personalization", "fedper", "--secure-aggregation"},
      {"--personalization", "finetune", "--personalization-steps", "5", "--private-layers", "fc3."},
      {"--proximal-mu", "-1"},
  };
  for (const auto& flags : bad) {
    std::vector<std::string> argv = {kTessera, "simulate", "--clients", "4", "--rounds", "1"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    fs::remove(dir / "log");
    testing::Subprocess sim(argv, (dir / "log").string());
    auto code = sim.Wait(milliseconds(60'000));
    ASSERT_TRUE(code.has_value());
    const std::string log = ReadLog(dir / "log");
    EXPECT_EQ(*code, 2) << flags[0] << " " << log;
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
