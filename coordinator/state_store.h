// StateStore: the coordinator's durable state in an embedded SQLite database (WAL).
//
// What a restart needs to go on as if nothing happened lives here: the run it belongs to, the
// registered and revoked clients, the global model versions (their files are the ModelStore's;
// the database records which version is current and its digest), every round's summary, and
// the open round: its sampled clients and tasks, each task's answer, and every accepted result.
// An accepted result is spooled to a file beside the database and its row committed before the
// client is acknowledged; a restart folds the spooled results of the open round again, in the
// order they were accepted, so that each counts exactly once and the aggregate is bit-identical.
// Closing a round is one transaction: the new version, the round's summary, the answers it no
// longer needs, and the privacy accountant's state move together.
//
// Durability: every transaction survives a crash of the process (SIGKILL) at any moment. With
// `sync_to_disk` it also survives a crash of the machine (fsync per commit and per spooled
// result), at the price of a disk flush per accepted result and registration.
//
// Not thread-safe: the Coordinator calls it under its mutex.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/round_state_machine.h"
#include "core/federation.h"
#include "core/tensor.h"

struct sqlite3;

namespace tessera::coordinator {

// One result the open round accepted, as persisted.
struct PersistedResult {
  std::string task_id;
  core::ClientId client;
  int64_t num_examples = 0;
  core::Metrics metrics;
  std::string spool_file;  // safetensors of the weights
  std::string sha256;      // of the spool file's bytes
};

// A result's weights written to the spool, not yet committed (see StateStore::Spool).
struct SpooledResult {
  std::string file;    // name in the spool directory
  std::string sha256;  // of its bytes
};

// The round that was open when the coordinator stopped.
struct PersistedRound {
  core::RoundNumber round = 0;
  absl::Time opened_at;
  absl::Time deadline;
  core::ModelVersion model_version = 0;
  int target_results = 0;
  double sampling_rate = 1.0;
  double clip_norm = 0;
  bool secure = false;
  // Sampled clients in sampling order, with their task ids and their answer so far
  // ("" pending, "accepted", "rejected" or "dropped").
  struct Task {
    core::ClientId client;
    std::string task_id;
    std::string answer;
  };
  std::vector<Task> tasks;
  std::vector<PersistedResult> accepted;  // in acceptance order
};

struct RestoredState {
  core::ModelVersion model_version = 0;
  core::RoundNumber model_round = 0;
  std::string model_sha256;  // of the version's serialized tessera.v1.Model
  std::map<core::ClientId, std::map<std::string, std::string>> clients;  // id -> properties
  std::set<std::string> revoked;
  std::vector<RoundSummary> history;
  core::RoundNumber last_round = 0;  // the highest round ever opened
  std::optional<PersistedRound> open_round;
  std::map<std::string, core::UploadAck> accepted_last_round;  // by task id
  std::string privacy_state;  // the accountant's JSON ("" when none)
};

class StateStore {
 public:
  struct Options {
    std::string path;       // the database file; the spool directory is `path` + ".spool"
    std::string run_id;     // a database of another run is refused
    bool sync_to_disk = false;
  };
  // Opens or creates the database. FAILED_PRECONDITION when it belongs to another run;
  // DATA_LOSS when it is not a Tessera state database or is damaged.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(Options options);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // The state of an earlier life of this run; nullopt for a new run. Removes spool files no row
  // refers to (a crash between writing one and committing its row).
  absl::StatusOr<std::optional<RestoredState>> Load();

  absl::Status SaveClient(const core::ClientId& id, const std::map<std::string, std::string>& properties);
  absl::Status SaveRevoked(const std::string& id);
  // A client the registry expired: it registers again when it comes back.
  absl::Status ForgetClient(const core::ClientId& id);
  // Version 0 of a new run.
  absl::Status SaveInitialVersion(const std::string& model_sha256);

  absl::Status RoundOpened(const PersistedRound& round);
  // Writes a result's weights to a spool file of its own. Thread-safe and free of the database,
  // so that transports spool outside the coordinator's lock; the file counts only once
  // ResultAccepted commits it (Load removes it otherwise), and Discard removes it at once.
  absl::StatusOr<SpooledResult> Spool(const core::ModelWeights& weights) const;
  void Discard(const SpooledResult& spooled) const;
  // Commits the result's row. When this returns OK the result survives a crash; the caller
  // acknowledges it only then.
  absl::Status ResultAccepted(core::RoundNumber round, const std::string& task_id, const core::ClientId& client,
                              int64_t num_examples, const core::Metrics& metrics, const SpooledResult& spooled);
  // A sampled client's task was answered without a result to keep ("rejected" or "dropped").
  absl::Status TaskAnswered(core::RoundNumber round, const core::ClientId& client, const std::string& answer);
  // The round closed (completed or abandoned). With `published_sha256` the round published
  // version summary.model_version. Removes the round's spooled results; keeps its accepted task
  // ids (retries are acknowledged across the close) and forgets those of older rounds.
  absl::Status RoundClosed(const RoundSummary& summary, const std::optional<std::string>& published_sha256,
                           const std::string& privacy_state);

  // The spooled weights of a result (DATA_LOSS when the file does not match its digest).
  absl::StatusOr<core::ModelWeights> ReadSpooled(const PersistedResult& result) const;

  const std::string& path() const { return options_.path; }

 private:
  StateStore(Options options, sqlite3* db);
  absl::Status Exec(const std::string& sql);
  std::string SpoolDir() const { return options_.path + ".spool"; }

  const Options options_;
  sqlite3* db_;
  const uint64_t spool_nonce_;                     // spool names of this process
  mutable std::atomic<uint64_t> spool_counter_{0};
};

// RoundSummary <-> JSON (the rounds table keeps each closed round's summary).
std::string SummaryToJson(const RoundSummary& summary);
absl::StatusOr<RoundSummary> SummaryFromJson(const std::string& json);

}  // namespace tessera::coordinator
