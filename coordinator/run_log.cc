#include "coordinator/run_log.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/file_io.h"
#include "core/strings.h"

namespace tessera::coordinator {

using nlohmann::json;

absl::StatusOr<std::unique_ptr<RunLog>> RunLog::Create(std::string output_dir, core::RoundNumber num_rounds,
                                                       std::FILE* progress) {
  std::unique_ptr<RunLog> log(new RunLog(output_dir, num_rounds, progress));
  if (!output_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(output_dir, ec);
    if (ec) return absl::PermissionDeniedError(core::StrCat("cannot create output directory ", output_dir, ": ", ec.message()));
    std::string path = (std::filesystem::path(output_dir) / "metrics.jsonl").string();
    log->metrics_ = std::fopen(path.c_str(), "w");
    if (log->metrics_ == nullptr) return absl::PermissionDeniedError(core::StrCat("cannot write ", path));
  }
  return log;
}

RunLog::RunLog(std::string output_dir, core::RoundNumber num_rounds, std::FILE* progress)
    : output_dir_(std::move(output_dir)), num_rounds_(num_rounds), progress_(progress), started_(absl::Now()) {}

RunLog::~RunLog() {
  if (metrics_) std::fclose(metrics_);
}

namespace {
json MetricsJson(const core::Metrics& m) {
  json j = json::object();
  for (const auto& [k, v] : m) j[k] = v;
  return j;
}
double Get(const core::Metrics& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? std::nan("") : it->second;
}

// One metrics.jsonl line.
json LineFor(const RoundSummary& s, absl::Time started) {
  json j;
  j["round"] = s.round;
  j["outcome"] = std::string(RoundOutcomeName(s.outcome));
  if (!s.reason.empty()) j["reason"] = s.reason;
  j["sampled"] = s.sampled;
  j["reported"] = s.reported;
  j["rejected"] = s.rejected;
  j["dropped"] = s.dropped;
  j["model_version"] = s.model_version;
  if (s.epsilon > 0) j["epsilon"] = s.epsilon;
  if (s.dp_clip_norm > 0) j["dp_clip_norm"] = s.dp_clip_norm;
  // Top-level accuracy/loss: the server's evaluation of the new model when there is one,
  // otherwise the clients' weighted held-out evaluation.
  const bool server = s.server_metrics.contains("accuracy");
  j["accuracy"] = server ? Get(s.server_metrics, "accuracy") : Get(s.client_metrics, "eval_accuracy");
  j["loss"] = server ? Get(s.server_metrics, "loss") : Get(s.client_metrics, "eval_loss");
  j["server_metrics"] = MetricsJson(s.server_metrics);
  j["client_metrics"] = MetricsJson(s.client_metrics);
  j["durations"] = {{"round_seconds", absl::ToDoubleSeconds(s.duration)},
                    {"aggregate_seconds", absl::ToDoubleSeconds(s.aggregate_time)},
                    {"eval_seconds", absl::ToDoubleSeconds(s.eval_time)},
                    {"wall_seconds", absl::ToDoubleSeconds(absl::Now() - started)}};
  return j;
}

}  // namespace

void RunLog::Resume(const std::vector<RoundSummary>& history) {
  std::lock_guard lock(mu_);
  rounds_ = history;
  if (!metrics_) return;
  // metrics.jsonl is rebuilt from the state database: a line the crash cut off comes back.
  for (const RoundSummary& s : history) {
    std::string line = LineFor(s, started_).dump() + "\n";
    std::fwrite(line.data(), 1, line.size(), metrics_);
  }
  std::fflush(metrics_);
}

void RunLog::OnRoundEnd(const RoundSummary& s) {
  const json j = LineFor(s, started_);
  std::lock_guard lock(mu_);
  rounds_.push_back(s);
  if (metrics_) {
    std::string line = j.dump() + "\n";
    std::fwrite(line.data(), 1, line.size(), metrics_);
    std::fflush(metrics_);
  }
  if (progress_) {
    double acc = j["accuracy"].is_number() ? j["accuracy"].get<double>() : std::nan("");
    double loss = j["loss"].is_number() ? j["loss"].get<double>() : std::nan("");
    std::fprintf(progress_, "round %3llu/%llu  %-9s  sampled %3d  reported %3d  accuracy %.4f  loss %.4f  %6.2f s\n",
                 static_cast<unsigned long long>(s.round), static_cast<unsigned long long>(num_rounds_),
                 std::string(RoundOutcomeName(s.outcome)).c_str(), s.sampled, s.reported, acc, loss,
                 absl::ToDoubleSeconds(s.duration));
    std::fflush(progress_);
  }
}

std::vector<RoundSummary> RunLog::rounds() const {
  std::lock_guard lock(mu_);
  return rounds_;
}

absl::Status RunLog::WriteSummary(const std::string& config_json) {
  if (output_dir_.empty()) return absl::OkStatus();
  std::vector<RoundSummary> rounds = this->rounds();
  json j;
  j["rounds"] = rounds.size();
  j["completed_rounds"] = std::count_if(rounds.begin(), rounds.end(),
                                        [](const RoundSummary& r) { return r.outcome == RoundOutcome::kCompleted; });
  j["wall_seconds"] = absl::ToDoubleSeconds(absl::Now() - started_);
  j["final_accuracy"] = nullptr;
  j["final_loss"] = nullptr;
  for (auto it = rounds.rbegin(); it != rounds.rend(); ++it) {
    if (it->outcome != RoundOutcome::kCompleted) continue;
    const auto& m = it->server_metrics.contains("accuracy") ? it->server_metrics : it->client_metrics;
    const std::string prefix = it->server_metrics.contains("accuracy") ? "" : "eval_";
    j["final_accuracy"] = Get(m, prefix + "accuracy");
    j["final_loss"] = Get(m, prefix + "loss");
    j["final_model_version"] = it->model_version;
    break;
  }
  j["config"] = json::parse(config_json, nullptr, false);
  return core::WriteFileAtomic((std::filesystem::path(output_dir_) / "summary.json").string(), j.dump(2) + "\n");
}

}  // namespace tessera::coordinator
