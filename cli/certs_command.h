// `tessera certs`: the federation's CA and the certificates it issues, for mutual TLS
// (security/tls/certs.h does the work):
//   tessera certs init  --dir DIR [--days N] [--key-type ec-p256|ed25519] [--ca-name CN] [--force]
//   tessera certs issue --dir DIR --name NAME [--server] [--san HOST]... [--days N] [--key-type T] [--force]
// Exit 2 for bad usage (a missing flag, a bad name, an existing file without --force, no CA in
// DIR), 1 when the files cannot be made. Keys are never printed.
//
// Also the client-id lists of `tessera coordinator --allow-list FILE --revoked FILE`.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/coordinator.h"

namespace tessera::cli {

struct CertsArgs {
  struct Init {
    std::string dir;
    int days = 3650;
    std::string key_type = "ec-p256";
    std::string ca_name = "Tessera federation CA";
    bool force = false;
  } init;
  struct Issue {
    std::string dir;
    std::string name;
    bool server = false;
    std::vector<std::string> sans;
    int days = 365;
    std::string key_type = "ec-p256";
    bool force = false;
  } issue;
};

void AddCerts(CLI::App& app, CertsArgs* args);
// Runs the parsed `certs` subcommand `sub`; returns the process's exit code.
int RunCerts(CLI::App* sub, CertsArgs& args);

// A list of client ids: one per line, '#' starts a comment, blank lines are skipped.
// NOT_FOUND for a missing file; INVALID_ARGUMENT (naming the file and line) for a line with more
// than one word or an id longer than 256 bytes.
absl::StatusOr<std::set<std::string>> ReadClientIdList(const std::string& path);

// Watches a revocation list while the coordinator runs: when the file changes, the ids added to
// it are revoked (Coordinator::Revoke) at once. Removing an id takes effect at the next start.
// Not thread-safe: one thread polls.
class RevocationWatcher {
 public:
  // `coordinator` is borrowed. `initial` holds the ids already revoked at start.
  RevocationWatcher(std::string path, std::set<std::string> initial, coordinator::Coordinator* coordinator);
  // Re-reads the file if its modification time or size changed. A file that no longer parses
  // is reported (once per change) and changes nothing.
  void Poll();

 private:
  std::string path_;
  std::set<std::string> revoked_;
  coordinator::Coordinator* coordinator_;
  std::filesystem::file_time_type mtime_{};
  uintmax_t size_ = 0;
};

}  // namespace tessera::cli
