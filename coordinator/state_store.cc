#include "coordinator/state_store.h"

#include <sqlite3.h>

#include <filesystem>
#include <random>
#include <nlohmann/json.hpp>

#include "core/file_io.h"
#include "core/logging.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::coordinator {

using core::StrCat;
using nlohmann::json;

namespace {

constexpr int kSchemaVersion = 1;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients(id TEXT PRIMARY KEY, properties TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked(id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS versions(version INTEGER PRIMARY KEY, round INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds(
  round INTEGER PRIMARY KEY, state TEXT NOT NULL, opened_us INTEGER NOT NULL, deadline_us INTEGER NOT NULL,
  model_version INTEGER NOT NULL, target INTEGER NOT NULL, sampling_rate REAL NOT NULL, clip_norm REAL NOT NULL,
  secure INTEGER NOT NULL, summary TEXT);
CREATE TABLE IF NOT EXISTS tasks(
  round INTEGER NOT NULL, seq INTEGER NOT NULL, client TEXT NOT NULL, task_id TEXT NOT NULL,
  answer TEXT NOT NULL DEFAULT '', PRIMARY KEY(round, client));
CREATE TABLE IF NOT EXISTS results(
  id INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER NOT NULL, task_id TEXT NOT NULL UNIQUE, client TEXT NOT NULL,
  num_examples INTEGER NOT NULL, metrics TEXT NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL);
)sql";

absl::Status SqlError(sqlite3* db, std::string_view what) {
  const int code = sqlite3_errcode(db);
  std::string msg = StrCat("state database: ", what, ": ", sqlite3_errmsg(db));
  switch (code & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return absl::DataLossError(msg);
    case SQLITE_FULL:
    case SQLITE_NOMEM: return absl::ResourceExhaustedError(msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return absl::UnavailableError(msg);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY: return absl::PermissionDeniedError(msg);
    default: return absl::InternalError(msg);
  }
}

// One prepared statement, bound by position from 1, finalized on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& Bind(int i, int64_t v) { Check(sqlite3_bind_int64(stmt_, i, v)); return *this; }
  Stmt& Bind(int i, double v) { Check(sqlite3_bind_double(stmt_, i, v)); return *this; }
  Stmt& Bind(int i, const std::string& v) {
    Check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  // SQLITE_ROW: true; SQLITE_DONE: false.
  absl::StatusOr<bool> Step() {
    if (rc_ != SQLITE_OK) return SqlError(db_, "preparing a statement");
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqlError(db_, "executing a statement");
  }
  absl::Status Run() { return Step().status(); }
  // Ready to run again with new bindings.
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Real(int col) const { return sqlite3_column_double(stmt_, col); }
  std::string Text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }

 private:
  void Check(int rc) {
    if (rc_ == SQLITE_OK && rc != SQLITE_OK) rc_ = rc;
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

// BEGIN IMMEDIATE .. COMMIT; rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {}
  ~Transaction() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  absl::Status Begin() {
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return SqlError(db_, "begin");
    open_ = true;
    return absl::OkStatus();
  }
  absl::Status Commit() {
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return SqlError(db_, "commit");
    open_ = false;
    return absl::OkStatus();
  }

 private:
  sqlite3* db_;
  bool open_ = false;
};

int64_t ToMicros(absl::Time t) { return absl::ToUnixMicros(t); }
absl::Time FromMicros(int64_t us) { return absl::FromUnixMicros(us); }

json MetricsToJson(const core::Metrics& m) {
  json j = json::object();
  // JSON has no NaN/Inf: such values are dropped (they never enter an aggregate either).
  for (const auto& [k, v] : m) {
    if (std::isfinite(v)) j[k] = v;
  }
  return j;
}

absl::StatusOr<core::Metrics> MetricsFromJson(const json& j) {
  if (!j.is_object()) return absl::DataLossError("metrics are not a JSON object");
  core::Metrics m;
  for (const auto& [k, v] : j.items()) {
    if (!v.is_number()) return absl::DataLossError(StrCat("metric '", k, "' is not a number"));
    m[k] = v.get<double>();
  }
  return m;
}

}  // namespace

std::string SummaryToJson(const RoundSummary& s) {
  json j = {{"round", s.round},
            {"outcome", std::string(RoundOutcomeName(s.outcome))},
            {"reason", s.reason},
            {"sampled", s.sampled},
            {"reported", s.reported},
            {"rejected", s.rejected},
            {"dropped", s.dropped},
            {"model_version", s.model_version},
            {"server_metrics", MetricsToJson(s.server_metrics)},
            {"client_metrics", MetricsToJson(s.client_metrics)},
            {"duration_s", absl::ToDoubleSeconds(s.duration)},
            {"aggregate_time_s", absl::ToDoubleSeconds(s.aggregate_time)},
            {"eval_time_s", absl::ToDoubleSeconds(s.eval_time)},
            {"epsilon", std::isfinite(s.epsilon) ? s.epsilon : -1.0},
            {"dp_clip_norm", s.dp_clip_norm}};
  return j.dump();
}

absl::StatusOr<RoundSummary> SummaryFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::DataLossError("a round summary is not a JSON object");
  try {
    RoundSummary s;
    s.round = j.at("round").get<core::RoundNumber>();
    s.outcome = j.at("outcome").get<std::string>() == "completed" ? RoundOutcome::kCompleted : RoundOutcome::kAbandoned;
    s.reason = j.at("reason").get<std::string>();
    s.sampled = j.at("sampled").get<int>();
    s.reported = j.at("reported").get<int>();
    s.rejected = j.at("rejected").get<int>();
    s.dropped = j.at("dropped").get<int>();
    s.model_version = j.at("model_version").get<core::ModelVersion>();
    TESSERA_ASSIGN_OR_RETURN(s.server_metrics, MetricsFromJson(j.at("server_metrics")));
    TESSERA_ASSIGN_OR_RETURN(s.client_metrics, MetricsFromJson(j.at("client_metrics")));
    s.duration = absl::Seconds(j.at("duration_s").get<double>());
    s.aggregate_time = absl::Seconds(j.at("aggregate_time_s").get<double>());
    s.eval_time = absl::Seconds(j.at("eval_time_s").get<double>());
    const double eps = j.at("epsilon").get<double>();
    s.epsilon = eps < 0 ? std::numeric_limits<double>::infinity() : eps;
    s.dp_clip_norm = j.at("dp_clip_norm").get<double>();
    return s;
  } catch (const json::exception& e) {
    return absl::DataLossError(StrCat("a round summary is damaged: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(Options options) {
  if (options.path.empty()) return absl::InvalidArgumentError("the state database needs a path");
  std::error_code ec;
  const std::filesystem::path path(options.path);
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  std::filesystem::create_directories(options.path + ".spool", ec);
  if (ec) return absl::PermissionDeniedError(StrCat("cannot create ", options.path, ".spool: ", ec.message()));
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(options.path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<StateStore> store(new StateStore(std::move(options), db));
  if (rc != SQLITE_OK) return SqlError(db, StrCat("opening ", store->options_.path));
  sqlite3_busy_timeout(db, 5000);
  // WAL: a commit appends to the log; readers never block. NORMAL sync in WAL mode loses no
  // committed transaction when the process dies, only (at most) the last ones when the machine
  // does; FULL syncs each commit.
  TESSERA_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  TESSERA_RETURN_IF_ERROR(store->Exec(store->options_.sync_to_disk ? "PRAGMA synchronous=FULL"
                                                                   : "PRAGMA synchronous=NORMAL"));
  TESSERA_RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys=ON"));
  TESSERA_RETURN_IF_ERROR(store->Exec(kSchema));

  Stmt get(db, "SELECT key, value FROM meta WHERE key IN ('run_id', 'schema')");
  std::map<std::string, std::string> meta;
  for (;;) {
    TESSERA_ASSIGN_OR_RETURN(bool row, get.Step());
    if (!row) break;
    meta[get.Text(0)] = get.Text(1);
  }
  if (meta.empty()) {
    Stmt put(db, "INSERT INTO meta(key, value) VALUES ('run_id', ?1), ('schema', ?2)");
    TESSERA_RETURN_IF_ERROR(put.Bind(1, store->options_.run_id).Bind(2, std::to_string(kSchemaVersion)).Run());
  } else {
    if (meta["run_id"] != store->options_.run_id) {
      return absl::FailedPreconditionError(StrCat("state database ", store->options_.path, " belongs to run '",
                                                  meta["run_id"], "', not '", store->options_.run_id,
                                                  "': use another --output or the same --run-id"));
    }
    if (meta["schema"] != std::to_string(kSchemaVersion)) {
      return absl::FailedPreconditionError(StrCat("state database ", store->options_.path, " has schema ",
                                                  meta["schema"], ", this build reads ", kSchemaVersion));
    }
  }
  return store;
}

StateStore::StateStore(Options options, sqlite3* db)
    : options_(std::move(options)), db_(db), spool_nonce_(core::Rng(std::random_device{}())()) {}

StateStore::~StateStore() { sqlite3_close_v2(db_); }

absl::Status StateStore::Exec(const std::string& sql) {
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    return SqlError(db_, StrCat("'", sql.substr(0, 40), "'"));
  }
  return absl::OkStatus();
}

absl::Status StateStore::SaveClient(const core::ClientId& id, const std::map<std::string, std::string>& properties) {
  json props = properties;
  Stmt s(db_, "INSERT INTO clients(id, properties) VALUES (?1, ?2) "
              "ON CONFLICT(id) DO UPDATE SET properties = excluded.properties");
  return s.Bind(1, id.value).Bind(2, props.dump()).Run();
}

absl::Status StateStore::SaveRevoked(const std::string& id) {
  Transaction tx(db_);
  TESSERA_RETURN_IF_ERROR(tx.Begin());
  TESSERA_RETURN_IF_ERROR(Stmt(db_, "INSERT OR IGNORE INTO revoked(id) VALUES (?1)").Bind(1, id).Run());
  TESSERA_RETURN_IF_ERROR(Stmt(db_, "DELETE FROM clients WHERE id = ?1").Bind(1, id).Run());
  return tx.Commit();
}

absl::Status StateStore::ForgetClient(const core::ClientId& id) {
  return Stmt(db_, "DELETE FROM clients WHERE id = ?1").Bind(1, id.value).Run();
}

absl::Status StateStore::SaveInitialVersion(const std::string& model_sha256) {
  Stmt s(db_, "INSERT OR REPLACE INTO versions(version, round, sha256) VALUES (0, 0, ?1)");
  return s.Bind(1, model_sha256).Run();
}

absl::Status StateStore::RoundOpened(const PersistedRound& r) {
  Transaction tx(db_);
  TESSERA_RETURN_IF_ERROR(tx.Begin());
  Stmt round(db_, "INSERT OR REPLACE INTO rounds(round, state, opened_us, deadline_us, model_version, target, "
                  "sampling_rate, clip_norm, secure, summary) VALUES (?1, 'open', ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)");
  TESSERA_RETURN_IF_ERROR(round.Bind(1, static_cast<int64_t>(r.round))
                              .Bind(2, ToMicros(r.opened_at))
                              .Bind(3, ToMicros(r.deadline))
                              .Bind(4, static_cast<int64_t>(r.model_version))
                              .Bind(5, static_cast<int64_t>(r.target_results))
                              .Bind(6, r.sampling_rate)
                              .Bind(7, r.clip_norm)
                              .Bind(8, static_cast<int64_t>(r.secure))
                              .Run());
  Stmt t(db_, "INSERT OR REPLACE INTO tasks(round, seq, client, task_id, answer) VALUES (?1, ?2, ?3, ?4, '')");
  for (size_t i = 0; i < r.tasks.size(); ++i) {
    t.Reset();
    TESSERA_RETURN_IF_ERROR(t.Bind(1, static_cast<int64_t>(r.round))
                                .Bind(2, static_cast<int64_t>(i))
                                .Bind(3, r.tasks[i].client.value)
                                .Bind(4, r.tasks[i].task_id)
                                .Run());
  }
  return tx.Commit();
}

absl::StatusOr<SpooledResult> StateStore::Spool(const core::ModelWeights& weights) const {
  SpooledResult out;
  out.file = StrCat("result_", spool_nonce_, "_", spool_counter_.fetch_add(1), ".safetensors");
  const std::string bytes = core::EncodeSafetensors(weights);
  out.sha256 = core::Sha256Digest(bytes);
  TESSERA_RETURN_IF_ERROR(
      core::WriteFileAtomic((std::filesystem::path(SpoolDir()) / out.file).string(), bytes, options_.sync_to_disk));
  return out;
}

void StateStore::Discard(const SpooledResult& spooled) const {
  std::error_code ec;
  std::filesystem::remove(std::filesystem::path(SpoolDir()) / spooled.file, ec);
}

absl::Status StateStore::ResultAccepted(core::RoundNumber round, const std::string& task_id,
                                        const core::ClientId& client, int64_t num_examples,
                                        const core::Metrics& metrics, const SpooledResult& spooled) {
  Transaction tx(db_);
  TESSERA_RETURN_IF_ERROR(tx.Begin());
  Stmt insert(db_, "INSERT INTO results(round, task_id, client, num_examples, metrics, file, sha256) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  TESSERA_RETURN_IF_ERROR(insert.Bind(1, static_cast<int64_t>(round))
                              .Bind(2, task_id)
                              .Bind(3, client.value)
                              .Bind(4, num_examples)
                              .Bind(5, MetricsToJson(metrics).dump())
                              .Bind(6, spooled.file)
                              .Bind(7, spooled.sha256)
                              .Run());
  Stmt answer(db_, "UPDATE tasks SET answer = 'accepted' WHERE round = ?1 AND client = ?2");
  TESSERA_RETURN_IF_ERROR(answer.Bind(1, static_cast<int64_t>(round)).Bind(2, client.value).Run());
  return tx.Commit();
}

absl::Status StateStore::TaskAnswered(core::RoundNumber round, const core::ClientId& client,
                                      const std::string& answer) {
  Stmt s(db_, "UPDATE tasks SET answer = ?1 WHERE round = ?2 AND client = ?3");
  return s.Bind(1, answer).Bind(2, static_cast<int64_t>(round)).Bind(3, client.value).Run();
}

absl::Status StateStore::RoundClosed(const RoundSummary& summary, const std::optional<std::string>& published_sha256,
                                     const std::string& privacy_state) {
  std::vector<std::string> spooled;
  {
    Stmt files(db_, "SELECT file FROM results WHERE round = ?1 AND file != ''");
    files.Bind(1, static_cast<int64_t>(summary.round));
    for (;;) {
      TESSERA_ASSIGN_OR_RETURN(bool row, files.Step());
      if (!row) break;
      spooled.push_back(files.Text(0));
    }
  }
  Transaction tx(db_);
  TESSERA_RETURN_IF_ERROR(tx.Begin());
  const auto round = static_cast<int64_t>(summary.round);
  if (published_sha256) {
    Stmt v(db_, "INSERT OR REPLACE INTO versions(version, round, sha256) VALUES (?1, ?2, ?3)");
    TESSERA_RETURN_IF_ERROR(v.Bind(1, static_cast<int64_t>(summary.model_version)).Bind(2, round).Bind(3, *published_sha256).Run());
  }
  // A round abandoned before it opened (secure aggregation that cannot run) has no row yet.
  Stmt r(db_, "INSERT INTO rounds(round, state, opened_us, deadline_us, model_version, target, sampling_rate, "
              "clip_norm, secure, summary) VALUES (?1, ?2, 0, 0, ?3, 0, 0, 0, 0, ?4) "
              "ON CONFLICT(round) DO UPDATE SET state = excluded.state, summary = excluded.summary");
  TESSERA_RETURN_IF_ERROR(r.Bind(1, round)
                              .Bind(2, std::string(RoundOutcomeName(summary.outcome)))
                              .Bind(3, static_cast<int64_t>(summary.model_version))
                              .Bind(4, SummaryToJson(summary))
                              .Run());
  TESSERA_RETURN_IF_ERROR(Stmt(db_, "DELETE FROM tasks WHERE round <= ?1").Bind(1, round).Run());
  TESSERA_RETURN_IF_ERROR(Stmt(db_, "DELETE FROM results WHERE round < ?1").Bind(1, round).Run());
  TESSERA_RETURN_IF_ERROR(Stmt(db_, "UPDATE results SET file = '' WHERE round = ?1").Bind(1, round).Run());
  if (!privacy_state.empty()) {
    Stmt p(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES ('privacy', ?1)");
    TESSERA_RETURN_IF_ERROR(p.Bind(1, privacy_state).Run());
  }
  TESSERA_RETURN_IF_ERROR(tx.Commit());
  // Only now may the spooled results go: the round's outcome no longer needs them.
  for (const std::string& f : spooled) {
    std::error_code ec;
    std::filesystem::remove(std::filesystem::path(SpoolDir()) / f, ec);
  }
  return absl::OkStatus();
}

absl::StatusOr<core::ModelWeights> StateStore::ReadSpooled(const PersistedResult& result) const {
  const std::string path = (std::filesystem::path(SpoolDir()) / result.spool_file).string();
  TESSERA_ASSIGN_OR_RETURN(std::string bytes, core::ReadFile(path));
  if (core::Sha256Digest(bytes) != result.sha256) {
    return absl::DataLossError(StrCat("spooled result ", path, " does not match its digest"));
  }
  TESSERA_ASSIGN_OR_RETURN(core::SafetensorsFile file, core::DecodeSafetensors(bytes));
  return std::move(file.weights);
}

absl::StatusOr<std::optional<RestoredState>> StateStore::Load() {
  RestoredState st;
  {
    Stmt v(db_, "SELECT version, round, sha256 FROM versions ORDER BY version DESC LIMIT 1");
    TESSERA_ASSIGN_OR_RETURN(bool row, v.Step());
    if (!row) return std::nullopt;  // a new run
    st.model_version = static_cast<core::ModelVersion>(v.Int(0));
    st.model_round = static_cast<core::RoundNumber>(v.Int(1));
    st.model_sha256 = v.Text(2);
  }
  {
    Stmt c(db_, "SELECT id, properties FROM clients");
    for (;;) {
      TESSERA_ASSIGN_OR_RETURN(bool row, c.Step());
      if (!row) break;
      json props = json::parse(c.Text(1), nullptr, false);
      std::map<std::string, std::string> p;
      if (props.is_object()) {
        for (const auto& [k, val] : props.items()) {
          if (val.is_string()) p[k] = val.get<std::string>();
        }
      }
      st.clients[core::ClientId{c.Text(0)}] = std::move(p);
    }
  }
  {
    Stmt r(db_, "SELECT id FROM revoked");
    for (;;) {
      TESSERA_ASSIGN_OR_RETURN(bool row, r.Step());
      if (!row) break;
      st.revoked.insert(r.Text(0));
    }
  }
  {
    Stmt p(db_, "SELECT value FROM meta WHERE key = 'privacy'");
    TESSERA_ASSIGN_OR_RETURN(bool row, p.Step());
    if (row) st.privacy_state = p.Text(0);
  }
  {
    Stmt r(db_, "SELECT round, state, opened_us, deadline_us, model_version, target, sampling_rate, clip_norm, "
                "secure, summary FROM rounds ORDER BY round");
    for (;;) {
      TESSERA_ASSIGN_OR_RETURN(bool row, r.Step());
      if (!row) break;
      st.last_round = std::max(st.last_round, static_cast<core::RoundNumber>(r.Int(0)));
      if (r.Text(1) != "open") {
        TESSERA_ASSIGN_OR_RETURN(RoundSummary s, SummaryFromJson(r.Text(9)));
        st.history.push_back(std::move(s));
        continue;
      }
      PersistedRound open;
      open.round = static_cast<core::RoundNumber>(r.Int(0));
      open.opened_at = FromMicros(r.Int(2));
      open.deadline = FromMicros(r.Int(3));
      open.model_version = static_cast<core::ModelVersion>(r.Int(4));
      open.target_results = static_cast<int>(r.Int(5));
      open.sampling_rate = r.Real(6);
      open.clip_norm = r.Real(7);
      open.secure = r.Int(8) != 0;
      if (st.open_round) return absl::DataLossError("state database: two rounds are open");
      st.open_round = std::move(open);
    }
  }
  if (st.open_round) {
    PersistedRound& open = *st.open_round;
    Stmt t(db_, "SELECT client, task_id, answer FROM tasks WHERE round = ?1 ORDER BY seq");
    t.Bind(1, static_cast<int64_t>(open.round));
    for (;;) {
      TESSERA_ASSIGN_OR_RETURN(bool row, t.Step());
      if (!row) break;
      open.tasks.push_back({core::ClientId{t.Text(0)}, t.Text(1), t.Text(2)});
    }
  }
  std::set<std::string> referenced;
  {
    Stmt res(db_, "SELECT round, task_id, client, num_examples, metrics, file, sha256 FROM results ORDER BY id");
    for (;;) {
      TESSERA_ASSIGN_OR_RETURN(bool row, res.Step());
      if (!row) break;
      const auto round = static_cast<core::RoundNumber>(res.Int(0));
      if (st.open_round && round == st.open_round->round) {
        PersistedResult pr;
        pr.task_id = res.Text(1);
        pr.client = core::ClientId{res.Text(2)};
        pr.num_examples = res.Int(3);
        TESSERA_ASSIGN_OR_RETURN(pr.metrics, MetricsFromJson(json::parse(res.Text(4), nullptr, false)));
        pr.spool_file = res.Text(5);
        pr.sha256 = res.Text(6);
        referenced.insert(pr.spool_file);
        st.open_round->accepted.push_back(std::move(pr));
      } else {  // closing a round forgets the rounds before it: these are the last closed round's
        st.accepted_last_round[res.Text(1)] = core::UploadAck{false, round};
      }
    }
  }
  // A result whose row never committed left its file behind: nobody was told it was accepted.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(SpoolDir(), ec)) {
    if (!referenced.contains(entry.path().filename().string())) std::filesystem::remove(entry.path(), ec);
  }
  return st;
}

}  // namespace tessera::coordinator
