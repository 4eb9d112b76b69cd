// A mutual-TLS deployment on loopback, set up only with the `tessera` binary: `tessera certs`
// makes the CA and the certificates, `tessera coordinator` requires client certificates from
// that CA and admits the ids of its --allow-list, and two `tessera client` processes with their
// own certificates complete a round. Two impostors with valid certificates are turned away: one
// claims another client's id, one is not on the allow-list.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

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
using testing::WaitForPort;

// Runs `tessera args...` to completion (bounded); its exit code, or -1 if it did not finish.
int RunTessera(std::vector<std::string> args, const fs::path& log) {
  args.insert(args.begin(), kTessera);
  testing::Subprocess p(args, log.string());
  if (!p.started()) return -1;
  return p.Wait(milliseconds(60'000)).value_or(-1);
}

mode_t Mode(const fs::path& p) {
  struct stat st = {};
  return ::stat(p.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0;
}

TEST(MtlsFederationE2eTest, CertifiedClientsCompleteARoundAndImpostorsAreRefused) {
  if (!fs::exists(kFashionMnist)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  ASSERT_TRUE(fs::exists(kTessera)) << kTessera;
  const fs::path dir = MakeTempDir("mtls");
  const fs::path pki = dir / "pki";
  const fs::path certs_log = dir / "certs.log";

  ASSERT_EQ(RunTessera({"certs", "init", "--dir", pki.string(), "--days", "30"}, certs_log), 0) << ReadLog(certs_log);
  ASSERT_EQ(RunTessera({"certs", "issue", "--dir", pki.string(), "--server", "--name", "coordinator"}, certs_log), 0)
      << ReadLog(certs_log);
  for (const char* name : {"client-0", "client-1", "client-2"}) {
    ASSERT_EQ(RunTessera({"certs", "issue", "--dir", pki.string(), "--name", name}, certs_log), 0) << ReadLog(certs_log);
  }
  EXPECT_EQ(Mode(pki / "ca.key"), 0600u);
  EXPECT_EQ(Mode(pki / "client-0.key"), 0600u);
  EXPECT_EQ(ReadLog(certs_log).find("PRIVATE KEY"), std::string::npos) << "a key was printed";

  {
    std::ofstream allow(dir / "allow.txt");
    allow << "# the federation's members\nclient-0\n  client-1   # joined later\n\n";
  }
  const fs::path out = dir / "coordinator";
  testing::Subprocess coordinator(
      {kTessera, "coordinator", "--address", "127.0.0.1:0", "--port-file", (dir / "port").string(),
       "--tls-cert", (pki / "coordinator.pem").string(), "--tls-key", (pki / "coordinator.key").string(),
       "--tls-client-ca", (pki / "ca.pem").string(), "--allow-list", (dir / "allow.txt").string(), "--rounds", "1",
       "--min-clients", "2", "--fraction", "1.0", "--min-results", "2", "--model", "logreg", "--local-epochs", "1",
       "--batch-size", "20", "--lr", "0.05", "--round-timeout", "120", "--linger", "2", "--output", out.string(),
       "--log-level", "info"},
      (dir / "coordinator.log").string());
  ASSERT_TRUE(coordinator.started());
  const int port = WaitForPort(dir / "port", coordinator);
  ASSERT_GT(port, 0) << ReadLog(dir / "coordinator.log");
  EXPECT_NE(ReadLog(dir / "coordinator.log").find("(mutual TLS)"), std::string::npos) << ReadLog(dir / "coordinator.log");

  // --id `id` with the certificate of `cert`.
  auto start_client = [&](const std::string& id, const std::string& cert, const std::string& log, int partition) {
    return std::make_unique<testing::Subprocess>(
        std::vector<std::string>{kTessera, "client", "--coordinator", "127.0.0.1:" + std::to_string(port), "--id", id,
                                 "--tls-ca", (pki / "ca.pem").string(), "--tls-cert", (pki / (cert + ".pem")).string(),
                                 "--tls-key", (pki / (cert + ".key")).string(), "--model", "logreg",
                                 "--num-partitions", "30", "--partition-index", std::to_string(partition),
                                 "--connect-attempts", "3", "--log-level", "info"},
        (dir / log).string());
  };
  auto client0 = start_client("client-0", "client-0", "client-0.log", 0);
  auto client1 = start_client("client-1", "client-1", "client-1.log", 1);
  auto stolen_id = start_client("client-0", "client-1", "stolen-id.log", 2);  // client-1's certificate
  auto not_allowed = start_client("client-2", "client-2", "not-allowed.log", 3);

  for (const char* name : {"client-0", "client-1"}) {
    auto& c = std::string(name) == "client-0" ? client0 : client1;
    const fs::path log = dir / (std::string(name) + ".log");
    auto code = c->Wait(milliseconds(180'000));
    ASSERT_TRUE(code.has_value()) << name << " still running\n" << ReadLog(log);
    EXPECT_EQ(*code, 0) << ReadLog(log);
    EXPECT_NE(ReadLog(log).find("run finished after 1 rounds"), std::string::npos) << ReadLog(log);
  }
  auto code = coordinator.Wait(milliseconds(60'000));
  ASSERT_TRUE(code.has_value()) << ReadLog(dir / "coordinator.log");
  EXPECT_EQ(*code, 0) << ReadLog(dir / "coordinator.log");
  EXPECT_TRUE(fs::exists(out / "models" / "model_v000001.safetensors")) << ReadLog(dir / "coordinator.log");
  std::ifstream metrics(out / "metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line);) ++lines;
  EXPECT_EQ(lines, 1);

  // The impostors got a one-line PERMISSION_DENIED and a nonzero exit.
  for (const auto& [process, log, reason] :
       {std::tuple{stolen_id.get(), "stolen-id.log", "does not match the peer certificate"},
        std::tuple{not_allowed.get(), "not-allowed.log", "'client-2' is not on the allow-list"}}) {
    auto exit = process->Wait(milliseconds(60'000));
    const std::string text = ReadLog(dir / log);
    ASSERT_TRUE(exit.has_value()) << log << " still running\n" << text;
    EXPECT_NE(*exit, 0) << text;
    EXPECT_NE(text.find(reason), std::string::npos) << text;
    EXPECT_NE(text.find("PERMISSION_DENIED"), std::string::npos) << text;
  }
  const std::string coordinator_log = ReadLog(dir / "coordinator.log");
  EXPECT_NE(coordinator_log.find("registration refused: client 'client-2'"), std::string::npos) << coordinator_log;
  EXPECT_NE(coordinator_log.find("the peer certified as 'client-1' claimed another client_id"), std::string::npos)
      << coordinator_log;
  fs::remove_all(dir);
}

TEST(MtlsFederationE2eTest, CertsCommandRefusesBadUsageWithOneLineAndExitTwo) {
  ASSERT_TRUE(fs::exists(kTessera)) << kTessera;
  const fs::path dir = MakeTempDir("certs_usage");
  const fs::path pki = dir / "pki";
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  ASSERT_EQ(RunTessera({"certs", "init", "--dir", pki.string()}, dir / "ok.log"), 0) << ReadLog(dir / "ok.log");
  ASSERT_EQ(RunTessera({"certs", "issue", "--dir", pki.string(), "--name", "alice"}, dir / "ok.log"), 0);
  const std::string alice_key = ReadLog(pki / "alice.key");
  const std::vector<Case> cases = {
      {{"certs", "init"}, "--dir is required"},
      {{"certs", "issue", "--name", "alice"}, "--dir is required"},
      {{"certs", "issue", "--dir", pki.string(), "--name", "alice/../../x"}, "outside [A-Za-z0-9._-]"},
      {{"certs", "issue", "--dir", pki.string(), "--name", "bob smith"}, "outside [A-Za-z0-9._-]"},
      {{"certs", "init", "--dir", pki.string()}, "ca.pem already exists"},
      {{"certs", "issue", "--dir", pki.string(), "--name", "alice"}, "alice.pem already exists"},
      {{"certs", "issue", "--dir", (dir / "nowhere").string(), "--name", "alice"}, "no CA in"},
      {{"certs", "issue", "--dir", pki.string(), "--name", "bob", "--days", "0"}, "1 to 36500 days"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const fs::path log = dir / ("case" + std::to_string(i) + ".log");
    EXPECT_EQ(RunTessera(cases[i].args, log), 2) << cases[i].message << "\n" << ReadLog(log);
    const std::string text = ReadLog(log);
    EXPECT_NE(text.find(cases[i].message), std::string::npos) << text;
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  }
  EXPECT_EQ(ReadLog(pki / "alice.key"), alice_key);  // not overwritten
  EXPECT_FALSE(fs::exists(dir / "x.pem"));
  // --force replaces.
  EXPECT_EQ(RunTessera({"certs", "issue", "--dir", pki.string(), "--name", "alice", "--force"}, dir / "ok.log"), 0);
  EXPECT_NE(ReadLog(pki / "alice.key"), alice_key);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
