// RunLog: a RoundObserver that appends one JSON object per round to metrics.jsonl, prints a
// progress line per round, and writes summary.json at the end of a run.
// Thread-safe (OnRoundEnd may come from any thread; the Coordinator serializes it anyway).
#pragma once

#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "coordinator/round_state_machine.h"

namespace tessera::coordinator {

class RunLog final : public RoundObserver {
 public:
  // `output_dir` may be empty (no files). `progress` receives the per-round lines (may be null).
  // Creates the directory and truncates metrics.jsonl; PERMISSION_DENIED etc. when it cannot.
  static absl::StatusOr<std::unique_ptr<RunLog>> Create(std::string output_dir, core::RoundNumber num_rounds,
                                                        std::FILE* progress);
  ~RunLog() override;

  void OnRoundEnd(const RoundSummary& summary) override;
  // A resumed run: the rounds before the restart (rewritten to metrics.jsonl).
  void Resume(const std::vector<RoundSummary>& history);
  // summary.json: final metrics, rounds, wall seconds, and `config` (already JSON text).
  absl::Status WriteSummary(const std::string& config_json);
  std::vector<RoundSummary> rounds() const;

 private:
  RunLog(std::string output_dir, core::RoundNumber num_rounds, std::FILE* progress);
  const std::string output_dir_;
  const core::RoundNumber num_rounds_;
  std::FILE* progress_;
  const absl::Time started_;
  mutable std::mutex mu_;
  std::FILE* metrics_ = nullptr;       // GUARDED_BY(mu_)
  std::vector<RoundSummary> rounds_;   // GUARDED_BY(mu_)
};

}  // namespace tessera::coordinator
