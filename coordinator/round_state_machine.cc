#include "coordinator/round_state_machine.h"

#include "core/logging.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::coordinator {

using core::ClientId;
using core::StrCat;

std::string_view RoundOutcomeName(RoundOutcome outcome) {
  return outcome == RoundOutcome::kCompleted ? "completed" : "abandoned";
}

absl::StatusOr<std::unique_ptr<RoundStateMachine>> RoundStateMachine::Create(RoundConfig config, RoundDeps deps) {
  if (!deps.strategy || !deps.store || !deps.registry || !deps.sender || !deps.clock) {
    return absl::InvalidArgumentError("RoundStateMachine needs a strategy, store, registry, sender and clock");
  }
  if (config.num_rounds < 1) return absl::InvalidArgumentError("rounds must be at least 1");
  if (config.min_results < 1) return absl::InvalidArgumentError("min_results must be at least 1");
  if (config.round_deadline <= absl::ZeroDuration()) return absl::InvalidArgumentError("round deadline must be positive");
  if (config.max_num_examples < 1) return absl::InvalidArgumentError("max_num_examples must be positive");
  return std::unique_ptr<RoundStateMachine>(new RoundStateMachine(std::move(config), deps));
}

RoundStateMachine::RoundStateMachine(RoundConfig config, RoundDeps deps)
    : config_(std::move(config)), deps_(deps) {}

absl::Status RoundStateMachine::MaybeStartRound() {
  if (phase_ != RoundPhase::kWaitingForClients) return absl::OkStatus();
  const absl::Time now = deps_.clock->Now();
  std::vector<ClientId> available = deps_.registry->Available(now);
  if (static_cast<int>(available.size()) < deps_.strategy->MinAvailableClients()) return absl::OkStatus();
  const core::RoundNumber next = round_ + 1;
  core::Rng rng(config_.seed, {next, 0x73616d706c65ULL /* "sample" */});
  std::vector<ClientId> sampled = deps_.strategy->SampleClients(available, next, rng);
  if (sampled.empty()) return absl::OkStatus();

  round_ = next;
  phase_ = RoundPhase::kTraining;
  opened_at_ = now;
  deadline_ = now + config_.round_deadline;
  tasks_.clear();
  accepted_.clear();
  answered_.clear();
  rejected_ = dropped_ = 0;
  metric_sums_.clear();
  metric_weights_.clear();
  auto global = deps_.store->Current();
  aggregator_ = deps_.strategy->MakeAggregator(*global->weights);

  core::TrainConfig train = deps_.strategy->ConfigureTrain(round_);
  for (const ClientId& id : sampled) {
    core::TrainTask task;
    task.ref = {config_.run_id, round_, StrCat(config_.run_id, "/", round_, "/", id.value)};
    task.model_version = global->version;
    task.model_bytes = global->serialized.size();
    task.model_sha256 = global->sha256;
    task.config = train;
    task.deadline = deadline_;
    tasks_.emplace(id, task);
  }
  core::Logger("coordinator")->info("round {} opened: {} of {} available clients sampled, model v{}", round_,
                                    sampled.size(), available.size(), global->version);
  // Hand out in sampling order (the simulator's scheduler relies on a stable order).
  for (const ClientId& id : sampled) deps_.sender->SendTask(id, tasks_.at(id));
  return absl::OkStatus();
}

const core::TrainTask* RoundStateMachine::TaskFor(const ClientId& client) const {
  if (phase_ != RoundPhase::kTraining) return nullptr;
  auto it = tasks_.find(client);
  return it == tasks_.end() ? nullptr : &it->second;
}

absl::StatusOr<core::UploadAck> RoundStateMachine::OnTrainResult(const ClientId& client, core::TrainResult result) {
  if (result.ref.run_id != config_.run_id) {
    return absl::FailedPreconditionError(StrCat("result for run '", result.ref.run_id, "', this run is '",
                                                config_.run_id, "'"));
  }
  if (auto it = accepted_last_round_.find(result.ref.task_id); it != accepted_last_round_.end()) {
    core::UploadAck ack = it->second;
    ack.duplicate = true;
    return ack;
  }
  if (phase_ != RoundPhase::kTraining || result.ref.round != round_) {
    return absl::FailedPreconditionError(StrCat("result for round ", result.ref.round, " discarded: ",
                                                phase_ == RoundPhase::kTraining
                                                    ? StrCat("round ", round_, " is open")
                                                    : std::string("no round is open")));
  }
  auto task = tasks_.find(client);
  if (task == tasks_.end() || task->second.ref.task_id != result.ref.task_id) {
    return absl::NotFoundError(StrCat("client '", client.value, "' has no task '", result.ref.task_id,
                                      "' in round ", round_));
  }
  if (auto it = accepted_.find(result.ref.task_id); it != accepted_.end()) {
    core::UploadAck ack = it->second;
    ack.duplicate = true;
    return ack;
  }
  if (answered_.contains(client)) {
    return absl::FailedPreconditionError(StrCat("client '", client.value, "' already answered round ", round_));
  }
  auto reject = [&](absl::Status why) {
    ++rejected_;
    answered_.insert(client);
    core::Logger("coordinator")->warn("round {}: rejected result of '{}': {}", round_, client.value,
                                      std::string(why.message()));
    return why;
  };
  if (result.num_examples <= 0 || result.num_examples > config_.max_num_examples) {
    absl::Status s = reject(absl::InvalidArgumentError(StrCat("num_examples must be in [1, ", config_.max_num_examples,
                                                             "], got ", result.num_examples)));
    if (AllAnswered()) TESSERA_RETURN_IF_ERROR(CloseRound());
    return s;
  }
  absl::Status valid = result.weights.CheckFinite();
  if (valid.ok()) {
    valid = aggregator_->Accumulate({result.weights, static_cast<double>(result.num_examples)});
  }
  if (!valid.ok()) {
    absl::Status s = reject(valid);
    if (AllAnswered()) TESSERA_RETURN_IF_ERROR(CloseRound());
    return s;
  }
  for (const auto& [name, value] : result.metrics) {
    if (!std::isfinite(value)) continue;
    metric_sums_[name] += value * result.num_examples;
    metric_weights_[name] += result.num_examples;
  }
  answered_.insert(client);
  core::UploadAck ack{false, round_};
  accepted_.emplace(result.ref.task_id, ack);
  if (AllAnswered()) TESSERA_RETURN_IF_ERROR(CloseRound());
  return ack;
}

absl::Status RoundStateMachine::OnClientDropped(const ClientId& client) {
  if (phase_ != RoundPhase::kTraining || !tasks_.contains(client) || answered_.contains(client)) {
    return absl::OkStatus();
  }
  ++dropped_;
  answered_.insert(client);
  if (AllAnswered()) return CloseRound();
  return absl::OkStatus();
}

absl::Status RoundStateMachine::OnTick() {
  if (phase_ == RoundPhase::kTraining && deps_.clock->Now() >= deadline_) {
    TESSERA_RETURN_IF_ERROR(CloseRound());
  }
  return MaybeStartRound();
}

bool RoundStateMachine::AllAnswered() const { return answered_.size() == tasks_.size(); }

absl::Status RoundStateMachine::CloseRound() {
  const int reported = static_cast<int>(accepted_.size());
  if (reported < config_.min_results) {
    AbandonRound(StrCat(reported, " valid results, quorum is ", config_.min_results));
    return MaybeStartRound();
  }
  const absl::Time t0 = deps_.clock->Now();
  auto global = deps_.store->Current();
  auto aggregate = std::move(*aggregator_).Report();
  aggregator_.reset();
  if (!aggregate.ok()) {
    AbandonRound(std::string(aggregate.status().message()));
    return MaybeStartRound();
  }
  auto next = deps_.strategy->NextGlobalModel(*global->weights, *std::move(aggregate));
  if (next.ok()) {
    if (absl::Status finite = next->CheckFinite(); !finite.ok()) next = finite;
  }
  if (!next.ok()) {
    AbandonRound(StrCat("next model: ", next.status().message()));
    return MaybeStartRound();
  }
  RoundSummary summary;
  summary.round = round_;
  summary.outcome = RoundOutcome::kCompleted;
  summary.sampled = static_cast<int>(tasks_.size());
  summary.reported = reported;
  summary.rejected = rejected_;
  summary.dropped = dropped_;
  for (const auto& [name, sum] : metric_sums_) summary.client_metrics[name] = sum / metric_weights_.at(name);
  std::shared_ptr<const core::ModelWeights> published;
  if (deps_.evaluator != nullptr) {
    const absl::Time e0 = deps_.clock->Now();
    auto metrics = deps_.evaluator->Evaluate(*next);
    summary.eval_time = deps_.clock->Now() - e0;
    if (metrics.ok()) {
      summary.server_metrics = *std::move(metrics);
    } else {
      core::Logger("coordinator")->warn("round {}: server evaluation failed: {}", round_,
                                        std::string(metrics.status().message()));
    }
  }
  // A model that cannot be stored durably is not published: the round is abandoned.
  core::Metrics stored_metrics = summary.server_metrics;
  if (absl::Status s = deps_.store->Publish(*std::move(next), round_, stored_metrics); !s.ok()) {
    AbandonRound(StrCat("cannot store the new model: ", s.message()));
    return MaybeStartRound();
  }
  summary.model_version = deps_.store->Current()->version;
  summary.aggregate_time = deps_.clock->Now() - t0 - summary.eval_time;
  summary.duration = deps_.clock->Now() - opened_at_;
  FinishRound(std::move(summary));
  return MaybeStartRound();
}

void RoundStateMachine::AbandonRound(std::string reason) {
  core::Logger("coordinator")->warn("round {} abandoned: {}; the global model stays at v{}", round_, reason,
                                    deps_.store->Current()->version);
  RoundSummary summary;
  summary.round = round_;
  summary.outcome = RoundOutcome::kAbandoned;
  summary.reason = std::move(reason);
  summary.sampled = static_cast<int>(tasks_.size());
  summary.reported = static_cast<int>(accepted_.size());
  summary.rejected = rejected_;
  summary.dropped = dropped_;
  summary.model_version = deps_.store->Current()->version;
  summary.duration = deps_.clock->Now() - opened_at_;
  aggregator_.reset();
  FinishRound(std::move(summary));
}

void RoundStateMachine::FinishRound(RoundSummary summary) {
  accepted_last_round_ = std::move(accepted_);
  accepted_.clear();
  deps_.sender->EndRound(round_);
  tasks_.clear();
  phase_ = round_ >= config_.num_rounds ? RoundPhase::kFinished : RoundPhase::kWaitingForClients;
  history_.push_back(summary);
  if (deps_.observer != nullptr) deps_.observer->OnRoundEnd(history_.back());
}

}  // namespace tessera::coordinator
