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
//   kFinished           all rounds done; OnTrainResult: FAILED_PRECONDITION.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "aggregation/aggregator.h"
#include "coordinator/client_registry.h"
#include "coordinator/client_sender.h"
#include "coordinator/model_store.h"
#include "coordinator/strategy.h"
#include "core/clock.h"
#include "core/federation.h"
#include "core/rng.h"

namespace tessera::coordinator {

enum class RoundPhase { kWaitingForClients, kTraining, kFinished };
enum class RoundOutcome { kCompleted, kAbandoned };

struct RoundConfig {
  std::string run_id = "run";
  core::RoundNumber num_rounds = 1;
  absl::Duration round_deadline = absl::Minutes(10);
  int min_results = 1;  // quorum: valid results a round needs to publish a model
  int64_t max_num_examples = int64_t{1} << 31;
  uint64_t seed = 0;  // sampling stream
};

struct RoundSummary {
  core::RoundNumber round = 0;
  RoundOutcome outcome = RoundOutcome::kCompleted;
  std::string reason;  // why a round was abandoned
  int sampled = 0;
  int reported = 0;  // valid results folded into the aggregate
  int rejected = 0;  // invalid results
  int dropped = 0;   // sampled clients that went away
  core::ModelVersion model_version = 0;  // the global model after the round
  core::Metrics server_metrics;          // the new model on the server's held-out data
  core::Metrics client_metrics;          // clients' metrics, weighted by num_examples
  absl::Duration duration;               // open to close
  absl::Duration aggregate_time;         // closing: report + next model + store
  absl::Duration eval_time;
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
};

class RoundStateMachine {
 public:
  // INVALID_ARGUMENT for a missing dependency or nonsensical config.
  static absl::StatusOr<std::unique_ptr<RoundStateMachine>> Create(RoundConfig config, RoundDeps deps);

  // Opens the next round if none is open and enough clients are available.
  absl::Status MaybeStartRound();
  // A valid result is accepted once per task; a retry gets the first acknowledgement, also
  // after its round closed (the upload that closes a round may have lost its reply).
  // FAILED_PRECONDITION: no round open, or the result belongs to another (older) round or run.
  // NOT_FOUND: no such task for this client in this round.
  // INVALID_ARGUMENT: num_examples out of (0, cap], wrong layout, NaN/Inf (counted as rejected).
  absl::StatusOr<core::UploadAck> OnTrainResult(const core::ClientId& client, core::TrainResult result);
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

 private:
  RoundStateMachine(RoundConfig config, RoundDeps deps);
  absl::Status CloseRound();
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
  std::unique_ptr<aggregation::Aggregator> aggregator_;
  core::Metrics metric_sums_;     // per metric: sum of num_examples * value
  core::Metrics metric_weights_;  // per metric: sum of num_examples of the clients reporting it
  std::vector<RoundSummary> history_;
};

std::string_view RoundOutcomeName(RoundOutcome outcome);

}  // namespace tessera::coordinator
