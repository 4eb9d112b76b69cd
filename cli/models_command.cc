#include "cli/models_command.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/data/idx_reader.h"
#include "client/torch/torch_export.h"
#include "coordinator/state_store.h"
#include "core/file_io.h"
#include "core/logging.h"
#include "core/model_card.h"
#include "core/proto_convert.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::cli {
namespace {

namespace fs = std::filesystem;
namespace ct = client::torch;
using core::StrCat;

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;

// Where a run's models and state live.
struct RunDirs {
  fs::path models;  // the model_vNNNNNN.safetensors files
  fs::path output;  // the run's --output (state.db, summary.json)
};

// `from` is a run's output directory or its models/ subdirectory.
absl::StatusOr<RunDirs> ResolveDirs(const std::string& from) {
  std::error_code ec;
  if (!fs::is_directory(from, ec)) return absl::NotFoundError(StrCat("no directory ", from));
  if (fs::is_directory(fs::path(from) / "models", ec)) return RunDirs{fs::path(from) / "models", fs::path(from)};
  fs::path models = fs::absolute(from, ec).lexically_normal();
  if (!models.has_filename()) models = models.parent_path();  // "run/models/"
  return RunDirs{models, models.parent_path()};
}

// What is known of one version before its file is read.
struct VersionRecord {
  core::ModelVersion version = 0;
  fs::path file;
  core::RoundNumber round = 0;
  std::string run_id;
  std::optional<core::ModelVersion> parent;
  std::optional<int64_t> contributing_clients;
  core::Metrics metrics;
  std::string created_at;
  bool in_state_db = false;
  std::string state_db_digest;  // SHA-256 (raw) of the version's serialized model, as state.db recorded it
};

using Records = std::map<core::ModelVersion, VersionRecord>;

std::string FileTime(const fs::path& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return core::FormatUtc(absl::FromUnixSeconds(st.st_mtime));
}

absl::StatusOr<Records> ScanModelFiles(const fs::path& dir) {
  static const std::regex kName(R"(model_v(\d{6,18})\.safetensors)");
  Records records;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    if (!std::regex_match(name, m, kName)) continue;
    VersionRecord r;
    r.version = std::stoull(m[1].str());
    r.file = entry.path();
    if (r.version > 0) r.parent = r.version - 1;  // each completed round publishes the next version
    r.created_at = FileTime(entry.path());
    records[r.version] = std::move(r);
  }
  if (ec) return absl::PermissionDeniedError(StrCat("cannot list ", dir.string(), ": ", ec.message()));
  return records;
}

// ----------------------------------------------------------------------------- state.db (read-only)

struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};

std::string ColumnText(sqlite3_stmt* s, int i) {
  const auto* p = static_cast<const char*>(sqlite3_column_blob(s, i));
  return p == nullptr ? "" : std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, i)));
}

// Adds what the coordinator's state database knows to the records of the files: each version's
// round, parent, contributing clients, metrics and close time. A version the database has and
// the directory lacks is kept (its file is reported missing when read).
//
// Read-only, and leaving no trace: a read-only connection to a WAL database creates the -wal and
// -shm files when they are missing and cannot remove them. They exist while any connection (a
// running coordinator) has the database open; without them nothing writes it, and it is opened
// immutable (no side files, no locks).
absl::Status MergeStateDb(const fs::path& path, const fs::path& models_dir, Records& records) {
  std::error_code ec;
  const bool in_use = fs::exists(path.string() + "-wal", ec) || fs::exists(path.string() + "-shm", ec);
  std::string uri = "file:";
  for (const char ch : fs::absolute(path, ec).string()) {
    if (ch == '%' || ch == '?' || ch == '#') {
      char escaped[4];
      std::snprintf(escaped, sizeof(escaped), "%%%02X", static_cast<unsigned char>(ch));
      uri += escaped;
    } else {
      uri += ch;
    }
  }
  uri += in_use ? "?mode=ro" : "?mode=ro&immutable=1";
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(uri.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr);
  std::unique_ptr<sqlite3, SqliteCloser> db(raw);
  auto damaged = [&](std::string_view what) {
    return absl::DataLossError(StrCat(path.string(), " is not a readable Tessera state database (", what, ": ",
                                      db ? sqlite3_errmsg(db.get()) : "out of memory", ")"));
  };
  if (rc != SQLITE_OK) return damaged("open");
  sqlite3_busy_timeout(db.get(), 5000);
  std::string run_id;
  {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db.get(), "SELECT value FROM meta WHERE key = 'run_id'", -1, &s, nullptr) != SQLITE_OK) {
      return damaged("meta");
    }
    std::unique_ptr<sqlite3_stmt, StmtFinalizer> stmt(s);
    if (sqlite3_step(s) == SQLITE_ROW) run_id = ColumnText(s, 0);
  }
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db.get(),
                         "SELECT v.version, v.round, r.model_version, r.opened_us, r.summary, v.sha256 FROM versions v "
                         "LEFT JOIN rounds r ON r.round = v.round AND v.version > 0 ORDER BY v.version",
                         -1, &s, nullptr) != SQLITE_OK) {
    return damaged("versions");
  }
  std::unique_ptr<sqlite3_stmt, StmtFinalizer> stmt(s);
  int step;
  while ((step = sqlite3_step(s)) == SQLITE_ROW) {
    const auto version = static_cast<core::ModelVersion>(sqlite3_column_int64(s, 0));
    VersionRecord& r = records[version];
    if (r.file.empty()) {
      char name[64];
      std::snprintf(name, sizeof(name), "model_v%06llu.safetensors", static_cast<unsigned long long>(version));
      r.file = models_dir / name;
    }
    r.version = version;
    r.in_state_db = true;
    r.run_id = run_id;
    r.round = static_cast<core::RoundNumber>(sqlite3_column_int64(s, 1));
    r.state_db_digest = ColumnText(s, 5);
    if (sqlite3_column_type(s, 2) != SQLITE_NULL) {
      const auto parent = static_cast<core::ModelVersion>(sqlite3_column_int64(s, 2));
      if (parent < version) r.parent = parent;
    }
    if (sqlite3_column_type(s, 4) == SQLITE_NULL) continue;
    auto summary = coordinator::SummaryFromJson(ColumnText(s, 4));
    if (!summary.ok()) return damaged(StrCat("round ", r.round, ": ", summary.status().message()));
    r.contributing_clients = summary->reported;
    r.metrics = summary->server_metrics;
    for (const auto& [k, v] : summary->client_metrics) r.metrics["clients." + k] = v;
    const int64_t opened_us = sqlite3_column_int64(s, 3);
    if (opened_us > 0) r.created_at = core::FormatUtc(absl::FromUnixMicros(opened_us) + summary->duration);
  }
  if (step != SQLITE_DONE) return damaged("versions");
  return absl::OkStatus();
}

absl::StatusOr<Records> ReadRecords(const RunDirs& dirs) {
  TESSERA_ASSIGN_OR_RETURN(Records records, ScanModelFiles(dirs.models));
  const fs::path db = dirs.output / "state.db";
  std::error_code ec;
  if (fs::is_regular_file(db, ec)) TESSERA_RETURN_IF_ERROR(MergeStateDb(db, dirs.models, records));
  if (records.empty()) {
    return absl::NotFoundError(StrCat("no model versions in ", dirs.models.string(), " (no model_vNNNNNN.safetensors)"));
  }
  return records;
}

// ----------------------------------------------------------------------------- one version

struct LoadedVersion {
  VersionRecord record;
  core::SafetensorsFile file;
  std::string bytes;
  std::string sha256;  // hex, of `bytes`
};

absl::StatusOr<LoadedVersion> LoadVersion(VersionRecord record) {
  LoadedVersion v;
  auto bytes = core::ReadFile(record.file.string());
  if (!bytes.ok()) {
    return absl::DataLossError(StrCat("model version ", record.version, ": cannot read ", record.file.string(), ": ",
                                      bytes.status().message()));
  }
  v.bytes = *std::move(bytes);
  auto file = core::DecodeSafetensors(v.bytes);
  if (!file.ok()) {
    return absl::DataLossError(StrCat(record.file.string(), " is damaged: ", file.status().message()));
  }
  v.file = *std::move(file);
  const auto& meta = v.file.metadata;
  auto get = [&](const std::string& key) -> std::string {
    auto it = meta.find(key);
    return it == meta.end() ? "" : it->second;
  };
  if (get("version") != std::to_string(record.version)) {
    return absl::DataLossError(StrCat(record.file.string(), " says it holds version '", get("version"),
                                      "', its name says ", record.version));
  }
  if (record.in_state_db) {
    // The digest ModelStore::Reopen checks: a valid file of other weights is no less damaged.
    if (!record.state_db_digest.empty() &&
        core::Sha256Digest(core::SerializeModel(v.file.weights)) != record.state_db_digest) {
      return absl::DataLossError(
          StrCat(record.file.string(), " is not the model version ", record.version, " that state.db recorded"));
    }
  } else {
    if (!absl::SimpleAtoi(get("round"), &record.round)) {
      return absl::DataLossError(StrCat(record.file.string(), " has no valid round in its metadata"));
    }
    record.run_id = get("run_id");
    for (const auto& [k, value] : meta) {
      if (k.rfind("metric.", 0) != 0) continue;
      if (!absl::SimpleAtod(value, &record.metrics[k.substr(7)])) {
        return absl::DataLossError(StrCat(record.file.string(), ": metric ", k, " is not a number"));
      }
    }
  }
  v.sha256 = core::HexEncode(core::Sha256Digest(v.bytes));
  v.record = std::move(record);
  return v;
}

absl::StatusOr<LoadedVersion> LoadChosenVersion(const Records& records, int64_t version, const RunDirs& dirs) {
  const uint64_t wanted = version < 0 ? records.rbegin()->first : static_cast<uint64_t>(version);
  auto it = records.find(wanted);
  if (it == records.end()) {
    return absl::NotFoundError(StrCat("no model version ", wanted, " in ", dirs.models.string(), " (versions ",
                                      records.begin()->first, " to ", records.rbegin()->first, ")"));
  }
  return LoadVersion(it->second);
}

// ----------------------------------------------------------------------------- the card

bool IsZoo(const std::string& a) { return a == "logreg" || a == "mlp" || a == "cnn"; }

// The architecture the run's summary.json names, "" when there is none.
std::string SummaryModel(const RunDirs& dirs) {
  auto text = core::ReadFile((dirs.output / "summary.json").string(), 1 << 20);
  if (!text.ok()) return "";
  const auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("config") || !j["config"].is_object()) return "";
  const auto& model = j["config"].value("model", nlohmann::json());
  return model.is_string() ? model.get<std::string>() : "";
}

struct Described {
  ct::ModelSpec spec;
  client::Preprocessing preprocessing;
  core::ModelCard card;
};

absl::StatusOr<Described> Describe(const ModelsArgs& a, const RunDirs& dirs, const LoadedVersion& v) {
  Described d;
  std::string architecture = a.model;
  if (architecture.empty()) {
    const std::string recorded = SummaryModel(dirs);
    if (!recorded.empty() && !IsZoo(recorded)) {
      return absl::FailedPreconditionError(
          StrCat("the run trained the TorchScript model '", recorded, "': give its file with --model"));
    }
  }
  if (architecture.empty() || IsZoo(architecture)) {
    auto inferred = ct::InferZooSpec(v.file.weights);
    if (!inferred.ok()) return inferred.status();
    if (!architecture.empty() && architecture != inferred->architecture) {
      return absl::FailedPreconditionError(StrCat("version ", v.record.version, " holds the weights of a ",
                                                  inferred->architecture, ", not of a ", architecture));
    }
    d.spec = *std::move(inferred);
  } else {
    d.spec = ct::ModelSpec{architecture, {1, 28, 28}, 10};
  }
  if (!a.input_shape.empty()) d.spec.input_shape = a.input_shape;
  if (a.num_classes > 0) d.spec.num_classes = a.num_classes;

  int64_t numel = 1;
  for (int64_t dim : d.spec.input_shape) numel *= dim;
  const bool fashion =
      a.dataset == "fashion-mnist" || (a.dataset == "auto" && numel == 28 * 28 && d.spec.num_classes == 10);
  core::ModelCard& c = d.card;
  if (fashion) {
    d.preprocessing = client::FashionMnistPreprocessing();
    c.dataset = "fashion-mnist";
    c.class_labels = client::FashionMnistClassNames();
    c.input_description = "raw pixel values in [0, 255] of 28x28 grayscale images, as float32";
    if (d.spec.num_classes != static_cast<int>(c.class_labels.size())) {
      return absl::FailedPreconditionError(
          StrCat("Fashion-MNIST has 10 classes, the model ", d.spec.num_classes, ": give --dataset none"));
    }
  } else {
    c.input_description = "model inputs as the clients' data readers produced them (no preprocessing recorded)";
  }
  const auto& p = d.preprocessing;
  c.preprocessing = {p.scale, p.mean, p.stddev, /*in_module=*/false};
  c.framework_version = std::string(core::FrameworkVersion());
  c.architecture = IsZoo(d.spec.architecture) ? d.spec.architecture : fs::path(d.spec.architecture).filename().string();
  c.input_shape = d.spec.input_shape;
  c.num_classes = d.spec.num_classes;
  const VersionRecord& r = v.record;
  c.run_id = r.run_id;
  c.version = r.version;
  c.round = r.round;
  c.parent_version = r.parent;
  c.contributing_clients = r.contributing_clients;
  c.metrics = r.metrics;
  c.created_at = r.created_at;
  c.weights_file = r.file.filename().string();
  c.weights_sha256 = v.sha256;
  c.num_parameters = v.file.weights.num_elements();
  return d;
}

// ----------------------------------------------------------------------------- subcommands

int Fail(const std::string& command, const absl::Status& s) {
  std::cerr << "tessera models " << command << ": " << s.message() << " [" << absl::StatusCodeToString(s.code())
            << "]\n";
  return kExitFailure;
}

std::string MetricsText(const core::Metrics& metrics) {
  std::string out;
  for (const auto& [k, v] : metrics) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.6g", v);
    out += StrCat(out.empty() ? "" : " ", k, "=", buf);
  }
  return out.empty() ? "-" : out;
}

int RunList(const ModelsArgs& a) {
  auto dirs = ResolveDirs(a.from);
  if (!dirs.ok()) return Fail("list", dirs.status());
  auto records = ReadRecords(*dirs);
  if (!records.ok()) return Fail("list", records.status());
  std::vector<LoadedVersion> versions;
  for (const auto& [version, record] : *records) {
    auto v = LoadVersion(record);
    if (!v.ok()) return Fail("list", v.status());
    versions.push_back(*std::move(v));
  }
  const bool from_db = versions.front().record.in_state_db;
  std::printf("# %s: %zu model versions (%s)\n", dirs->models.c_str(), versions.size(),
              from_db ? "state.db" : "the files' metadata");
  std::printf("%7s %6s  %-20s %6s %7s  %-64s  %s\n", "version", "round", "created", "parent", "clients", "sha256",
              "metrics");
  for (const LoadedVersion& v : versions) {
    const VersionRecord& r = v.record;
    std::printf("%7llu %6llu  %-20s %6s %7s  %-64s  %s\n", static_cast<unsigned long long>(r.version),
                static_cast<unsigned long long>(r.round), r.created_at.empty() ? "-" : r.created_at.c_str(),
                r.parent ? std::to_string(*r.parent).c_str() : "-",
                r.contributing_clients ? std::to_string(*r.contributing_clients).c_str() : "-", v.sha256.c_str(),
                MetricsText(r.metrics).c_str());
  }
  return 0;
}

absl::StatusOr<std::pair<LoadedVersion, Described>> LoadAndDescribe(const ModelsArgs& a) {
  TESSERA_ASSIGN_OR_RETURN(RunDirs dirs, ResolveDirs(a.from));
  TESSERA_ASSIGN_OR_RETURN(Records records, ReadRecords(dirs));
  TESSERA_ASSIGN_OR_RETURN(LoadedVersion v, LoadChosenVersion(records, a.version, dirs));
  TESSERA_ASSIGN_OR_RETURN(Described d, Describe(a, dirs, v));
  return std::make_pair(std::move(v), std::move(d));
}

int RunShow(const ModelsArgs& a) {
  auto loaded = LoadAndDescribe(a);
  if (!loaded.ok()) return Fail("show", loaded.status());
  std::printf("%s\n", core::ModelCardToJson(loaded->second.card).c_str());
  return 0;
}

int RunExport(const ModelsArgs& a) {
  auto loaded = LoadAndDescribe(a);
  if (!loaded.ok()) return Fail("export", loaded.status());
  auto& [v, d] = *loaded;
  if (a.format == "torchscript") {
    if (absl::Status s = ct::ExportTorchScript(d.spec, v.file.weights, d.preprocessing, a.out); !s.ok()) {
      return Fail("export", s);
    }
    d.card.preprocessing.in_module = true;
  } else if (absl::Status s = core::WriteFileAtomic(a.out, v.bytes); !s.ok()) {
    return Fail("export", s);
  }
  auto written = core::ReadFile(a.out);
  if (!written.ok()) return Fail("export", written.status());
  d.card.exported = core::ModelCard::Export{a.format, fs::path(a.out).filename().string(),
                                            core::HexEncode(core::Sha256Digest(*written)), core::FormatUtc(absl::Now())};
  const std::string card_path = a.out + ".card.json";
  if (absl::Status s = core::WriteFileAtomic(card_path, core::ModelCardToJson(d.card) + "\n"); !s.ok()) {
    return Fail("export", s);
  }
  std::printf("tessera models export: version %llu (round %llu) as %s: %s and %s\n",
              static_cast<unsigned long long>(d.card.version), static_cast<unsigned long long>(d.card.round),
              a.format.c_str(), a.out.c_str(), card_path.c_str());
  return 0;
}

// The options that say what the weights are, for show and export.
void AddDescriptionOptions(CLI::App* sub, ModelsArgs* a) {
  sub->add_option("--version", a->version, "Model version (default: the latest)")->check(CLI::NonNegativeNumber);
  sub->add_option("--model", a->model,
                  "logreg | mlp | cnn | PATH.pt (default: inferred from the weights; a TorchScript file must be given)");
  sub->add_option("--input-shape", a->input_shape, "Shape of one example, e.g. 1,28,28 (default: inferred)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  sub->add_option("--num-classes", a->num_classes, "Number of classes (default: inferred)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--dataset", a->dataset,
                  "fashion-mnist | none: the preprocessing and labels the card records (auto: fashion-mnist for "
                  "28x28 inputs and 10 classes)")
      ->check(CLI::IsMember({"auto", "fashion-mnist", "none"}))
      ->capture_default_str();
}

}  // namespace

void AddModels(CLI::App& app, ModelsArgs* args) {
  auto* models = app.add_subcommand("models", "List, describe and export a run's global model versions");
  models->require_subcommand(1);
  const std::string from_help = "The run's --output directory or its models/ subdirectory";

  auto* list = models->add_subcommand("list", "One line per model version");
  list->add_option("--from", args->from, from_help)->required();

  auto* show = models->add_subcommand("show", "Print a version's model card (JSON)");
  show->add_option("--from", args->from, from_help)->required();
  AddDescriptionOptions(show, args);

  auto* exp = models->add_subcommand("export", "Write a version as TorchScript or safetensors, with its model card");
  exp->add_option("--from", args->from, from_help)->required();
  AddDescriptionOptions(exp, args);
  exp->add_option("--format", args->format, "torchscript | safetensors")
      ->check(CLI::IsMember({"torchscript", "safetensors"}))
      ->capture_default_str();
  exp->add_option("--out", args->out, "Output file (the card goes to OUT.card.json)")->required();
}

int RunModels(CLI::App* sub, ModelsArgs& args) {
  core::SetLogLevel("warn");
  if (sub->get_subcommand("list")->parsed()) return RunList(args);
  if (sub->get_subcommand("show")->parsed()) return RunShow(args);
  if (sub->get_subcommand("export")->parsed()) return RunExport(args);
  return kExitUsage;
}

}  // namespace tessera::cli
