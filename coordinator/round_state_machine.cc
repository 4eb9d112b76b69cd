#include "coordinator/round_state_machine.h"

#include <nlohmann/json.hpp>

#include "core/file_io.h"
#include "coordinator/state_store.h"
#include "core/logging.h"
#include "security/dp/gaussian.h"
#include "security/secagg/fixed_point.h"
#include "core/status.h"
#include "core/strings.h"

#include <utility>

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
  const auto& dp = config.dp;
  if (!(dp.clip_norm >= 0) || !(dp.noise_multiplier >= 0) || !(dp.epsilon_budget >= 0)) {
    return absl::InvalidArgumentError("DP clip norm, noise multiplier and budget must not be negative");
  }
  if (dp.noise_multiplier > 0 && dp.clip_norm <= 0 && !dp.adaptive) {
    return absl::InvalidArgumentError("DP noise needs a clip norm");
  }
  if (dp.noise_multiplier > 0 && !(dp.delta > 0 && dp.delta < 1)) return absl::InvalidArgumentError("DP delta must be in (0, 1)");
  if (dp.epsilon_budget > 0 && dp.noise_multiplier <= 0) {
    return absl::InvalidArgumentError("a privacy budget needs noise (dp noise multiplier > 0)");
  }
  std::unique_ptr<RoundStateMachine> m(new RoundStateMachine(std::move(config), deps));
  m->update_noise_multiplier_ = dp.noise_multiplier;
  if (dp.adaptive) {
    TESSERA_ASSIGN_OR_RETURN(auto clipper, security::dp::AdaptiveClipper::Create(*dp.adaptive));
    m->clipper_.emplace(std::move(clipper));
    if (dp.noise_multiplier > 0) {
      TESSERA_ASSIGN_OR_RETURN(m->update_noise_multiplier_, security::dp::UpdateNoiseMultiplier(
                                                                dp.noise_multiplier, dp.adaptive->clipped_count_stddev));
    }
  }
  if (m->config_.dp.noise_multiplier > 0) {
    m->accountant_ = std::make_unique<security::dp::RdpAccountant>();
    if (!m->config_.privacy_state_file.empty()) {
      auto saved = core::ReadFile(m->config_.privacy_state_file);
      if (saved.ok()) {
        TESSERA_RETURN_IF_ERROR(m->RestorePrivacyState(*saved, m->config_.privacy_state_file));
      } else if (!absl::IsNotFound(saved.status())) {
        return saved.status();
      }
    }
  }
  return m;
}

absl::Status RoundStateMachine::RestorePrivacyState(const std::string& text, const std::string& where) {
  if (!accountant_) return absl::OkStatus();
  // {"rdp": accountant state, "clip_norm": the adaptive clip norm}
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("rdp") || !j["rdp"].is_string()) {
    return absl::InvalidArgumentError(StrCat("privacy state ", where, " is corrupt"));
  }
  TESSERA_ASSIGN_OR_RETURN(auto restored, security::dp::RdpAccountant::Deserialize(j["rdp"].get<std::string>()));
  accountant_ = std::make_unique<security::dp::RdpAccountant>(std::move(restored));
  if (clipper_ && j.contains("clip_norm") && j["clip_norm"].is_number()) {
    security::dp::AdaptiveClippingConfig resumed = *config_.dp.adaptive;
    resumed.initial_clip = j["clip_norm"].get<double>();
    TESSERA_ASSIGN_OR_RETURN(auto clipper, security::dp::AdaptiveClipper::Create(resumed));
    clipper_.emplace(std::move(clipper));
  }
  return absl::OkStatus();
}

void RoundStateMachine::JournalError(const absl::Status& s, std::string_view what) const {
  if (s.ok()) return;
  core::Logger("coordinator")->error("round {}: the state database did not record {}: {}", round_, what,
                                     std::string(s.message()));
}

core::TrainTask RoundStateMachine::MakeTask(std::string task_id, const ModelBlob& global,
                                            const core::TrainConfig& train) const {
  core::TrainTask task;
  task.ref = {config_.run_id, round_, std::move(task_id)};
  task.model_version = global.version;
  task.model_bytes = global.serialized.size();
  task.model_sha256 = global.sha256;
  task.config = train;
  task.deadline = deadline_;
  task.dp.clip_norm = round_clip_norm_;
  task.dp.report_unclipped = clipper_.has_value();
  return task;
}

absl::Status RoundStateMachine::Restore(const RestoredState& st) {
  round_ = st.last_round;
  history_ = st.history;
  accepted_last_round_ = st.accepted_last_round;
  if (!st.privacy_state.empty()) TESSERA_RETURN_IF_ERROR(RestorePrivacyState(st.privacy_state, deps_.journal->path()));
  phase_ = round_ >= config_.num_rounds ? RoundPhase::kFinished : RoundPhase::kWaitingForClients;
  if (!st.open_round) return MaybeStartRound();

  const PersistedRound& open = *st.open_round;
  auto global = deps_.store->Current();
  if (open.model_version != global->version) {
    return absl::DataLossError(StrCat("state database: round ", open.round, " trains model v", open.model_version,
                                      " but the current version is v", global->version));
  }
  round_ = open.round;
  phase_ = RoundPhase::kTraining;
  opened_at_ = open.opened_at;
  deadline_ = open.deadline;
  target_results_ = open.target_results;
  sampling_rate_ = open.sampling_rate;
  round_clip_norm_ = open.clip_norm;
  core::TrainConfig train = deps_.strategy->ConfigureTrain(round_);
  federated_layout_ = core::SharedTensors(*global->weights, train.personalization);
  for (const auto& t : open.tasks) {
    tasks_.emplace(t.client, MakeTask(t.task_id, *global, train));
    if (t.answer == "rejected") ++rejected_;
    if (t.answer == "dropped") ++dropped_;
    if (t.answer == "rejected" || t.answer == "dropped") answered_.insert(t.client);
  }
  if (open.secure) {
    // The SecAgg+ session (keys, shares, masked sums) lives in memory only: its clients'
    // messages cannot be matched any more. The next round starts afresh.
    AbandonRound("the coordinator restarted during secure aggregation, whose session is not persisted");
    return MaybeStartRound();
  }
  aggregator_ = deps_.strategy->MakeAggregator(federated_layout_);
  for (const PersistedResult& r : open.accepted) {
    auto weights = deps_.journal->ReadSpooled(r);
    absl::Status s = weights.status();
    if (s.ok()) s = aggregator_->Accumulate({*weights, static_cast<double>(r.num_examples)});
    if (!s.ok()) {
      // Only a crash of the machine without sync_to_disk can lose a spooled result.
      core::Logger("coordinator")->error("round {}: the accepted result of '{}' is lost: {}", round_, r.client.value,
                                         std::string(s.message()));
      continue;
    }
    accepted_.emplace(r.task_id, core::UploadAck{false, round_});
    answered_.insert(r.client);
    if (clipper_) {
      auto bit = r.metrics.find(core::kUnclippedMetric);
      if (bit != r.metrics.end() && bit->second >= 0.5) ++unclipped_count_;
    }
    for (const auto& [name, value] : r.metrics) {
      metric_sums_[name] += value * r.num_examples;
      metric_weights_[name] += r.num_examples;
    }
  }
  core::Logger("coordinator")->info("round {} resumed: {} of {} sampled clients had reported", round_,
                                    accepted_.size(), tasks_.size());
  for (const auto& t : open.tasks) {
    if (!answered_.contains(t.client)) deps_.sender->SendTask(t.client, tasks_.at(t.client));
  }
  if (AllAnswered() || static_cast<int>(accepted_.size()) >= target_results_) return CloseRound();
  return absl::OkStatus();
}

RoundStateMachine::RoundStateMachine(RoundConfig config, RoundDeps deps)
    : config_(std::move(config)), deps_(deps) {}

absl::Status RoundStateMachine::MaybeStartRound() {
  if (phase_ != RoundPhase::kWaitingForClients) return absl::OkStatus();
  // Every registration lands here while the first round waits for its clients: counting the
  // registry first keeps registering n clients O(n log n) instead of copying every id each time.
  if (static_cast<int64_t>(deps_.registry->size()) < deps_.strategy->MinAvailableClients()) return absl::OkStatus();
  const absl::Time now = deps_.clock->Now();
  std::vector<ClientId> available = deps_.registry->Available(now);
  if (static_cast<int>(available.size()) < deps_.strategy->MinAvailableClients()) return absl::OkStatus();
  const core::RoundNumber next = round_ + 1;
  core::Rng rng(config_.seed, {next, 0x73616d706c65ULL /* "sample" */});
  std::vector<ClientId> sampled = deps_.strategy->SampleClients(available, next, rng);
  if (sampled.empty()) return absl::OkStatus();
  const double sampling_rate = static_cast<double>(sampled.size()) / available.size();
  if (accountant_ && config_.dp.epsilon_budget > 0) {
    auto exceed = accountant_->WouldExceed(config_.dp.noise_multiplier, sampling_rate, config_.dp.delta,
                                           config_.dp.epsilon_budget);
    if (!exceed.ok()) return exceed.status();
    if (*exceed) {
      finish_reason_ = StrCat("privacy budget: another round would exceed epsilon ", config_.dp.epsilon_budget,
                              " at delta ", config_.dp.delta, " (spent ", epsilon(), ")");
      core::Logger("coordinator")->warn("run finished before round {}: {}", next, finish_reason_);
      phase_ = RoundPhase::kFinished;
      return absl::OkStatus();
    }
  }
  sampling_rate_ = sampling_rate;
  round_clip_norm_ = ClipNorm();
  unclipped_count_ = 0;

  round_ = next;
  phase_ = RoundPhase::kTraining;
  target_results_ = deps_.strategy->TargetResults(static_cast<int>(sampled.size()));
  opened_at_ = now;
  deadline_ = now + config_.round_deadline;
  tasks_.clear();
  accepted_.clear();
  answered_.clear();
  rejected_ = dropped_ = 0;
  metric_sums_.clear();
  metric_weights_.clear();
  auto global = deps_.store->Current();
  core::TrainConfig train = deps_.strategy->ConfigureTrain(round_);
  // fedper: the clients keep some layers; the round aggregates the shared ones only.
  federated_layout_ = core::SharedTensors(*global->weights, train.personalization);
  aggregator_ = deps_.strategy->MakeAggregator(federated_layout_);
  secagg_.reset();
  if (config_.secure_aggregation && train.personalization.mode == core::PersonalizationMode::kFedPer) {
    for (const ClientId& id : sampled) tasks_.emplace(id, core::TrainTask{});
    AbandonRound("fedper keeps layers private, which secure aggregation's sum cannot skip");
    return absl::OkStatus();
  }
  if (config_.secure_aggregation) {
    auto resolved = security::secagg::ResolveConfig(*config_.secure_aggregation, static_cast<int>(sampled.size()));
    int64_t floats = 0;
    for (const auto& t : global->weights->tensors) floats += t.dtype() == core::DType::kFloat32 ? t.numel() : 0;
    const int extra = clipper_ ? 2 : 1;  // the weight, and the adaptive clipping bit
    absl::StatusOr<std::unique_ptr<SecAggRound>> session =
        resolved.ok() ? SecAggRound::Create(*resolved, config_.run_id, next, sampled, static_cast<int>(floats + extra),
                                            core::Rng(config_.seed, {next, 0x6772617068ULL /* "graph" */})(), now,
                                            deadline_)
                      : absl::StatusOr<std::unique_ptr<SecAggRound>>(resolved.status());
    if (!session.ok()) {
      for (const ClientId& id : sampled) tasks_.emplace(id, core::TrainTask{});
      AbandonRound(StrCat("secure aggregation cannot run with ", sampled.size(), " clients: ", session.status().message()));
      return absl::OkStatus();
    }
    secagg_ = *std::move(session);
  }

  for (const ClientId& id : sampled) {
    core::TrainTask task = MakeTask(StrCat(config_.run_id, "/", round_, "/", id.value), *global, train);
    if (secagg_) task.secure_aggregation = secagg_->SpecFor(id);
    tasks_.emplace(id, std::move(task));
  }
  if (deps_.journal != nullptr) {
    PersistedRound persisted;
    persisted.round = round_;
    persisted.opened_at = opened_at_;
    persisted.deadline = deadline_;
    persisted.model_version = global->version;
    persisted.target_results = target_results_;
    persisted.sampling_rate = sampling_rate_;
    persisted.clip_norm = round_clip_norm_;
    persisted.secure = secagg_ != nullptr;
    for (const ClientId& id : sampled) persisted.tasks.push_back({id, tasks_.at(id).ref.task_id, ""});
    if (absl::Status s = deps_.journal->RoundOpened(persisted); !s.ok()) {
      // A round the database does not know would be lost by a restart: it does not open.
      phase_ = RoundPhase::kWaitingForClients;
      round_ = next - 1;
      tasks_.clear();
      aggregator_.reset();
      secagg_.reset();
      return s;
    }
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

absl::StatusOr<core::UploadAck> RoundStateMachine::OnTrainResult(const ClientId& client, core::TrainResult result,
                                                                  const SpooledResult* spooled) {
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
  if (secagg_) {
    return absl::FailedPreconditionError(
        StrCat("round ", round_, " aggregates securely: plaintext results are refused"));
  }
  if (answered_.contains(client)) {
    return absl::FailedPreconditionError(StrCat("client '", client.value, "' already answered round ", round_));
  }
  auto reject = [&](absl::Status why) {
    ++rejected_;
    answered_.insert(client);
    if (deps_.journal != nullptr) JournalError(deps_.journal->TaskAnswered(round_, client, "rejected"), "a rejection");
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
  if (valid.ok()) valid = result.weights.CheckSameLayout(federated_layout_);
  if (!valid.ok()) {
    absl::Status s = reject(valid);
    if (AllAnswered()) TESSERA_RETURN_IF_ERROR(CloseRound());
    return s;
  }
  if (deps_.journal != nullptr) {
    // Durable before acknowledged: a crash after this point still counts the result, once.
    std::optional<SpooledResult> own;  // spooled here when the caller did not
    absl::Status s;
    if (spooled == nullptr) {
      auto written = deps_.journal->Spool(result.weights);
      s = written.status();
      if (s.ok()) spooled = &own.emplace(*std::move(written));
    }
    if (s.ok()) {
      s = deps_.journal->ResultAccepted(round_, result.ref.task_id, client, result.num_examples, result.metrics,
                                        *spooled);
      if (!s.ok() && own) deps_.journal->Discard(*own);
    }
    if (!s.ok()) {
      core::Logger("coordinator")->error("round {}: cannot record the result of '{}': {}", round_, client.value,
                                         std::string(s.message()));
      return absl::UnavailableError("the coordinator cannot record results right now; send it again");
    }
  }
  TESSERA_RETURN_IF_ERROR(aggregator_->Accumulate({result.weights, static_cast<double>(result.num_examples)}));
  if (clipper_) {
    auto bit = result.metrics.find(core::kUnclippedMetric);
    if (bit != result.metrics.end() && bit->second >= 0.5) ++unclipped_count_;
  }
  for (const auto& [name, value] : result.metrics) {
    if (!std::isfinite(value)) continue;
    metric_sums_[name] += value * result.num_examples;
    metric_weights_[name] += result.num_examples;
  }
  answered_.insert(client);
  core::UploadAck ack{false, round_};
  accepted_.emplace(result.ref.task_id, ack);
  // Over-selection: the round closes as soon as the target count has reported; the stragglers'
  // results arrive for a closed round and are discarded.
  if (AllAnswered() || static_cast<int>(accepted_.size()) >= target_results_) TESSERA_RETURN_IF_ERROR(CloseRound());
  return ack;
}

absl::Status RoundStateMachine::OnClientDropped(const ClientId& client) {
  if (phase_ != RoundPhase::kTraining || !tasks_.contains(client)) return absl::OkStatus();
  if (secagg_) {
    // A client whose masked input is in may still drop before unmasking: the session must
    // know, so that the unmasking stage does not wait for it.
    if (answered_.insert(client).second) ++dropped_;
    secagg_->OnDropped(client);
    return AdvanceSecAgg();
  }
  if (answered_.contains(client)) return absl::OkStatus();
  ++dropped_;
  answered_.insert(client);
  if (deps_.journal != nullptr) JournalError(deps_.journal->TaskAnswered(round_, client, "dropped"), "a dropout");
  if (AllAnswered()) return CloseRound();
  return absl::OkStatus();
}

absl::Status RoundStateMachine::OnTick() {
  if (phase_ == RoundPhase::kTraining && secagg_) {
    TESSERA_RETURN_IF_ERROR(AdvanceSecAgg());  // stage deadlines, the round's included
  } else if (phase_ == RoundPhase::kTraining && deps_.clock->Now() >= deadline_) {
    // A sampled client that has not answered by the deadline went away (crashed, cut off,
    // killed mid-upload): it counts as dropped, as one the registry expired would.
    for (const auto& [client, task] : tasks_) {
      if (answered_.insert(client).second) ++dropped_;
    }
    TESSERA_RETURN_IF_ERROR(CloseRound());
  }
  return MaybeStartRound();
}

absl::Status RoundStateMachine::CheckRef(const ClientId& client, const core::RoundRef& ref) const {
  if (ref.run_id != config_.run_id) {
    return absl::FailedPreconditionError(StrCat("message for run '", ref.run_id, "', this run is '", config_.run_id, "'"));
  }
  if (phase_ != RoundPhase::kTraining || ref.round != round_ || !secagg_) {
    return absl::FailedPreconditionError(StrCat("no secure aggregation session is open for round ", ref.round));
  }
  auto task = tasks_.find(client);
  if (task == tasks_.end() || task->second.ref.task_id != ref.task_id) {
    return absl::NotFoundError(StrCat("client '", client.value, "' has no task '", ref.task_id, "' in round ", round_));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<security::secagg::StageReply>> RoundStateMachine::OnSecAggMessage(
    const ClientId& client, const core::RoundRef& ref, const security::secagg::StageRequest& request) {
  TESSERA_RETURN_IF_ERROR(CheckRef(client, ref));
  if (absl::Status s = secagg_->OnMessage(client, request); !s.ok()) {
    core::Logger("coordinator")->warn("round {}: secure aggregation message of '{}' refused: {}", round_, client.value,
                                      std::string(s.message()));
    return s;
  }
  if (request.stage() == security::secagg::Stage::kMaskedInput) answered_.insert(client);
  // Closing the stage may finish the session and the round: take the reply first.
  SecAggRound::Progress progress = secagg_->Advance(deps_.clock->Now());
  std::optional<security::secagg::StageReply> reply;
  if (const auto* r = secagg_->ReplyFor(client, request.stage())) reply = *r;
  TESSERA_RETURN_IF_ERROR(OnSecAggProgress(progress));
  return reply;
}

absl::Status RoundStateMachine::OnSecAggProgress(SecAggRound::Progress progress) {
  switch (progress) {
    case SecAggRound::Progress::kUnmaskReady: {
      phase_ = RoundPhase::kFinalizing;
      FinalizeJob job = [session = secagg_.get()] { return session->Unmask(); };
      if (!deps_.async_finalize) return OnFinalized(job());
      finalize_job_ = std::move(job);
      return absl::OkStatus();
    }
    case SecAggRound::Progress::kDone: return CloseSecAggRound();
    case SecAggRound::Progress::kAborted:
      AbandonRound(StrCat("secure aggregation aborted: ", secagg_->abort_reason()));
      return MaybeStartRound();
    case SecAggRound::Progress::kRunning: return absl::OkStatus();
  }
  return absl::OkStatus();
}

std::optional<RoundStateMachine::FinalizeJob> RoundStateMachine::TakeFinalizeJob() {
  return std::exchange(finalize_job_, std::nullopt);
}

absl::Status RoundStateMachine::OnFinalized(absl::Status job_status) {
  if (phase_ != RoundPhase::kFinalizing) return absl::FailedPreconditionError("no round is finalizing");
  phase_ = RoundPhase::kTraining;
  if (!job_status.ok()) {
    AbandonRound(StrCat("secure aggregation aborted: ", secagg_->abort_reason()));
    return MaybeStartRound();
  }
  return CloseSecAggRound();
}

const security::secagg::StageReply* RoundStateMachine::SecAggReply(const ClientId& client, const core::RoundRef& ref,
                                                                   security::secagg::Stage stage,
                                                                   bool* session_gone) const {
  *session_gone = !CheckRef(client, ref).ok();
  if (*session_gone) return nullptr;
  return secagg_->ReplyFor(client, stage);
}

absl::Status RoundStateMachine::AdvanceSecAgg() {
  if (!secagg_ || phase_ != RoundPhase::kTraining) return absl::OkStatus();
  return OnSecAggProgress(secagg_->Advance(deps_.clock->Now()));
}

absl::Status RoundStateMachine::CloseSecAggRound() {
  const int n = secagg_->num_contributors();
  std::vector<uint64_t> sum = secagg_->TakeSum();
  if (clipper_ && !sum.empty()) {
    // The last element is the count of clients within the clip norm (it never exceeds n; a
    // larger value means a client sent more than one bit, and it is capped).
    unclipped_count_ = static_cast<int>(std::min<uint64_t>(sum.back(), static_cast<uint64_t>(n)));
    sum.pop_back();
  }
  auto mean = security::DecodeFixedPointMean(sum, secagg_->fixed_point(), n);
  if (!mean.ok()) {
    AbandonRound(StrCat("decoding the secure sum: ", mean.status().message()));
    return MaybeStartRound();
  }
  // The mean update is a delta: the aggregate is the global model moved by it.
  auto global = deps_.store->Current();
  core::ModelWeights aggregate = *global->weights;
  size_t offset = 0;
  for (auto& t : aggregate.tensors) {
    if (t.dtype() != core::DType::kFloat32) continue;
    for (float& v : t.mutable_f32()) v += (*mean)[offset++];
  }
  // Only the sum's existence is known, not who trained on what: the metrics are the count.
  return PublishRound(std::move(aggregate), n);
}

bool RoundStateMachine::AllAnswered() const { return answered_.size() == tasks_.size(); }

absl::Status RoundStateMachine::CloseRound() {
  const int reported = static_cast<int>(accepted_.size());
  if (reported < config_.min_results) {
    AbandonRound(StrCat(reported, " valid results, quorum is ", config_.min_results));
    return MaybeStartRound();
  }
  auto aggregate = std::move(*aggregator_).Report();
  aggregator_.reset();
  if (!aggregate.ok()) {
    AbandonRound(std::string(aggregate.status().message()));
    return MaybeStartRound();
  }
  if (aggregate->tensors.size() != deps_.store->Current()->weights->tensors.size()) {
    // fedper: the clients' private layers stay as they were in the global model.
    aggregate = core::MergeTensors(*deps_.store->Current()->weights, *aggregate);
  }
  return PublishRound(*std::move(aggregate), reported);
}

absl::Status RoundStateMachine::PublishRound(core::ModelWeights aggregate, int reported) {
  const absl::Time t0 = deps_.clock->Now();
  auto global = deps_.store->Current();
  auto next = deps_.strategy->NextGlobalModel(*global->weights, std::move(aggregate));
  if (next.ok() && config_.dp.noise_multiplier > 0) {
    // Gaussian noise on the mean of `reported` clipped updates, i.e. on the new model.
    const double stddev = update_noise_multiplier_ * round_clip_norm_ / std::max(reported, 1);
    core::Rng noise(config_.dp.noise_seed != 0 ? core::DeriveSeed(config_.dp.noise_seed, {round_})
                                               : security::dp::SecureSeed());
    if (absl::Status s = security::dp::AddGaussianNoise(*next, stddev, noise); !s.ok()) next = s;
  }
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
  if (clipper_) {
    core::Rng count_noise(config_.dp.noise_seed != 0 ? core::DeriveSeed(config_.dp.noise_seed, {round_, 1})
                                                     : security::dp::SecureSeed());
    TESSERA_RETURN_IF_ERROR(clipper_->Update(unclipped_count_, reported, count_noise));
  }
  if (config_.dp.clip_norm > 0 || clipper_) summary.dp_clip_norm = round_clip_norm_;
  if (accountant_) {
    // The released model spends privacy: account for it, durably, before anyone sees it finish.
    TESSERA_RETURN_IF_ERROR(accountant_->Step(config_.dp.noise_multiplier, sampling_rate_));
    TESSERA_RETURN_IF_ERROR(SavePrivacyState());
    summary.epsilon = epsilon();
  }
  summary.aggregate_time = deps_.clock->Now() - t0 - summary.eval_time;
  summary.duration = deps_.clock->Now() - opened_at_;
  FinishRound(std::move(summary));
  return MaybeStartRound();
}

std::string RoundStateMachine::PrivacyStateJson() const {
  if (!accountant_) return "";
  nlohmann::json j = {{"rdp", accountant_->Serialize()}};
  if (clipper_) j["clip_norm"] = clipper_->clip_norm();
  return j.dump();
}

absl::Status RoundStateMachine::SavePrivacyState() const {
  // With a state database the accountant moves with the round's close, in one transaction.
  if (config_.privacy_state_file.empty() || deps_.journal != nullptr) return absl::OkStatus();
  return core::WriteFileAtomic(config_.privacy_state_file, PrivacyStateJson());
}

double RoundStateMachine::epsilon() const {
  if (!accountant_) return 0;
  auto eps = accountant_->Epsilon(config_.dp.delta);
  return eps.ok() ? *eps : std::numeric_limits<double>::infinity();
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
  secagg_.reset();
  accepted_last_round_ = std::move(accepted_);
  accepted_.clear();
  deps_.sender->EndRound(round_);
  tasks_.clear();
  phase_ = round_ >= config_.num_rounds ? RoundPhase::kFinished : RoundPhase::kWaitingForClients;
  if (deps_.journal != nullptr) {
    std::optional<std::string> published;
    if (summary.outcome == RoundOutcome::kCompleted) published = deps_.store->Current()->sha256;
    JournalError(deps_.journal->RoundClosed(summary, published, PrivacyStateJson()), "the round's close");
  }
  history_.push_back(summary);
  if (deps_.observer != nullptr) deps_.observer->OnRoundEnd(history_.back());
}

}  // namespace tessera::coordinator
