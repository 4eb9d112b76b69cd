#include "cli/certs_command.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/logging.h"
#include "core/strings.h"
#include "security/tls/certs.h"

namespace tessera::cli {
namespace {

using core::StrCat;
namespace tls = security::tls;

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;

int FailCerts(const std::string& command, const absl::Status& s) {
  std::string message(s.message());
  if (absl::IsAlreadyExists(s)) message += "; --force replaces it";
  std::cerr << "tessera certs " << command << ": " << message << " [" << absl::StatusCodeToString(s.code()) << "]\n";
  return absl::IsInvalidArgument(s) || absl::IsNotFound(s) || absl::IsAlreadyExists(s) ? kExitUsage : kExitFailure;
}

std::string Utc(absl::Time t) { return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", t, absl::UTCTimeZone()); }

void PrintWritten(const tls::WrittenFiles& w) {
  std::string sans;
  for (const auto& s : w.info.subject_alt_names) sans += (sans.empty() ? "" : ", ") + s;
  std::printf("  %s: CN=%s%s%s, valid until %s\n  SHA-256 %s\n  %s: private key (mode 0600; keep it there)\n",
              w.cert_path.c_str(), w.info.common_name.c_str(), sans.empty() ? "" : ", SAN ", sans.c_str(),
              Utc(w.info.not_after).c_str(), w.info.sha256_fingerprint.c_str(), w.key_path.c_str());
}

int RunInit(const CertsArgs::Init& a) {
  tls::CaOptions options;
  auto type = tls::ParseKeyType(a.key_type);
  if (!type.ok()) return FailCerts("init", type.status());
  options.key_type = *type;
  options.common_name = a.ca_name;
  options.validity.days = a.days;
  auto written = tls::InitCaDirectory(a.dir, options, a.force);
  if (!written.ok()) return FailCerts("init", written.status());
  std::printf("tessera certs: created the federation CA in %s\n", a.dir.c_str());
  PrintWritten(*written);
  std::printf("Give %s (never ca.key) to the coordinator (--tls-client-ca) and to every client (--tls-ca).\n",
              written->cert_path.c_str());
  return 0;
}

int RunIssue(const CertsArgs::Issue& a) {
  tls::IssueOptions options;
  auto type = tls::ParseKeyType(a.key_type);
  if (!type.ok()) return FailCerts("issue", type.status());
  options.key_type = *type;
  options.name = a.name;
  options.server = a.server;
  options.extra_sans = a.sans;
  options.validity.days = a.days;
  auto written = tls::IssueToDirectory(a.dir, options, a.force);
  if (!written.ok()) return FailCerts("issue", written.status());
  std::printf("tessera certs: issued a %s certificate for '%s'\n", a.server ? "coordinator (server)" : "client",
              a.name.c_str());
  PrintWritten(*written);
  return 0;
}

}  // namespace

void AddCerts(CLI::App& app, CertsArgs* args) {
  auto* certs = app.add_subcommand("certs", "Create the federation's CA and issue mutual-TLS certificates");
  certs->require_subcommand(1);

  auto* init = certs->add_subcommand("init", "Create a CA: DIR/ca.pem and DIR/ca.key");
  auto& i = args->init;
  init->add_option("--dir", i.dir, "Directory of the federation's certificates (created 0700)")->required();
  init->add_option("--days", i.days, "Validity in days")->capture_default_str();
  init->add_option("--key-type", i.key_type, "ec-p256 | ed25519")->capture_default_str();
  init->add_option("--ca-name", i.ca_name, "The CA certificate's common name")->capture_default_str();
  init->add_flag("--force", i.force, "Replace an existing CA (what it issued stops being trusted)");

  auto* issue = certs->add_subcommand("issue", "Issue DIR/NAME.pem and DIR/NAME.key, signed by the CA in DIR");
  auto& s = args->issue;
  issue->add_option("--dir", s.dir, "Directory holding ca.pem and ca.key")->required();
  issue->add_option("--name", s.name, "Client id (or the coordinator's name): CN and subjectAltName")->required();
  issue->add_flag("--server", s.server,
                  "A coordinator certificate: SAN DNS:NAME, DNS:localhost, IP:127.0.0.1 and each --san");
  issue->add_option("--san", s.sans, "Another host name or IP address the coordinator is reached at (repeatable)");
  issue->add_option("--days", s.days, "Validity in days (at most the CA's)")->capture_default_str();
  issue->add_option("--key-type", s.key_type, "ec-p256 | ed25519")->capture_default_str();
  issue->add_flag("--force", s.force, "Replace existing NAME.pem and NAME.key");
}

int RunCerts(CLI::App* sub, CertsArgs& args) {
  core::SetLogLevel("warn");
  if (sub->get_subcommand("init")->parsed()) return RunInit(args.init);
  if (sub->get_subcommand("issue")->parsed()) return RunIssue(args.issue);
  return kExitUsage;
}

// ---------------------------------------------------------------- client-id lists

absl::StatusOr<std::set<std::string>> ReadClientIdList(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat("cannot read the client list ", path));
  std::set<std::string> ids;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string id, extra;
    if (!(words >> id)) continue;
    if (words >> extra) {
      return absl::InvalidArgumentError(StrCat(path, ":", number, ": one client id per line, got '", id, " ", extra, "'"));
    }
    if (id.size() > 256) return absl::InvalidArgumentError(StrCat(path, ":", number, ": client id longer than 256 bytes"));
    ids.insert(std::move(id));
  }
  if (in.bad()) return absl::InternalError(StrCat("cannot read the client list ", path));
  return ids;
}

RevocationWatcher::RevocationWatcher(std::string path, std::set<std::string> initial,
                                     coordinator::Coordinator* coordinator)
    : path_(std::move(path)), revoked_(std::move(initial)), coordinator_(coordinator) {
  std::error_code ec;
  mtime_ = std::filesystem::last_write_time(path_, ec);
  size_ = std::filesystem::file_size(path_, ec);
}

void RevocationWatcher::Poll() {
  if (path_.empty()) return;
  std::error_code ec1, ec2;
  const auto mtime = std::filesystem::last_write_time(path_, ec1);
  const auto size = std::filesystem::file_size(path_, ec2);
  if (ec1 || ec2 || (mtime == mtime_ && size == size_)) return;
  mtime_ = mtime;
  size_ = size;
  auto ids = ReadClientIdList(path_);
  auto log = core::Logger("coordinator");
  if (!ids.ok()) {
    log->error("revocation list not reloaded: {}", std::string(ids.status().message()));
    return;
  }
  for (const auto& id : *ids) {
    if (revoked_.insert(id).second) coordinator_->Revoke(core::ClientId{id});
  }
  for (const auto& id : revoked_) {
    if (!ids->contains(id)) log->warn("'{}' left the revocation list: it stays revoked until a restart", id);
  }
}

}  // namespace tessera::cli
