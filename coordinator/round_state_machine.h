// RoundStateMachine: the rounds of one federated run, driven by events.
//
// Transport-free and single-threaded: the Coordinator feeds it events under its mutex. It reads
// time only from the injected Clock, draws samples only from its seeded Rng, and hands tasks out
// only through the injected ClientSender. It never sleeps.
//
// Phases and the inputs each accepts:
//   kWaitingForClients  MaybeStartRound / OnTick open the next round once the strategy's
//                       minimum of clients is available. OnTrainResult: FAILED_PRECONDITION.
//   kTraining           OnTrainResult folds a valid result into the streaming aggregate at once;
//                       the round closes when every sampled client has answered (reported,
//                       rejected or dropped), or at its deadline: with at least `min_results`
//                       valid results it publishes the next global model, otherwise it is
//                       abandoned and the model stays as it was.
//   kFinalizing         a secure round's Unmasking stage closed and the sum is being computed
//                       (off the owner's lock, see TakeFinalizeJob); every round input is
//                       FAILED_PRECONDITION until OnFinalized closes the round.
//   kFinished           all rounds done; OnTrainResult: FAILED_PRECONDITION.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "aggregation/aggregator.h"
#include "coordinator/client_registry.h"
#include "coordinator/client_sender.h"
#include "coordinator/model_store.h"
#include "coordinator/secagg_round.h"
#include "security/dp/accountant.h"
#include "security/dp/adaptive_clipping.h"
#include "coordinator/strategy.h"
#include "core/clock.h"
#include "core/federation.h"
#include "core/rng.h"

namespace tessera::coordinator {

class StateStore;
struct RestoredState;
struct SpooledResult;

enum class RoundPhase { kWaitingForClients, kTraining, kFinalizing, kFinished };
enum class RoundOutcome { kCompleted, kAbandoned };

struct RoundConfig {
  std::string run_id = "run";
  core::RoundNumber num_rounds = 1;
  absl::Duration round_deadline = absl::Minutes(10);
  int min_results = 1;  // quorum: valid results a round needs to publish a model
  int64_t max_num_examples = int64_t{1} << 31;
  uint64_t seed = 0;  // sampling stream
  // When set, every round aggregates through a SecAgg+ session: the coordinator learns only the
  // sum of the clients' fixed-point encoded updates (deltas), never one of them.
  std::optional<security::secagg::SecAggConfig> secure_aggregation;
  // DP-FedAvg (McMahan et al. 2018): clients clip their update to clip_norm; the server adds
  // N(0, (noise_multiplier * clip_norm / m)^2) to the mean of m updates; an RDP accountant tracks
  // epsilon at `delta`, and a round that would exceed `epsilon_budget` (> 0) does not start.
  struct Dp {
    double clip_norm = 0;  // 0: off
    double noise_multiplier = 0;
    double delta = 1e-5;
    double epsilon_budget = 0;  // 0: no budget
    uint64_t noise_seed = 0;    // 0: a fresh CSPRNG seed per round (deployments)
    // Adaptive clipping (Andrew et al. 2021): the clip norm follows a target quantile of the
    // update norms; clients report whether they were within it (through the secure sum in
    // secure rounds). The update noise is then z_update = (z^-2 - (2 sigma_b)^-2)^-1/2 so that
    // the round costs the privacy of noise multiplier z.
    std::optional<security::dp::AdaptiveClippingConfig> adaptive;
  } dp;
  // Where the privacy accountant's state is kept across restarts ("" = memory only).
  std::string privacy_state_file;
};

struct RoundSummary {
  core::RoundNumber round = 0;
  RoundOutcome outcome = RoundOutcome::kCompleted;
  std::string reason;  // why a round was abandoned
  int sampled = 0;
  int reported = 0;  // valid results folded into the aggregate
  int rejected = 0;  // invalid results
  int dropped = 0;   // sampled clients that went away or had not answered at the deadline
  core::ModelVersion model_version = 0;  // the global model after the round
  core::Metrics server_metrics;          // the new model on the server's held-out data
  core::Metrics client_metrics;          // clients' metrics, weighted by num_examples
  absl::Duration duration;               // open to close
  absl::Duration aggregate_time;         // closing: report + next model + store
  absl::Duration eval_time;
  double epsilon = 0;  // privacy spent so far (DP runs), at RoundConfig::dp.delta
  double dp_clip_norm = 0;  // the clip norm the round's clients used (DP runs)
};

class RoundObserver {
 public:
  virtual ~RoundObserver() = default;
  // Called with the coordinator's lock held, after the round's model is published.
  virtual void OnRoundEnd(const RoundSummary& summary) = 0;
};

struct RoundDeps {
  Strategy* strategy = nullptr;        // required
  ModelStore* store = nullptr;         // required
  ClientRegistry* registry = nullptr;  // required
  ClientSender* sender = nullptr;      // required
  const core::Clock* clock = nullptr;  // required
  Evaluator* evaluator = nullptr;      // optional: server-side evaluation
  RoundObserver* observer = nullptr;   // optional
  StateStore* journal = nullptr;       // optional: durable state (crash safety)
  // Hand the costly end of a secure round (unmasking) to the owner through TakeFinalizeJob
  // instead of running it inside the event that closed the Unmasking stage.
  bool async_finalize = false;
};

class RoundStateMachine {
 public:
  // INVALID_ARGUMENT for a missing dependency or nonsensical config.
  static absl::StatusOr<std::unique_ptr<RoundStateMachine>> Create(RoundConfig config, RoundDeps deps);

  // Picks up where an earlier life of the run stopped (call once, after Create, before any
  // event): the history, the accountant, and the open round with every result it had accepted,
  // folded again in acceptance order. A secure round cannot be resumed (its session is not
  // persisted): it is abandoned. The open round's unanswered tasks are handed out again.
  absl::Status Restore(const RestoredState& state);

  // Opens the next round if none is open and enough clients are available.
  absl::Status MaybeStartRound();
  // A valid result is accepted once per task; a retry gets the first acknowledgement, also
  // after its round closed (the upload that closes a round may have lost its reply).
  // FAILED_PRECONDITION: no round open, or the result belongs to another (older) round or run.
  // NOT_FOUND: no such task for this client in this round.
  // INVALID_ARGUMENT: num_examples out of (0, cap], wrong layout, NaN/Inf (counted as rejected).
  // With a journal, an accepted result is committed to it before it is acknowledged: from
  // `spooled` (its weights already in the spool; the caller discards the file unless the result
  // was newly accepted) or, without it, spooled here.
  absl::StatusOr<core::UploadAck> OnTrainResult(const core::ClientId& client, core::TrainResult result,
                                                const SpooledResult* spooled = nullptr);
  // A client's SecAgg+ message for the open round. Returns the client's reply when it is
  // already there (the stage closed), nullopt while the stage is open. FAILED_PRECONDITION
  // when no secure round is open or the ref is stale; NOT_FOUND for an unknown task.
  absl::StatusOr<std::optional<security::secagg::StageReply>> OnSecAggMessage(
      const core::ClientId& client, const core::RoundRef& ref, const security::secagg::StageRequest& request);
  // The client's reply for `stage` once it closed; nullptr while open. `session_gone` is set
  // when the ref's session no longer runs (its round closed or was abandoned).
  const security::secagg::StageReply* SecAggReply(const core::ClientId& client, const core::RoundRef& ref,
                                                  security::secagg::Stage stage, bool* session_gone) const;
  // With RoundDeps::async_finalize: the work that finalizes a secure round, once its Unmasking
  // stage closed (phase kFinalizing). The owner runs it without holding its lock (it touches
  // only the round's session) and passes its status to OnFinalized, under the lock again.
  using FinalizeJob = std::function<absl::Status()>;
  std::optional<FinalizeJob> TakeFinalizeJob();
  absl::Status OnFinalized(absl::Status job_status);

  // A sampled client went away; the round may close early if nobody else is pending.
  absl::Status OnClientDropped(const core::ClientId& client);
  // Closes or abandons the open round at its deadline, then tries to open the next.
  absl::Status OnTick();

  // The task `client` holds in the open round, if any (for download authorization).
  const core::TrainTask* TaskFor(const core::ClientId& client) const;

  RoundPhase phase() const { return phase_; }
  core::RoundNumber current_round() const { return round_; }
  core::ModelVersion global_model_version() const { return deps_.store->Current()->version; }
  const std::vector<RoundSummary>& history() const { return history_; }
  // Why the run finished early ("" when it ran every round).
  const std::string& finish_reason() const { return finish_reason_; }
  double epsilon() const;

 private:
  RoundStateMachine(RoundConfig config, RoundDeps deps);
  absl::Status CloseRound();
  // A task of the open round (round_, deadline_, clip norm) for the model `global`.
  core::TrainTask MakeTask(std::string task_id, const ModelBlob& global, const core::TrainConfig& train) const;
  // Publishes `aggregate` (the mean of the round's weights) as the next model.
  absl::Status PublishRound(core::ModelWeights aggregate, int reported);
  absl::Status AdvanceSecAgg();
  absl::Status OnSecAggProgress(SecAggRound::Progress progress);
  absl::Status CloseSecAggRound();
  absl::Status CheckRef(const core::ClientId& client, const core::RoundRef& ref) const;
  void AbandonRound(std::string reason);
  void FinishRound(RoundSummary summary);
  bool AllAnswered() const;

  const RoundConfig config_;
  const RoundDeps deps_;
  RoundPhase phase_ = RoundPhase::kWaitingForClients;
  core::RoundNumber round_ = 0;
  absl::Time opened_at_;
  absl::Time deadline_;
  std::map<core::ClientId, core::TrainTask> tasks_;  // sampled clients of the open round
  std::map<std::string, core::UploadAck> accepted_;  // by task id
  std::map<std::string, core::UploadAck> accepted_last_round_;  // for retries across the close
  std::set<core::ClientId> answered_;                // reported, rejected or dropped
  int rejected_ = 0;
  int dropped_ = 0;
  int target_results_ = 0;  // valid results that close the open round early (over-selection)
  std::unique_ptr<aggregation::Aggregator> aggregator_;
  core::ModelWeights federated_layout_;  // the global model's tensors the open round aggregates
  std::unique_ptr<SecAggRound> secagg_;  // secure rounds only
  std::optional<FinalizeJob> finalize_job_;  // kFinalizing, until the owner takes it
  core::Metrics metric_sums_;     // per metric: sum of num_examples * value
  core::Metrics metric_weights_;  // per metric: sum of num_examples of the clients reporting it
  std::vector<RoundSummary> history_;
  std::unique_ptr<security::dp::RdpAccountant> accountant_;  // DP runs only
  std::optional<security::dp::AdaptiveClipper> clipper_;     // adaptive clipping only
  double update_noise_multiplier_ = 0;                       // z, or z_update with adaptive clipping
  double round_clip_norm_ = 0;                               // the clip norm of the open round
  int unclipped_count_ = 0;                                  // clients within it, this round
  absl::Status SavePrivacyState() const;
  std::string PrivacyStateJson() const;  // "" without an accountant
  absl::Status RestorePrivacyState(const std::string& text, const std::string& where);
  // Logs a failed journal write of an event the round already acted on (the state database
  // then lags; a restart replays from its last good state).
  void JournalError(const absl::Status& s, std::string_view what) const;
  double ClipNorm() const { return clipper_ ? clipper_->clip_norm() : config_.dp.clip_norm; }
  double sampling_rate_ = 1.0;                               // of the open round
  std::string finish_reason_;
};

std::string_view RoundOutcomeName(RoundOutcome outcome);

}  // namespace tessera::coordinator
