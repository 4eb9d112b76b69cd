// The `tessera` binary as a user meets it: every mistake is one line on stderr and exit code 2 (bad usage or
// configuration) or 1 (a run that could not complete), never a stack trace or a help dump; a TOML config file
// sets flags and the command line wins over it; a small simulation writes metrics.jsonl and summary.json; and
// each file in examples/ is accepted by its subcommand; `tessera models` lists, shows and exports a run's versions.
//
// Each test runs the real binary in a child process, bounded in time, on loopback only. Runs that train use a
// tiny federation (4 clients, 1-2 rounds, logreg) and take about a second; tests that need Fashion-MNIST skip
// when dataset-fashion-mnist is not installed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "coordinator/model_store.h"
#include "coordinator/state_store.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace tessera::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using namespace std::chrono_literals;

const std::string kTessera = TESSERA_BINARY_DIR "/cli/tessera";
const std::string kExamples = TESSERA_SOURCE_DIR "/examples";
const std::string kFashionMnist = "/usr/share/datasets/fashion-mnist";

// A federation small enough to train in about a second.
const std::vector<std::string> kTiny = {"--clients",     "4",      "--fraction",     "0.5", "--rounds",     "1",
                                        "--model",       "logreg", "--local-epochs", "1",   "--batch-size", "50",
                                        "--server-eval", "false"};

#define SKIP_WITHOUT_FASHION_MNIST()                                               \
  if (!fs::is_directory(kFashionMnist)) {                                          \
    GTEST_SKIP() << "dataset-fashion-mnist is not installed at " << kFashionMnist; \
  }

std::string Slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::vector<json> ReadJsonLines(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line, nullptr, false));
  return out;
}

json ReadJson(const fs::path& path) { return json::parse(Slurp(path), nullptr, false); }

// A socket bound to a loopback port of the kernel's choice (-1 on failure); `port` receives it.
int BindLoopback(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    *port = ntohs(addr.sin_port);
    return fd;
  }
  ::close(fd);
  return -1;
}

// A loopback port nothing listens on: bound by the kernel's choice, then released.
int ClosedLoopbackPort() {
  int port = 1;
  if (int fd = BindLoopback(&port); fd >= 0) ::close(fd);
  return port;
}

// A loopback port another socket listens on while this object lives.
class TakenLoopbackPort {
 public:
  TakenLoopbackPort() : fd_(BindLoopback(&port_)) {
    if (fd_ >= 0) ::listen(fd_, 4);
  }
  ~TakenLoopbackPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  TakenLoopbackPort(const TakenLoopbackPort&) = delete;
  TakenLoopbackPort& operator=(const TakenLoopbackPort&) = delete;
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int port_ = 0;
  int fd_;
};

struct Outcome {
  int exit_code = -1;  // -1: did not finish in time (and was killed)
  std::string out;
  std::string err;
  std::vector<std::string> err_lines;
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  return os << "exit " << o.exit_code << "\n--- stdout:\n" << o.out << "--- stderr:\n" << o.err;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fs::exists(kTessera)) << kTessera << " is not built"; }

  // A tessera child process whose stdout and stderr go to separate files: a shell in front redirects stderr
  // and execs the binary, so the child's pid is tessera's own.
  struct Child {
    std::unique_ptr<testing::Subprocess> process;
    std::string out_path;
    std::string err_path;
  };
  Child Start(const std::vector<std::string>& args) {
    const int n = ++runs_;
    Child child{nullptr, tmp_.Join("run" + std::to_string(n) + ".out"), tmp_.Join("run" + std::to_string(n) + ".err")};
    std::vector<std::string> argv = {"/bin/sh", "-c", "err=$1; shift; exec \"$0\" \"$@\" 2>\"$err\"", kTessera,
                                     child.err_path};
    argv.insert(argv.end(), args.begin(), args.end());
    child.process = std::make_unique<testing::Subprocess>(argv, child.out_path);
    return child;
  }
  static Outcome Collect(const Child& child, std::optional<int> code) {
    Outcome o;
    o.exit_code = code.value_or(-1);
    o.out = Slurp(child.out_path);
    o.err = Slurp(child.err_path);
    o.err_lines = Lines(o.err);
    return o;
  }

  // Runs `tessera args...` to completion; a run past `timeout` is killed and reports exit -1.
  Outcome Tessera(const std::vector<std::string>& args, std::chrono::milliseconds timeout = 30s) {
    Child child = Start(args);
    EXPECT_TRUE(child.process->started());
    std::optional<int> code = child.process->Wait(timeout);
    child.process->Kill();
    return Collect(child, code);
  }

  // `tessera simulate` with the tiny federation and `extra`, which must not repeat kTiny's flags (a repeated
  // flag is a usage error).
  Outcome TinySimulate(std::vector<std::string> extra) {
    std::vector<std::string> args = {"simulate"};
    args.insert(args.end(), kTiny.begin(), kTiny.end());
    args.insert(args.end(), extra.begin(), extra.end());
    return Tessera(args);
  }

  std::string WriteConfig(const std::string& name, const std::string& text) {
    const std::string path = tmp_.Join(name);
    std::ofstream(path) << text;
    return path;
  }

  // Waits (bounded) for a port file to hold a port; -1 if the process exited first or never wrote it.
  static int WaitForPort(const fs::path& port_file, testing::Subprocess& process) {
    for (int i = 0; i < 400; ++i) {
      std::string text = Slurp(port_file);
      if (!text.empty()) return std::stoi(text);
      if (process.Wait(50ms)) return -1;
    }
    return -1;
  }

  testutil::ScopedTempDir tmp_;
  int runs_ = 0;
};

// A usage or configuration error: exit 2, one line on stderr starting "tessera", nothing on stdout.
void ExpectUsageError(const Outcome& o) {
  EXPECT_EQ(o.exit_code, 2) << o;
  EXPECT_EQ(o.err_lines.size(), 1u) << o;
  EXPECT_THAT(o.err, StartsWith("tessera")) << o;
  EXPECT_EQ(o.out, "") << o;
}

// ---------------------------------------------------------------------------------------- bad usage

TEST_F(CliTest, UnknownFlagIsOneLineUsageError) {
  Outcome o = Tessera({"simulate", "--no-such-flag"});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, HasSubstr("--no-such-flag"));
}

TEST_F(CliTest, NonNumericClientsIsOneLineUsageError) {
  Outcome o = Tessera({"simulate", "--clients", "many"});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, AllOf(HasSubstr("--clients"), HasSubstr("many")));
}

TEST_F(CliTest, FractionOutsideZeroToOneIsRejected) {
  for (const char* fraction : {"0", "1.5"}) {
    SCOPED_TRACE(fraction);
    Outcome o = Tessera({"simulate", "--fraction", fraction});
    ExpectUsageError(o);
    EXPECT_THAT(o.err, HasSubstr("--fraction"));
  }
}

TEST_F(CliTest, ZeroOrNegativeRoundsIsRejected) {
  for (const char* rounds : {"0", "-1"}) {
    SCOPED_TRACE(rounds);
    Outcome o = Tessera({"simulate", "--rounds", rounds});
    ExpectUsageError(o);
    EXPECT_THAT(o.err, HasSubstr("--rounds"));
  }
}

TEST_F(CliTest, UnknownPartitionIsRejectedQuotingIt) {
  for (const char* partition : {"shards:0", "foo"}) {
    SCOPED_TRACE(partition);
    Outcome o = Tessera({"simulate", "--partition", partition});
    ExpectUsageError(o);
    EXPECT_THAT(o.err, HasSubstr(std::string("'") + partition + "'"));
  }
}

TEST_F(CliTest, UnknownModelIsRejectedNamingIt) {
  SKIP_WITHOUT_FASHION_MNIST();  // the data is loaded before the model is built
  Outcome o = Tessera({"simulate", "--clients", "4", "--rounds", "1", "--model", "resnet9000"});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, HasSubstr("'resnet9000'"));
}

TEST_F(CliTest, MissingDataDirNamesItAndThePackage) {
  const std::string missing = tmp_.Join("no-such-data");
  Outcome o = Tessera({"simulate", "--data-dir", missing});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, AllOf(HasSubstr(missing), HasSubstr("dataset-fashion-mnist"), HasSubstr("NOT_FOUND")));
}

TEST_F(CliTest, UnknownLogLevelIsRejected) {
  Outcome o = Tessera({"simulate", "--log-level", "loud"});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, AllOf(HasSubstr("--log-level"), HasSubstr("loud")));
}

TEST_F(CliTest, ClientWithoutIdIsRejected) {
  Outcome o = Tessera({"client", "--insecure", "--coordinator", "127.0.0.1:1"});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, HasSubstr("--id"));
}

// --serve / --serve-grpc on a port another process listens on: exit 1 with one line, before
// the client contacts the coordinator (none runs here); a malformed address is a usage error.
TEST_F(CliTest, ClientRefusesToServeOnATakenPortOrAMalformedAddress) {
  SKIP_WITHOUT_FASHION_MNIST();  // the data is loaded before the servers start
  TakenLoopbackPort taken;
  const std::vector<std::string> client = {"client", "--insecure", "--coordinator", "127.0.0.1:1", "--id", "c0",
                                           "--model", "logreg", "--num-partitions", "60"};
  for (const char* flag : {"--serve", "--serve-grpc"}) {
    SCOPED_TRACE(flag);
    std::vector<std::string> args = client;
    args.insert(args.end(), {flag, taken.address()});
    Outcome o = Tessera(args, 60s);
    EXPECT_EQ(o.exit_code, 1) << o;
    ASSERT_EQ(o.err_lines.size(), 1u) << o;
    EXPECT_THAT(o.err, HasSubstr("cannot listen on " + taken.address() + ": Address already in use")) << o;
    EXPECT_EQ(o.out, "") << o;
    args.back() = "no-port";
    ExpectUsageError(Tessera(args, 60s));
  }
}

TEST_F(CliTest, CoordinatorWithoutTlsOrInsecureRefusesToStart) {
  Outcome o = Tessera({"coordinator", "--address", "127.0.0.1:0", "--model", "logreg"}, 20s);
  ExpectUsageError(o);
  EXPECT_THAT(o.err, AllOf(HasSubstr("TLS"), HasSubstr("--insecure")));
}

TEST_F(CliTest, BadUploadCapsAreRejectedNamingTheFlag) {
  struct Case {
    std::vector<std::string> flags;
    std::string flag;
  };
  for (const Case& c : {Case{{"--max-concurrent-uploads", "0"}, "--max-concurrent-uploads"},
                        Case{{"--max-concurrent-uploads", "1000001"}, "--max-concurrent-uploads"},
                        Case{{"--max-concurrent-downloads", "0"}, "--max-concurrent-downloads"},
                        Case{{"--upload-memory-mb", "-1"}, "--upload-memory-mb"},
                        // 1 MiB cannot hold one upload of the 6.65 MB CNN
                        Case{{"--model", "cnn", "--upload-memory-mb", "1"}, "--upload-memory-mb"}}) {
    SCOPED_TRACE(c.flags[1]);
    std::vector<std::string> args = {"coordinator", "--insecure", "--address", "127.0.0.1:0"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    Outcome o = Tessera(args, 30s);
    ExpectUsageError(o);
    EXPECT_THAT(o.err, HasSubstr(c.flag));
  }
}

TEST_F(CliTest, BadInputShapeIsRejectedQuotingIt) {
  for (const char* shape : {"1,x,28", "0,28,28", "1,,28", ""}) {
    SCOPED_TRACE(shape);
    Outcome o = Tessera({"coordinator", "--insecure", "--address", "127.0.0.1:0", "--input-shape", shape}, 20s);
    ExpectUsageError(o);
    EXPECT_THAT(o.err, HasSubstr("--input-shape"));
  }
}

TEST_F(CliTest, HelpExitsZeroOnStdout) {
  Outcome top = Tessera({"--help"});
  EXPECT_EQ(top.exit_code, 0) << top;
  EXPECT_THAT(top.out, AllOf(HasSubstr("simulate"), HasSubstr("coordinator"), HasSubstr("client")));
  EXPECT_EQ(top.err, "");

  Outcome sim = Tessera({"simulate", "--help"});
  EXPECT_EQ(sim.exit_code, 0) << sim;
  EXPECT_THAT(sim.out, AllOf(HasSubstr("--fraction"), HasSubstr("--config")));
  EXPECT_EQ(sim.err, "");
}

TEST_F(CliTest, NoSubcommandIsOneLineError) {
  Outcome o = Tessera({});
  EXPECT_NE(o.exit_code, 0) << o;
  EXPECT_NE(o.exit_code, -1) << o;
  EXPECT_EQ(o.err_lines.size(), 1u) << o;
  EXPECT_EQ(o.out, "") << o;  // no help dump
}

// A data directory whose training images are damaged: the run fails with one line naming the file, not with a
// crash or a zlib message without context.
TEST_F(CliTest, CorruptImagesFileIsOneLineNamingIt) {
  SKIP_WITHOUT_FASHION_MNIST();
  const fs::path data = tmp_.Join("corrupt");
  fs::create_directories(data);
  for (const char* name : {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    fs::copy_file(fs::path(kFashionMnist) / name, data / name);
  }
  const std::string real_images = Slurp(fs::path(kFashionMnist) / "train-images-idx3-ubyte.gz");
  ASSERT_GT(real_images.size(), 1000u);
  // A download cut short (a valid gzip prefix), then a file that is not gzip at all.
  for (const std::string& bytes : {real_images.substr(0, 1000), std::string("abc")}) {
    SCOPED_TRACE(bytes.size());
    std::ofstream(data / "train-images-idx3-ubyte.gz", std::ios::binary | std::ios::trunc) << bytes;
    Outcome o = TinySimulate({"--data-dir", data.string()});
    EXPECT_NE(o.exit_code, 0) << o;
    EXPECT_NE(o.exit_code, -1) << o;
    EXPECT_EQ(o.err_lines.size(), 1u) << o;
    EXPECT_THAT(o.err, HasSubstr("train-images-idx3-ubyte.gz")) << o;
  }
}

// ------------------------------------------------------------------------------------------ success

TEST_F(CliTest, TinySimulationWritesMetricsSummaryAndProgress) {
  SKIP_WITHOUT_FASHION_MNIST();
  const fs::path out = tmp_.Join("out");
  // Two rounds, with server evaluation, replacing kTiny's choices.
  Outcome o = Tessera({"simulate", "--clients", "4", "--fraction", "0.5", "--rounds", "2", "--model", "logreg",
                       "--local-epochs", "1", "--batch-size", "50", "--output", out.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  EXPECT_EQ(o.err, "");

  std::vector<json> rounds = ReadJsonLines(out / "metrics.jsonl");
  ASSERT_EQ(rounds.size(), 2u) << Slurp(out / "metrics.jsonl");
  for (size_t i = 0; i < rounds.size(); ++i) {
    const json& r = rounds[i];
    SCOPED_TRACE(r.dump());
    ASSERT_TRUE(r.is_object());
    EXPECT_EQ(r["round"], i + 1);
    EXPECT_EQ(r["sampled"], 2);  // 0.5 of 4
    EXPECT_EQ(r["reported"], 2);
    ASSERT_TRUE(r["accuracy"].is_number());
    EXPECT_GT(r["accuracy"].get<double>(),
              0.5);  // logreg on Fashion-MNIST, one epoch of 2 clients
    EXPECT_LE(r["accuracy"].get<double>(), 1.0);
    ASSERT_TRUE(r["loss"].is_number());
    EXPECT_GT(r["loss"].get<double>(), 0.0);
    ASSERT_TRUE(r["durations"].is_object());
    EXPECT_TRUE(r["durations"]["round_seconds"].is_number());
  }

  json summary = ReadJson(out / "summary.json");
  ASSERT_TRUE(summary.is_object()) << Slurp(out / "summary.json");
  EXPECT_EQ(summary["rounds"], 2);
  EXPECT_EQ(summary["final_accuracy"], rounds.back()["accuracy"]);
  EXPECT_EQ(summary["final_loss"], rounds.back()["loss"]);
  ASSERT_TRUE(summary["wall_seconds"].is_number());
  EXPECT_GT(summary["wall_seconds"].get<double>(), 0.0);
  ASSERT_TRUE(summary["config"].is_object());
  EXPECT_EQ(summary["config"]["clients"], 4);
  EXPECT_EQ(summary["config"]["model"], "logreg");

  int progress_lines = 0;
  for (const std::string& line : Lines(o.out)) {
    if (line.rfind("round ", 0) == 0) ++progress_lines;
  }
  EXPECT_EQ(progress_lines, 2) << o;
}

TEST_F(CliTest, QuietPrintsNothingButStillWritesMetrics) {
  SKIP_WITHOUT_FASHION_MNIST();
  const fs::path out = tmp_.Join("out");
  Outcome o = TinySimulate({"--quiet", "--output", out.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  EXPECT_EQ(o.out, "");
  EXPECT_EQ(o.err, "");
  EXPECT_EQ(ReadJsonLines(out / "metrics.jsonl").size(), 1u);
}

// ------------------------------------------------------------------------------------- config files

// The settings of the tiny federation, as a config file would write them (dashes and underscores).
const char kTinyToml[] =
    "clients = 4\n"
    "fraction = 0.5\n"
    "model = \"logreg\"\n"
    "local_epochs = 1\n"
    "batch-size = 50\n"
    "server_eval = false\n"
    "quiet = true\n";

TEST_F(CliTest, ConfigFileSetsFlagsWithDashesOrUnderscores) {
  SKIP_WITHOUT_FASHION_MNIST();
  const std::string config =
      WriteConfig("tiny.toml", std::string(kTinyToml) + "rounds = 2\nclient-test-fraction = 0.2\n");
  const fs::path out = tmp_.Join("out");
  Outcome o = Tessera({"simulate", "--config", config, "--output", out.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  EXPECT_EQ(o.out, "");  // quiet = true

  json c = ReadJson(out / "summary.json")["config"];
  EXPECT_EQ(c["rounds"], 2);
  EXPECT_EQ(c["clients"], 4);
  EXPECT_EQ(c["model"], "logreg");
  EXPECT_EQ(c["local_epochs"], 1);
  EXPECT_EQ(c["batch_size"], 50);
  EXPECT_EQ(c["server_eval"], false);
  EXPECT_EQ(c["client_test_fraction"], 0.2);
  EXPECT_EQ(ReadJsonLines(out / "metrics.jsonl").size(), 2u);
}

TEST_F(CliTest, StrategyFromFlagOrStrategyTableRunsAndIsRecorded) {
  SKIP_WITHOUT_FASHION_MNIST();
  const std::string config =
      WriteConfig("fedadam.toml", std::string(kTinyToml) + "[strategy]\nname = \"fedadam\"\nserver_lr = 0.02\n");
  const fs::path adam = tmp_.Join("adam");
  Outcome o = Tessera({"simulate", "--config", config, "--output", adam.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  json c = ReadJson(adam / "summary.json")["config"];
  EXPECT_EQ(c["strategy"], "fedadam");
  EXPECT_EQ(c["server_lr"], 0.02);

  const fs::path median = tmp_.Join("median");
  o = TinySimulate({"--strategy", "median", "--quiet", "--output", median.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  EXPECT_EQ(ReadJson(median / "summary.json")["config"]["strategy"], "median");
  std::vector<json> rounds = ReadJsonLines(median / "metrics.jsonl");
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0]["outcome"], "completed") << rounds[0].dump();
}

// Byzantine clients (--attackers upload their update reversed and scaled by 10): one of five breaks
// FedAvg, while the coordinate-wise median of the five keeps learning.
TEST_F(CliTest, AnAttackerBreaksFedAvgButNotTheMedian) {
  SKIP_WITHOUT_FASHION_MNIST();
  auto accuracy = [&](const std::string& strategy) {
    const fs::path out = tmp_.Join(strategy);
    Outcome o = Tessera({"simulate", "--clients", "5", "--fraction", "1", "--rounds", "1", "--model", "logreg",
                         "--local-epochs", "1", "--batch-size", "50", "--attackers", "1", "--strategy", strategy,
                         "--quiet", "--output", out.string()});
    EXPECT_EQ(o.exit_code, 0) << o;
    return ReadJson(out / "summary.json")["final_accuracy"].get<double>();
  };
  const double mean = accuracy("fedavg");
  const double median = accuracy("median");
  EXPECT_GT(median, 0.6);
  EXPECT_LT(mean, median - 0.3);
}

// Each attack by one of five clients: plain FedAvg ends below every robust rule (the ordering, not
// exact figures). Scaling (model replacement) is left out: in one round its boosted update is
// still an honest direction and FedAvg barely suffers.
TEST_F(CliTest, EachAttackHurtsFedAvgMoreThanTheRobustRules) {
  SKIP_WITHOUT_FASHION_MNIST();
  auto accuracy = [&](const std::string& attack, const std::vector<std::string>& strategy) {
    const fs::path out = tmp_.Join(attack + "-" + strategy[0]);
    std::vector<std::string> args = {"simulate", "--clients", "5", "--fraction", "1", "--rounds", "1", "--model",
                                     "logreg", "--local-epochs", "1", "--batch-size", "50", "--attackers", "1",
                                     "--attack", attack, "--quiet", "--output", out.string(), "--strategy"};
    args.insert(args.end(), strategy.begin(), strategy.end());
    Outcome o = Tessera(args);
    EXPECT_EQ(o.exit_code, 0) << o;
    return ReadJson(out / "summary.json")["final_accuracy"].get<double>();
  };
  for (const std::string attack : {"sign-flip", "gaussian", "label-flip"}) {
    const double fedavg = accuracy(attack, {"fedavg"});
    for (const auto& robust : std::vector<std::vector<std::string>>{
             {"median"}, {"trimmed-mean", "--trim-fraction", "0.2"}, {"krum", "--byzantine", "1"}}) {
      EXPECT_GT(accuracy(attack, robust), fedavg + 0.02) << attack << " against " << robust[0];
    }
  }
  Outcome bad = Tessera({"simulate", "--clients", "5", "--attackers", "1", "--attack", "bribery"});
  EXPECT_EQ(bad.exit_code, 2) << bad;
}

TEST_F(CliTest, CommandLineWinsOverConfigFile) {
  SKIP_WITHOUT_FASHION_MNIST();
  const std::string config = WriteConfig("tiny.toml", std::string(kTinyToml) + "rounds = 3\nseed = 7\nlr = 0.5\n");
  const fs::path out = tmp_.Join("out");
  Outcome o = Tessera({"simulate", "--config", config, "--rounds", "1", "--lr", "0.1", "--output", out.string()});
  ASSERT_EQ(o.exit_code, 0) << o;

  json c = ReadJson(out / "summary.json")["config"];
  EXPECT_EQ(c["rounds"], 1);   // flag over file
  EXPECT_EQ(c["lr"], 0.1);     // flag over file
  EXPECT_EQ(c["seed"], 7);     // file only
  EXPECT_EQ(c["clients"], 4);  // file only
  EXPECT_EQ(ReadJsonLines(out / "metrics.jsonl").size(), 1u);
}

TEST_F(CliTest, SimulateTableAppliesAndCoordinatorTableIsIgnored) {
  SKIP_WITHOUT_FASHION_MNIST();
  const std::string config = WriteConfig("tables.toml", std::string(kTinyToml) +
                                                            "rounds = 1\n"
                                                            "[simulate]\n"
                                                            "seed = 9\n"
                                                            "[coordinator]\n"
                                                            "port_file = \"port\"\n"  // not a simulate flag
                                                            "min_clients = 3\n");
  const fs::path out = tmp_.Join("out");
  Outcome o = Tessera({"simulate", "--config", config, "--output", out.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  EXPECT_EQ(ReadJson(out / "summary.json")["config"]["seed"], 9);
}

// The subcommand's own table is the more specific setting, so it should win over the top level for every key.
// Regression: keys were applied in the table's (alphabetical) order and the first value applied won, so a
// top-level key that sorts before "simulate" ("rounds") beat [simulate], while one after it ("threads") lost.
TEST_F(CliTest, SimulateTableWinsOverTopLevelWhateverTheKeyName) {
  SKIP_WITHOUT_FASHION_MNIST();
  const std::string config = WriteConfig("both.toml", std::string(kTinyToml) +
                                                          "rounds = 2\n"
                                                          "threads = 2\n"
                                                          "[simulate]\n"
                                                          "rounds = 1\n"
                                                          "threads = 1\n");
  const fs::path out = tmp_.Join("out");
  Outcome o = Tessera({"simulate", "--config", config, "--output", out.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  json c = ReadJson(out / "summary.json")["config"];
  EXPECT_EQ(c["threads"], 1);
  EXPECT_EQ(c["rounds"], 1);
}

TEST_F(CliTest, UnknownConfigKeyNamesKeyAndFile) {
  const std::string config = WriteConfig("unknown.toml", "rounds = 1\nnum_rounds = 5\n");
  Outcome o = Tessera({"simulate", "--config", config});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, AllOf(HasSubstr(config), HasSubstr("'num_rounds'")));
}

TEST_F(CliTest, NestedTableInSubcommandTableIsRejected) {
  const std::string config = WriteConfig("nested.toml", "[simulate]\nrounds = 1\n[simulate.extra]\nx = 1\n");
  Outcome o = Tessera({"simulate", "--config", config});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, AllOf(HasSubstr(config), HasSubstr("extra")));
}

TEST_F(CliTest, ConfigSyntaxErrorGivesFileLineAndColumn) {
  const std::string config = WriteConfig("syntax.toml", "rounds = 1\nclients = = 4\nseed = 1\n");
  Outcome o = Tessera({"simulate", "--config", config});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, ::testing::ContainsRegex(config + ":2:[0-9]+: "));
}

TEST_F(CliTest, ConfigValueOfWrongTypeNamesKey) {
  const std::string config = WriteConfig("type.toml", "rounds = \"many\"\n");
  Outcome o = Tessera({"simulate", "--config", config});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, AllOf(HasSubstr(config), HasSubstr("'rounds'")));

  const std::string array = WriteConfig("array.toml", "clients = [1, 2]\n");
  Outcome a = Tessera({"simulate", "--config", array});
  ExpectUsageError(a);
  EXPECT_THAT(a.err, AllOf(HasSubstr(array), HasSubstr("'clients'")));
}

TEST_F(CliTest, MissingConfigFileIsUsageError) {
  const std::string missing = tmp_.Join("missing.toml");
  Outcome o = Tessera({"simulate", "--config", missing});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, HasSubstr(missing));
}

// A directory given as --config (e.g. `--config examples/`) must not run with every default. Regression:
// only existence was checked, and toml++ parses a directory as an empty document.
TEST_F(CliTest, ConfigThatIsADirectoryIsUsageError) {
  const std::string dir = tmp_.Join("config-dir");
  fs::create_directories(dir);
  Outcome o = TinySimulate({"--quiet", "--config", dir});
  ExpectUsageError(o);
  EXPECT_THAT(o.err, HasSubstr(dir));
}

// Bad values for `tessera coordinator` and `tessera client`, on the command line or in a config file:
// each is one line naming what is wrong, exit 2, before anything listens or dials.
struct BadArgs {
  std::vector<std::string> args;
  std::string named;  // the error names this
};

class BadValueTest : public CliTest {
 protected:
  static std::vector<std::string> Concat(std::vector<std::string> base, const std::vector<std::string>& extra) {
    base.insert(base.end(), extra.begin(), extra.end());
    return base;
  }
  void ExpectEachRefused(const std::vector<BadArgs>& cases) {
    for (const BadArgs& c : cases) {
      SCOPED_TRACE(::testing::PrintToString(c.args));
      Outcome o = Tessera(c.args, 20s);
      ExpectUsageError(o);
      EXPECT_THAT(o.err, HasSubstr(c.named));
    }
  }
};

TEST_F(BadValueTest, CoordinatorFlags) {
  auto with = [](std::vector<std::string> extra) {
    return Concat({"coordinator", "--insecure", "--address", "127.0.0.1:0"}, extra);
  };
  ExpectEachRefused({{with({"--rounds", "-1"}), "--rounds"},
                     {with({"--rounds", "1.5"}), "--rounds"},
                     {with({"--fraction", "0"}), "fraction"},
                     {with({"--fraction", "1.5"}), "fraction"},
                     {with({"--over-selection", "0.5"}), "over-selection"},
                     {with({"--min-clients", "0"}), "--min-clients"},
                     {with({"--round-timeout", "-3"}), "--round-timeout"},
                     {with({"--max-num-examples", "0"}), "--max-num-examples"},
                     // Regression: refused with a message about the other four flags.
                     {with({"--linger", "-1"}), "--linger"},
                     {with({"--lr", "-1"}), "learning rate"},
                     {with({"--allow-list", tmp_.Join("missing.txt")}), tmp_.Join("missing.txt")}});
}

TEST_F(BadValueTest, CoordinatorConfigFiles) {
  const std::string unknown = WriteConfig("c-unknown.toml", "[coordinator]\nrounds = 1\nnum_rounds = 5\n");
  const std::string type = WriteConfig("c-type.toml", "[coordinator]\nfraction = \"half\"\n");
  const std::string negative = WriteConfig("c-negative.toml", "rounds = -3\n");
  const std::string missing = tmp_.Join("c-missing.toml");
  ExpectEachRefused({{{"coordinator", "--insecure", "--config", unknown}, "'num_rounds'"},
                     {{"coordinator", "--insecure", "--config", type}, "'fraction'"},
                     {{"coordinator", "--insecure", "--config", negative}, "--rounds"},
                     {{"coordinator", "--insecure", "--config", missing}, missing}});
}

// --strategy and its parameters: a bad combination is one line and exit 2, before any data is read or any
// port is bound (the data directory given does not exist: had the strategy been accepted, the error would
// name it instead).
TEST_F(BadValueTest, StrategyCombinations) {
  auto sim = [&](std::vector<std::string> extra) {
    return Concat({"simulate", "--data-dir", tmp_.Join("no-data")}, extra);
  };
  auto coord = [](std::vector<std::string> extra) {
    return Concat({"coordinator", "--insecure", "--address", "127.0.0.1:0"}, extra);
  };
  const std::string table = WriteConfig("s-table.toml", "[strategy]\nname = \"fedadam\"\ntrim_fraction = 0.2\n");
  ExpectEachRefused({{sim({"--strategy", "fedsgd"}), "'fedsgd'"},
                     {sim({"--strategy", "fedadam", "--trim-fraction", "0.2"}), "--trim-fraction does not apply"},
                     {sim({"--server-lr", "0.5"}), "--server-lr does not apply to --strategy fedavg"},
                     {sim({"--strategy", "fedyogi", "--beta2", "1"}), "beta2"},
                     {sim({"--strategy", "median", "--secure-aggregation"}), "--secure-aggregation"},
                     {sim({"--strategy", "krum", "--clients", "10", "--fraction", "0.2"}), "only 2 results"},
                     {sim({"--strategy", "norm-bound"}), "needs --norm-bound"},
                     {sim({"--config", table}), "--trim-fraction does not apply"},
                     {coord({"--strategy", "bulyan", "--min-clients", "5"}), "4f + 3"},
                     {coord({"--strategy", "trimmed-mean", "--secure-aggregation", "--min-clients", "10"}), "--secure-aggregation"}});
}

TEST_F(BadValueTest, ClientFlagsAndConfigFiles) {
  auto with = [](std::vector<std::string> extra) {
    return Concat({"client", "--insecure", "--coordinator", "127.0.0.1:1", "--id", "a"}, extra);
  };
  const std::string unknown = WriteConfig("cl-unknown.toml", "[client]\nnum_rounds = 5\n");
  const std::string type = WriteConfig("cl-type.toml", "num_partitions = \"many\"\n");
  const std::string missing = tmp_.Join("cl-missing.toml");
  ExpectEachRefused({{with({"--num-partitions", "0"}), "--num-partitions"},
                     {with({"--partition-index", "3", "--num-partitions", "3"}), "--partition-index"},
                     {with({"--connect-attempts", "0"}), "--connect-attempts"},
                     // Regression: accepted, and the client went on to load its data and dial.
                     {with({"--test-fraction", "1.5"}), "--test-fraction"},
                     {with({"--config", unknown}), "'num_rounds'"},
                     {with({"--config", type}), "'num_partitions'"},
                     {with({"--config", missing}), missing}});
}

// ----------------------------------------------------------------------------------------- examples

class ExampleTest : public CliTest {
 protected:
  // Runs an examples/ simulate config with flags that make it tiny; returns summary.json's config.
  json RunSimulateExample(const std::string& example) {
    const fs::path out = tmp_.Join("out");
    Outcome o =
        Tessera({"simulate", "--config", kExamples + "/" + example, "--rounds", "1", "--clients", "4", "--fraction",
                 "0.5", "--local-epochs", "1", "--batch-size", "100", "--quiet", "--output", out.string()},
                60s);
    EXPECT_EQ(o.exit_code, 0) << o;
    EXPECT_EQ(o.err, "") << o;
    EXPECT_EQ(ReadJsonLines(out / "metrics.jsonl").size(), 1u);
    return ReadJson(out / "summary.json")["config"];
  }
};

TEST_F(ExampleTest, FashionMnistIidExampleRuns) {
  SKIP_WITHOUT_FASHION_MNIST();
  json c = RunSimulateExample("fashion_mnist_iid.toml");
  ASSERT_TRUE(c.is_object());
  // The file's own settings, where the flags above do not override them.
  EXPECT_EQ(c["partition"], "iid");
  EXPECT_EQ(c["model"], "mlp");
  EXPECT_EQ(c["lr"], 0.05);
  EXPECT_EQ(c["seed"], 1);
  EXPECT_EQ(c["data_dir"], kFashionMnist);
}

TEST_F(ExampleTest, FashionMnistShardsExampleRuns) {
  SKIP_WITHOUT_FASHION_MNIST();
  json c = RunSimulateExample("fashion_mnist_shards.toml");
  ASSERT_TRUE(c.is_object());
  EXPECT_EQ(c["partition"], "shards:2");
  EXPECT_EQ(c["model"], "mlp");
  EXPECT_EQ(c["lr"], 0.05);
  EXPECT_EQ(c["seed"], 1);
}

// The coordinator example parses and listens (plaintext); it is killed once its port is known.
TEST_F(ExampleTest, CoordinatorExampleListens) {
  SKIP_WITHOUT_FASHION_MNIST();  // the example evaluates on the test split
  const fs::path port_file = tmp_.Join("port");
  Child child = Start({"coordinator", "--config", kExamples + "/coordinator.toml", "--address", "127.0.0.1:0",
                       "--port-file", port_file.string(), "--rounds", "1", "--output", tmp_.Join("out")});
  ASSERT_TRUE(child.process->started());
  const int port = WaitForPort(port_file, *child.process);
  child.process->Kill();
  Outcome o = Collect(child, std::nullopt);
  ASSERT_GT(port, 0) << o;
  EXPECT_THAT(o.out, AllOf(HasSubstr("listening on port " + std::to_string(port)), HasSubstr("plaintext"))) << o;
  EXPECT_THAT(o.err, Not(HasSubstr("config"))) << o;
}

// The client example parses and gets as far as dialing the coordinator: against a closed port the only error
// is the one-line "cannot reach the coordinator". (Regression: see
// ClientIdFromConfigFileIsEnough.)
TEST_F(ExampleTest, ClientExampleGetsToDialingTheCoordinator) {
  SKIP_WITHOUT_FASHION_MNIST();  // the example loads its partition before
                                 // dialing
  const std::string address = "127.0.0.1:" + std::to_string(ClosedLoopbackPort());
  Outcome o = Tessera({"client", "--config", kExamples + "/client.toml", "--coordinator", address, "--connect-attempts",
                       "1", "--log-level", "warn"});
  EXPECT_EQ(o.exit_code, 1) << o;
  EXPECT_EQ(o.err_lines.size(), 1u) << o;
  EXPECT_THAT(o.err, AllOf(HasSubstr("cannot reach the coordinator"), HasSubstr(address))) << o;
}

// -------------------------------------------------------------------------------------- regressions

// `id = "..."` in a client config file must count as --id. Regression: --id was ->required(),
// which CLI11 checks before the config file is applied.
TEST_F(CliTest, ClientIdFromConfigFileIsEnough) {
  const std::string config = WriteConfig("client.toml", "id = \"alice\"\ninsecure = true\nconnect_attempts = 1\n");
  const std::string address = "127.0.0.1:" + std::to_string(ClosedLoopbackPort());
  // A CSV of four rows keeps the client quick and independent of Fashion-MNIST.
  const std::string csv = WriteConfig("data.csv", "x1,x2,label\n0.5,1.0,0\n1.5,0.0,1\n0.2,0.3,0\n0.9,0.1,1\n");
  Outcome o = Tessera({"client", "--config", config, "--coordinator", address, "--dataset", "csv:" + csv, "--model",
                       "logreg", "--test-fraction", "0"});
  EXPECT_THAT(o.err, Not(HasSubstr("--id is required"))) << o;
  EXPECT_THAT(o.err, HasSubstr("cannot reach the coordinator")) << o;
  EXPECT_EQ(o.exit_code, 1) << o;
}

// SIGTERM (or Ctrl-C) stops a coordinator cleanly: it shuts the server down, writes summary.json and exits 1
// with one line saying the run stopped early. Regression: the signals were blocked in main() and
// sigwaited on a thread, but OpenBLAS starts a thread before main with them unblocked, and the kernel
// delivered SIGTERM there (exit 143, no summary.json).
TEST_F(CliTest, CoordinatorStopsCleanlyOnSigterm) {
  const fs::path port_file = tmp_.Join("port");
  const fs::path out = tmp_.Join("out");
  Child child = Start({"coordinator", "--insecure", "--address", "127.0.0.1:0", "--port-file", port_file.string(),
                       "--model", "logreg", "--rounds", "1", "--linger", "0", "--output", out.string()});
  ASSERT_TRUE(child.process->started());
  const int port = WaitForPort(port_file, *child.process);
  ASSERT_GT(port, 0) << Collect(child, std::nullopt);
  child.process->Signal(SIGTERM);
  Outcome o = Collect(child, child.process->Wait(15s));
  EXPECT_EQ(o.exit_code, 1) << o;  // fails today: 143
  EXPECT_EQ(o.err_lines.size(), 1u) << o;
  EXPECT_THAT(o.err, HasSubstr("stopped before the last round")) << o;
  EXPECT_TRUE(fs::exists(out / "summary.json"));
}

// A client with --serve answers over HTTP, after a 2-round run, from the global model it trained
// from in round 2 (version 1), and keeps serving until Ctrl-C, after which it exits 0.
TEST_F(CliTest, ClientServesPredictionsAfterItsRounds) {
  SKIP_WITHOUT_FASHION_MNIST();
  const fs::path port_file = tmp_.Join("port");
  Child coordinator = Start({"coordinator", "--insecure", "--address", "127.0.0.1:0", "--port-file",
                             port_file.string(), "--model", "logreg", "--rounds", "2", "--min-clients", "1",
                             "--fraction", "1.0", "--local-epochs", "1", "--output", tmp_.Join("out")});
  ASSERT_TRUE(coordinator.process->started());
  const int port = WaitForPort(port_file, *coordinator.process);
  ASSERT_GT(port, 0) << Collect(coordinator, std::nullopt);
  const int serve_port = ClosedLoopbackPort();
  Child client = Start({"client", "--insecure", "--coordinator", "127.0.0.1:" + std::to_string(port), "--id", "c0",
                        "--model", "logreg", "--num-partitions", "30", "--serve",
                        "127.0.0.1:" + std::to_string(serve_port)});
  ASSERT_TRUE(client.process->started());
  bool serving = false;
  for (int i = 0; i < 1200 && !serving; ++i) {  // at most 60 s
    serving = Slurp(client.out_path).find("still serving") != std::string::npos;
    if (!serving && client.process->Wait(50ms)) break;
  }
  ASSERT_TRUE(serving) << Collect(client, std::nullopt);

  httplib::Client http("127.0.0.1", serve_port);
  http.set_read_timeout(10);
  auto model = http.Get("/v1/model");
  ASSERT_TRUE(model);
  ASSERT_EQ(model->status, 200) << model->body;
  json m = json::parse(model->body);
  EXPECT_EQ(m["round"], 2);
  EXPECT_EQ(m["model_version"], 1);
  EXPECT_EQ(m["num_features"], 784);
  EXPECT_TRUE(m["metrics"].contains("train_loss")) << m;
  json instances = json::array({std::vector<int>(784, 0), std::vector<int>(784, 255)});
  auto predicted = http.Post("/v1/predict", json{{"instances", instances}}.dump(), "application/json");
  ASSERT_TRUE(predicted);
  ASSERT_EQ(predicted->status, 200) << predicted->body;
  json p = json::parse(predicted->body);
  EXPECT_EQ(p["model_version"], 1);
  ASSERT_EQ(p["predictions"].size(), 2u);
  EXPECT_EQ(p["predictions"][0]["logits"].size(), 10u);
  EXPECT_TRUE(p["predictions"][1]["label"].is_string());

  client.process->Signal(SIGINT);
  Outcome o = Collect(client, client.process->Wait(15s));
  EXPECT_EQ(o.exit_code, 0) << o;
  coordinator.process->Signal(SIGTERM);
  coordinator.process->Wait(15s);
  coordinator.process->Kill();
}

}  // namespace
}  // namespace tessera::cli

namespace tessera::cli {
namespace {

// The [secure_aggregation] and [dp] tables of a config file: `enabled` switches the feature on,
// the other keys set --secure-aggregation-KEY and --dp-KEY; a secure round runs end to end.
TEST_F(CliTest, SecureAggregationAndDpTablesConfigureASecureDpRun) {
  SKIP_WITHOUT_FASHION_MNIST();
  const std::string config = WriteConfig("secure.toml", std::string(kTinyToml) +
                                                            "rounds = 2\n"
                                                            "[secure_aggregation]\n"
                                                            "enabled = true\n"
                                                            "neighbours = 2\n"
                                                            "expected_dropout = 0\n"
                                                            "[dp]\n"
                                                            "clip_norm = 0.5\n"
                                                            "noise_multiplier = 0.3\n");
  const fs::path out = tmp_.Join("secure-out");
  Outcome o = Tessera({"simulate", "--config", config, "--fraction", "1.0", "--output", out.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  json summary = ReadJson(out / "summary.json");
  EXPECT_EQ(summary["config"]["secure_aggregation"], true);
  EXPECT_EQ(summary["config"]["secagg"]["neighbours"], 2);
  EXPECT_EQ(summary["config"]["dp_clip_norm"], 0.5);
  EXPECT_EQ(summary["completed_rounds"], 2);
  std::ifstream metrics(out / "metrics.jsonl");
  std::string line;
  double last_epsilon = 0;
  while (std::getline(metrics, line)) {
    json round = json::parse(line);
    EXPECT_EQ(round["outcome"], "completed");
    ASSERT_TRUE(round.contains("epsilon")) << line;
    EXPECT_GT(round["epsilon"].get<double>(), last_epsilon);
    last_epsilon = round["epsilon"].get<double>();
  }
  EXPECT_TRUE(fs::exists(out / "privacy.txt"));
}

TEST_F(CliTest, ImpossibleSecureAggregationParametersAreRefusedUpFront) {
  SKIP_WITHOUT_FASHION_MNIST();
  // 4 clients: threshold 3 of 3 neighbours cannot survive 50% dropout.
  const std::string config = WriteConfig("impossible.toml", std::string(kTinyToml));
  Outcome o = Tessera({"simulate", "--config", config, "--fraction", "1.0", "--secure-aggregation",
                       "--secure-aggregation-threshold", "3", "--secure-aggregation-expected-dropout", "0.5"});
  EXPECT_EQ(o.exit_code, 2) << o;
  EXPECT_EQ(o.err_lines.size(), 1u) << o;
  EXPECT_THAT(o.err, HasSubstr("threshold 3"));
}


// ---------------------------------------------------------------------------------------------
// tessera models: list, show and export the versions a run wrote. The fixtures are written by the
// coordinator's own ModelStore (and StateStore for state.db), so the files are those of a real run.

class ModelsCliTest : public CliTest {
 protected:
  // A logreg run of three versions (0 initial, 1 and 2 from rounds 1 and 2) in `out/models`, with
  // a state.db when `with_state_db`.
  // Small deterministic weights for the layers `layers` (name, out, in): "name.weight", "name.bias".
  static core::ModelWeights Dense(const std::vector<std::tuple<std::string, int64_t, int64_t>>& layers) {
    core::ModelWeights weights;
    for (const auto& [name, outputs, inputs] : layers) {
      std::vector<float> w(static_cast<size_t>(outputs * inputs)), b(static_cast<size_t>(outputs));
      for (size_t i = 0; i < w.size(); ++i) w[i] = 0.001f * static_cast<float>(i % 13) - 0.006f;
      for (size_t i = 0; i < b.size(); ++i) b[i] = 0.1f * static_cast<float>(i);
      weights.tensors.push_back(core::NamedTensor::FromFloats(name + ".weight", {outputs, inputs}, w));
      weights.tensors.push_back(core::NamedTensor::FromFloats(name + ".bias", {outputs}, b));
    }
    return weights;
  }

  fs::path WriteRun(const std::string& name, bool with_state_db,
                    core::ModelWeights weights = Dense({{"fc", 10, 784}})) {
    const fs::path out = fs::path(tmp_.path()) / name;
    fs::create_directories(out);
    auto store = coordinator::ModelStore::Create((out / "models").string(), weights, "run-models");
    EXPECT_TRUE(store.ok()) << store.status();
    std::unique_ptr<coordinator::StateStore> db;
    if (with_state_db) {
      auto opened = coordinator::StateStore::Open({(out / "state.db").string(), "run-models", false});
      EXPECT_TRUE(opened.ok()) << opened.status();
      db = *std::move(opened);
      EXPECT_TRUE(db->SaveInitialVersion((*store)->Current()->sha256).ok());
    }
    for (core::RoundNumber round = 1; round <= 2; ++round) {
      weights.tensors[1].mutable_f32()[0] += 1.0f;
      const core::Metrics metrics = {{"accuracy", 0.5 + 0.125 * static_cast<double>(round)}, {"loss", 0.25}};
      EXPECT_TRUE((*store)->Publish(weights, round, metrics).ok());
      if (!db) continue;
      coordinator::PersistedRound open;
      open.round = round;
      open.opened_at = absl::FromUnixSeconds(1795370400 + 60 * static_cast<int64_t>(round));
      open.deadline = open.opened_at + absl::Minutes(5);
      open.model_version = round - 1;
      EXPECT_TRUE(db->RoundOpened(open).ok());
      coordinator::RoundSummary summary;
      summary.round = round;
      summary.sampled = 4;
      summary.reported = static_cast<int>(round) + 2;
      summary.model_version = round;
      summary.server_metrics = metrics;
      summary.client_metrics = {{"train_loss", 0.5}};
      summary.duration = absl::Seconds(2);
      EXPECT_TRUE(db->RoundClosed(summary, (*store)->Current()->sha256, "").ok());
    }
    return out;
  }

  static std::string FileSha256(const fs::path& path) { return core::HexEncode(core::Sha256Digest(Slurp(path))); }

  static bool PythonHasTorch() { return std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0; }
};

TEST_F(ModelsCliTest, ListReadsTheFilesMetadataWithoutStateDb) {
  const fs::path run = WriteRun("run", /*with_state_db=*/false);
  Outcome o = Tessera({"models", "list", "--from", run.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  const auto lines = Lines(o.out);
  ASSERT_EQ(lines.size(), 5u) << o;  // the source, the header, three versions
  EXPECT_THAT(lines[0], HasSubstr("3 model versions (the files' metadata)"));
  EXPECT_THAT(lines[1], AllOf(HasSubstr("version"), HasSubstr("round"), HasSubstr("parent"), HasSubstr("sha256")));
  // version 2: round 2, parent 1, contributing clients unknown without the database.
  EXPECT_THAT(lines[4], StartsWith("      2      2  "));
  EXPECT_THAT(lines[4], HasSubstr("     1       -  " + FileSha256(run / "models/model_v000002.safetensors")));
  EXPECT_THAT(lines[4], HasSubstr("accuracy=0.75 loss=0.25"));
  EXPECT_THAT(lines[2], HasSubstr("     -       -  "));  // version 0 has no parent
}

TEST_F(ModelsCliTest, ListTakesRoundsClientsAndTimesFromStateDb) {
  const fs::path run = WriteRun("run", /*with_state_db=*/true);
  // Given the models/ directory itself, the database beside it is found too.
  Outcome o = Tessera({"models", "list", "--from", (run / "models").string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  const auto lines = Lines(o.out);
  ASSERT_EQ(lines.size(), 5u) << o;
  EXPECT_THAT(lines[0], HasSubstr("(state.db)"));
  // Round 2 opened at 18:02:00 and took 2 s; 4 clients reported.
  EXPECT_THAT(lines[4], StartsWith("      2      2  2026-11-22T18:02:02Z      1       4  "));
  EXPECT_THAT(lines[4], HasSubstr("accuracy=0.75 clients.train_loss=0.5 loss=0.25"));
  EXPECT_THAT(lines[3], HasSubstr("Z      0       3  "));
  // Reading leaves no -wal or -shm behind (a read-only connection could not remove them).
  EXPECT_FALSE(fs::exists(run / "state.db-wal"));
  EXPECT_FALSE(fs::exists(run / "state.db-shm"));
}

TEST_F(ModelsCliTest, ShowPrintsTheLatestVersionsCard) {
  const fs::path run = WriteRun("run", /*with_state_db=*/true);
  Outcome o = Tessera({"models", "show", "--from", run.string()});
  ASSERT_EQ(o.exit_code, 0) << o;
  const json card = json::parse(o.out, nullptr, false);
  ASSERT_TRUE(card.is_object()) << o;
  EXPECT_EQ(card["format"], "tessera.model_card/1");
  EXPECT_EQ(card["architecture"], "logreg");
  EXPECT_EQ(card["input"]["shape"], json::array({1, 28, 28}));
  EXPECT_EQ(card["output"]["num_classes"], 10);
  EXPECT_EQ(card["class_labels"][0], "T-shirt/top");
  EXPECT_EQ(card["class_labels"][9], "Ankle boot");
  EXPECT_EQ(card["preprocessing"]["scale"], 1.0 / 255.0);
  EXPECT_EQ(card["preprocessing"]["mean"], 0.2860);
  EXPECT_EQ(card["preprocessing"]["stddev"], 0.3530);
  EXPECT_EQ(card["preprocessing"]["in_module"], false);
  EXPECT_EQ(card["run_id"], "run-models");
  EXPECT_EQ(card["version"], 2);
  EXPECT_EQ(card["round"], 2);
  EXPECT_EQ(card["parent_version"], 1);
  EXPECT_EQ(card["contributing_clients"], 4);
  EXPECT_EQ(card["metrics"]["accuracy"], 0.75);
  EXPECT_EQ(card["created_at"], "2026-11-22T18:02:02Z");
  EXPECT_EQ(card["weights"]["file"], "model_v000002.safetensors");
  EXPECT_EQ(card["weights"]["sha256"], FileSha256(run / "models/model_v000002.safetensors"));
  EXPECT_EQ(card["weights"]["num_parameters"], 7850);
  EXPECT_EQ(card["framework_version"], "0.1.0");
  EXPECT_TRUE(card["export"].is_null());

  Outcome first = Tessera({"models", "show", "--from", run.string(), "--version", "0"});
  ASSERT_EQ(first.exit_code, 0) << first;
  const json card0 = json::parse(first.out, nullptr, false);
  EXPECT_EQ(card0["version"], 0);
  EXPECT_TRUE(card0["parent_version"].is_null());
  EXPECT_TRUE(card0["contributing_clients"].is_null());
}

TEST_F(ModelsCliTest, ExportSafetensorsCopiesTheVersionWithItsCard) {
  const fs::path run = WriteRun("run", /*with_state_db=*/false);
  const std::string out = tmp_.Join("v1.safetensors");
  Outcome o = Tessera({"models", "export", "--from", run.string(), "--version", "1", "--format", "safetensors",
                       "--out", out});
  ASSERT_EQ(o.exit_code, 0) << o;
  EXPECT_EQ(Slurp(out), Slurp(run / "models/model_v000001.safetensors"));
  const json card = ReadJson(out + ".card.json");
  ASSERT_TRUE(card.is_object());
  EXPECT_EQ(card["version"], 1);
  EXPECT_EQ(card["export"]["format"], "safetensors");
  EXPECT_EQ(card["export"]["file"], "v1.safetensors");
  EXPECT_EQ(card["export"]["sha256"], FileSha256(out));
  EXPECT_EQ(card["preprocessing"]["in_module"], false);  // safetensors holds weights only
}

TEST_F(ModelsCliTest, ExportTorchScriptRunsInPythonOnRawPixels) {
  const fs::path run = WriteRun("run", /*with_state_db=*/true);
  const std::string out = tmp_.Join("model.pt");
  Outcome o = Tessera({"models", "export", "--from", run.string(), "--format", "torchscript", "--out", out}, 120s);
  ASSERT_EQ(o.exit_code, 0) << o;
  EXPECT_THAT(o.out, HasSubstr("version 2 (round 2) as torchscript"));
  const json card = ReadJson(out + ".card.json");
  ASSERT_TRUE(card.is_object());
  EXPECT_EQ(card["export"]["format"], "torchscript");
  EXPECT_EQ(card["export"]["sha256"], FileSha256(out));
  EXPECT_EQ(card["preprocessing"]["in_module"], true);
  if (!PythonHasTorch()) GTEST_SKIP() << "/usr/bin/python3 cannot import torch: the module was not run";
  // A black image: inputs (0 - mean) / stddev everywhere, so the logits are bias + sum(w) * that.
  const std::string script = WriteConfig("check.py", R"(import sys, torch
m = torch.jit.load(sys.argv[1])
y = m(torch.zeros(2, 1, 28, 28))
print(tuple(y.shape), round(m.input_mean, 4), round(m.input_stddev, 4))
)");
  const std::string log = tmp_.Join("python.out");
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + out + " >" + log + " 2>&1").c_str()), 0) << Slurp(log);
  EXPECT_EQ(Slurp(log), "(2, 10) 0.286 0.353\n");
}

TEST_F(ModelsCliTest, BadInputIsOneLineAndExitOne) {
  const fs::path run = WriteRun("run", /*with_state_db=*/false);
  auto expect_failure = [&](const std::vector<std::string>& args, const std::string& message) {
    Outcome o = Tessera(args);
    EXPECT_EQ(o.exit_code, 1) << o;
    EXPECT_EQ(o.err_lines.size(), 1u) << o;
    EXPECT_THAT(o.err, HasSubstr(message)) << o;
    EXPECT_EQ(o.out, "") << o;
  };
  expect_failure({"models", "list", "--from", tmp_.Join("nowhere")}, "no directory");
  expect_failure({"models", "show", "--from", run.string(), "--version", "9"}, "no model version 9");
  expect_failure({"models", "show", "--from", run.string(), "--model", "cnn"}, "not of a cnn");
  fs::create_directories(tmp_.Join("empty"));
  expect_failure({"models", "list", "--from", tmp_.Join("empty")}, "no model versions");

  // A damaged file: a truncated version, then one whose metadata names another version.
  const fs::path v1 = run / "models/model_v000001.safetensors";
  const std::string bytes = Slurp(v1);
  std::ofstream(v1, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  expect_failure({"models", "show", "--from", run.string(), "--version", "1"}, "model_v000001.safetensors is damaged");
  expect_failure({"models", "list", "--from", run.string()}, "is damaged");
  fs::copy_file(run / "models/model_v000002.safetensors", v1, fs::copy_options::overwrite_existing);
  expect_failure({"models", "export", "--from", run.string(), "--version", "1", "--out", tmp_.Join("x.pt")},
                 "says it holds version '2'");
  EXPECT_FALSE(fs::exists(tmp_.Join("x.pt")));

  // A state.db that is not a database.
  std::ofstream(run / "state.db") << "not a database";
  expect_failure({"models", "list", "--from", run.string()}, "state.db is not a readable Tessera state database");
}

TEST_F(ModelsCliTest, AFileOfOtherWeightsThanStateDbRecordedIsDamaged) {
  const fs::path run = WriteRun("run", /*with_state_db=*/true);
  // A well-formed version 1, metadata and all, but not the weights the coordinator published.
  const fs::path v1 = run / "models/model_v000001.safetensors";
  auto file = core::ReadSafetensorsFile(v1.string());
  ASSERT_TRUE(file.ok()) << file.status();
  file->weights.tensors[0].mutable_f32()[0] += 1.0f;
  ASSERT_TRUE(core::WriteSafetensorsFile(v1.string(), file->weights, file->metadata).ok());
  Outcome o = Tessera({"models", "show", "--from", run.string(), "--version", "1"});
  EXPECT_EQ(o.exit_code, 1) << o;
  EXPECT_EQ(o.err_lines.size(), 1u) << o;
  EXPECT_THAT(o.err, HasSubstr("model_v000001.safetensors is not the model version 1 that state.db recorded"));
  Outcome v2 = Tessera({"models", "show", "--from", run.string(), "--version", "2"});
  EXPECT_EQ(v2.exit_code, 0) << v2;
}

TEST_F(ModelsCliTest, ARunOfATorchScriptModelNeedsItsFile) {
  const fs::path run = WriteRun("run", /*with_state_db=*/false);
  std::ofstream(run / "summary.json") << R"({"config": {"model": "/elsewhere/model.pt"}})";
  Outcome o = Tessera({"models", "show", "--from", run.string()});
  EXPECT_EQ(o.exit_code, 1) << o;
  EXPECT_THAT(o.err, HasSubstr("give its file with --model"));
}

TEST_F(ModelsCliTest, ExportsATorchScriptArchitectureGivenItsFile) {
  // The weights of tests/data/tiny_mlp_scripted.pt (784-16-10): not a zoo model.
  const fs::path run = WriteRun("run", /*with_state_db=*/false, Dense({{"fc1", 16, 784}, {"fc2", 10, 16}}));
  Outcome guess = Tessera({"models", "show", "--from", run.string()});
  EXPECT_EQ(guess.exit_code, 1) << guess;
  EXPECT_THAT(guess.err, HasSubstr("not those of a zoo model"));

  const std::string tiny = TESSERA_SOURCE_DIR "/tests/data/tiny_mlp_scripted.pt";
  const std::string out = tmp_.Join("tiny.pt");
  Outcome o = Tessera({"models", "export", "--from", run.string(), "--model", tiny, "--out", out}, 120s);
  ASSERT_EQ(o.exit_code, 0) << o;
  const json card = ReadJson(out + ".card.json");
  ASSERT_TRUE(card.is_object());
  EXPECT_EQ(card["architecture"], "tiny_mlp_scripted.pt");
  EXPECT_EQ(card["weights"]["num_parameters"], 12730);
  EXPECT_EQ(card["preprocessing"]["in_module"], true);
  EXPECT_EQ(card["export"]["sha256"], FileSha256(out));
}

TEST_F(ModelsCliTest, BadUsageIsExitTwo) {
  const fs::path run = WriteRun("run", /*with_state_db=*/false);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"models"},
           {"models", "list"},
           {"models", "export", "--from", run.string()},
           {"models", "export", "--from", run.string(), "--out", "x", "--format", "onnx"},
           {"models", "show", "--from", run.string(), "--version", "-1"},
           {"models", "show", "--from", run.string(), "--dataset", "mnist"},
           {"models", "show", "--from", run.string(), "--input-shape", "1,x"}}) {
    Outcome o = Tessera(args);
    EXPECT_EQ(o.exit_code, 2) << o;
    EXPECT_EQ(o.err_lines.size(), 1u) << o;
  }
}

TEST_F(ModelsCliTest, ASimulatedRunExportsAModelThatPythonRuns) {
  SKIP_WITHOUT_FASHION_MNIST();
  const fs::path out = tmp_.Join("sim");
  Outcome sim = TinySimulate({"--output", out.string()});
  ASSERT_EQ(sim.exit_code, 0) << sim;
  Outcome list = Tessera({"models", "list", "--from", out.string()});
  ASSERT_EQ(list.exit_code, 0) << list;
  EXPECT_EQ(Lines(list.out).size(), 4u) << list;  // versions 0 and 1
  Outcome exp = Tessera({"models", "export", "--from", out.string(), "--out", tmp_.Join("sim.pt")}, 120s);
  ASSERT_EQ(exp.exit_code, 0) << exp;
  const json card = ReadJson(tmp_.Join("sim.pt.card.json"));
  EXPECT_EQ(card["architecture"], "logreg");
  EXPECT_EQ(card["version"], 1);
  EXPECT_EQ(card["dataset"], "fashion-mnist");
  if (!PythonHasTorch()) GTEST_SKIP() << "/usr/bin/python3 cannot import torch: the module was not run";
  // Python alone, on the raw test images: one round of logreg is far above chance (0.1).
  const std::string script = WriteConfig("accuracy.py", R"(import gzip, sys, torch
d = sys.argv[2] + "/"
x = torch.frombuffer(bytearray(gzip.open(d + "t10k-images-idx3-ubyte.gz").read()[16:]), dtype=torch.uint8)
y = torch.frombuffer(bytearray(gzip.open(d + "t10k-labels-idx1-ubyte.gz").read()[8:]), dtype=torch.uint8)
with torch.no_grad():
    p = torch.jit.load(sys.argv[1])(x.reshape(-1, 1, 28, 28).float()).argmax(1)
print((p == y.long()).float().mean().item())
)");
  const std::string log = tmp_.Join("accuracy.out");
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + tmp_.Join("sim.pt") + " " + kFashionMnist + " >" +
                         log + " 2>&1")
                            .c_str()),
            0)
      << Slurp(log);
  EXPECT_GT(std::stod(Slurp(log)), 0.6) << Slurp(log);
}
}  // namespace
}  // namespace tessera::cli
