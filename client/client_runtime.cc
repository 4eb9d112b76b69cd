#include "client/client_runtime.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/logging.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/strings.h"
#include "security/dp/clipping.h"
#include "security/secagg/client.h"
#include "security/secagg/fixed_point.h"

namespace tessera::client {
namespace {

// global + clip(trained - global): the trained weights with the update clipped to an L2 norm.
// `norm`, when given, receives the update's norm before clipping.
absl::StatusOr<core::ModelWeights> ClippedWeights(const core::ModelWeights& global, core::ModelWeights trained,
                                                  double clip_norm, double* norm) {
  for (size_t i = 0; i < trained.tensors.size(); ++i) {
    if (trained.tensors[i].dtype() != core::DType::kFloat32) continue;
    auto t = trained.tensors[i].mutable_f32();
    auto g = global.tensors[i].f32();
    for (size_t j = 0; j < t.size(); ++j) t[j] -= g[j];
  }
  TESSERA_ASSIGN_OR_RETURN(*norm, security::dp::ClipToL2Norm(trained, clip_norm));
  for (size_t i = 0; i < trained.tensors.size(); ++i) {
    if (trained.tensors[i].dtype() != core::DType::kFloat32) continue;
    auto t = trained.tensors[i].mutable_f32();
    auto g = global.tensors[i].f32();
    for (size_t j = 0; j < t.size(); ++j) t[j] += g[j];
  }
  return trained;
}

// Serving hook (ClientOptions::on_model): the personal model when there is one, else the global.
void PublishModel(const ClientOptions& options, const Personalizer* personalizer, const core::TrainConfig& config,
                  const core::ModelWeights& global, const core::TrainTask& task, const core::Metrics& metrics) {
  if (!options.on_model) return;
  const core::ModelWeights* personal =
      personalizer != nullptr && config.personalization.mode != core::PersonalizationMode::kNone ? personalizer->saved()
                                                                                                 : nullptr;
  options.on_model(personal != nullptr ? *personal : global, task.model_version, task.ref.round, metrics);
}

}  // namespace

ClientRuntime::ClientRuntime(ClientOptions options, CoordinatorChannel* channel, Trainer* trainer)
    : options_(std::move(options)), channel_(channel), trainer_(trainer) {}

absl::StatusOr<ClientRuntime::Trained> ClientRuntime::DownloadAndTrain(const core::TrainTask& task,
                                                                     core::TrainConfig* config) {
  TESSERA_ASSIGN_OR_RETURN(core::ModelWeights global, channel_->DownloadModel(options_.id, task));
  *config = task.config;
  config->seed = core::DeriveSeed(task.config.seed, {core::StableHash(options_.id.value), task.ref.round});
  const core::PersonalizationSpec& spec = config->personalization;
  if (spec.mode == core::PersonalizationMode::kNone) {
    TESSERA_ASSIGN_OR_RETURN(TrainOutput out, trainer_->Train(global, *config));
    return Trained{std::move(global), std::move(out)};
  }
  if (!personalizer_) {
    TESSERA_ASSIGN_OR_RETURN(personalizer_, Personalizer::Open(options_.personal_state_dir));
  }
  TESSERA_ASSIGN_OR_RETURN(TrainOutput out, trainer_->Train(personalizer_->StartFor(global, spec), *config));
  TESSERA_RETURN_IF_ERROR(personalizer_->AfterRound(global, out.weights, *config, task.ref.round, *trainer_));
  if (spec.mode == core::PersonalizationMode::kFedPer) {
    // The private layers stay here: the upload (and the global it is measured against) is the
    // shared part only.
    out.weights = core::SharedTensors(out.weights, spec);
    global = core::SharedTensors(global, spec);
  }
  return Trained{std::move(global), std::move(out)};
}

absl::Status ClientRuntime::EvaluatePersonal(const core::ModelWeights& global, const core::TrainConfig& config,
                                             core::Metrics* metrics) {
  if (!personalizer_ || config.personalization.mode == core::PersonalizationMode::kNone) return absl::OkStatus();
  // fedper's `global` lacks the private layers here: evaluate the saved personal model.
  const core::ModelWeights* personal = personalizer_->saved();
  if (personal == nullptr) return absl::OkStatus();
  auto eval = trainer_->Evaluate(*personal);
  if (eval.ok()) {
    for (const auto& [k, v] : *eval) (*metrics)["personal_eval_" + k] = v;
  } else if (!absl::IsFailedPrecondition(eval.status())) {  // no held-out data is fine
    return eval.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<core::UploadAck> ClientRuntime::RunTask(const core::TrainTask& task) {
  if (task.secure_aggregation) return RunSecureTask(task);
  if (options_.require_secure_aggregation) {
    return absl::FailedPreconditionError(core::StrCat("round ", task.ref.round,
                                                      " is not securely aggregated; this client sends no plaintext update"));
  }
  core::TrainConfig config;
  TESSERA_ASSIGN_OR_RETURN(Trained trained, DownloadAndTrain(task, &config));
  TrainOutput out = std::move(trained.output);
  if (task.dp.clip_norm > 0) {
    // DP without secure aggregation: upload global + clip(delta).
    double norm = 0;
    TESSERA_ASSIGN_OR_RETURN(out.weights,
                             ClippedWeights(trained.global, std::move(out.weights), task.dp.clip_norm, &norm));
    if (task.dp.report_unclipped) out.metrics[core::kUnclippedMetric] = norm <= task.dp.clip_norm ? 1.0 : 0.0;
  }
  core::TrainResult result;
  result.ref = task.ref;
  result.num_examples = out.num_examples;
  result.metrics = std::move(out.metrics);
  if (options_.evaluate_locally) {
    // fedper's trained weights lack the private layers: the personal model covers them.
    auto eval = config.personalization.mode == core::PersonalizationMode::kFedPer
                    ? absl::StatusOr<core::Metrics>(absl::FailedPreconditionError("shared layers only"))
                    : trainer_->Evaluate(out.weights);
    if (eval.ok()) {
      for (const auto& [k, v] : *eval) result.metrics["eval_" + k] = v;
    } else if (eval.status().code() != absl::StatusCode::kFailedPrecondition) {  // no held-out data is fine
      return eval.status();
    }
    TESSERA_RETURN_IF_ERROR(EvaluatePersonal(trained.global, config, &result.metrics));
  }
  result.weights = std::move(out.weights);
  if (options_.on_upload) options_.on_upload(result);
  TESSERA_ASSIGN_OR_RETURN(core::UploadAck ack, channel_->UploadResult(options_.id, result));
  PublishModel(options_, personalizer_.get(), config, trained.global, task, result.metrics);
  ++tasks_done_;
  return ack;
}

absl::StatusOr<security::secagg::StageReply> ClientRuntime::Exchange(const core::TrainTask& task,
                                                                     const security::secagg::StageRequest& request) {
  const absl::Duration stage = task.secure_aggregation->stage_deadline;
  const absl::Time give_up = task.deadline == absl::InfiniteFuture() ? absl::InfiniteFuture() : task.deadline + 2 * stage;
  for (;;) {
    const absl::Duration wait = std::min(absl::Seconds(20), std::max(absl::Seconds(1), give_up - absl::Now()));
    auto reply = channel_->SecAggStep(options_.id, task, request, wait);
    if (reply.ok() || !absl::IsUnavailable(reply.status()) || absl::Now() >= give_up) return reply;
  }
}

absl::StatusOr<core::UploadAck> ClientRuntime::RunSecureTask(const core::TrainTask& task) {
  namespace sa = security::secagg;
  const core::SecureAggregationSpec& spec = *task.secure_aggregation;
  sa::SessionParams params;
  params.run_id = task.ref.run_id;
  params.round = task.ref.round;
  params.participants = spec.participants;
  params.neighbours = spec.neighbours;
  params.threshold = spec.threshold;
  params.graph_seed = spec.graph_seed;
  params.vector_length = spec.vector_length;
  params.modulus_bits = spec.modulus_bits;
  if (task.config.personalization.mode == core::PersonalizationMode::kFedPer) {
    return absl::FailedPreconditionError("fedper keeps layers private, which secure aggregation's sum cannot skip");
  }
  TESSERA_ASSIGN_OR_RETURN(auto session, sa::SecAggClient::Create(std::move(params), spec.self));

  // Keys first, so that the session is set up while this client trains.
  TESSERA_ASSIGN_OR_RETURN(sa::AdvertiseKeys keys, session->AdvertiseKeysStage());
  TESSERA_ASSIGN_OR_RETURN(sa::StageReply broadcast, Exchange(task, {keys}));
  if (broadcast.body.index() != 0) return absl::InternalError("unexpected reply to AdvertiseKeys");
  TESSERA_ASSIGN_OR_RETURN(sa::ShareKeys shares, session->ShareKeysStage(std::get<0>(broadcast.body)));
  TESSERA_ASSIGN_OR_RETURN(sa::StageReply relayed, Exchange(task, {std::move(shares)}));
  if (relayed.body.index() != 1) return absl::InternalError("unexpected reply to ShareKeys");

  core::TrainConfig config;
  TESSERA_ASSIGN_OR_RETURN(Trained trained, DownloadAndTrain(task, &config));
  if (options_.on_upload) {
    core::TrainResult plain;
    plain.ref = task.ref;
    plain.num_examples = trained.output.num_examples;
    plain.metrics = trained.output.metrics;
    plain.weights = trained.output.weights;
    options_.on_upload(plain);
  }
  // The update is the delta to the global model, float tensors in order.
  core::ModelWeights delta = std::move(trained.output.weights);
  for (size_t i = 0; i < delta.tensors.size(); ++i) {
    if (delta.tensors[i].dtype() != core::DType::kFloat32) continue;
    auto d = delta.tensors[i].mutable_f32();
    auto g = trained.global.tensors[i].f32();
    for (size_t j = 0; j < d.size(); ++j) d[j] -= g[j];
  }
  uint64_t unclipped = 1;
  if (task.dp.clip_norm > 0) {
    TESSERA_ASSIGN_OR_RETURN(double norm, security::dp::ClipToL2Norm(delta, task.dp.clip_norm));
    unclipped = norm <= task.dp.clip_norm ? 1 : 0;
  }
  std::vector<float> flat;
  flat.reserve(spec.vector_length);
  for (const auto& t : delta.tensors) {
    if (t.dtype() == core::DType::kFloat32) flat.insert(flat.end(), t.f32().begin(), t.f32().end());
  }
  const int extra = task.dp.report_unclipped ? 2 : 1;  // the weight, and the unclipped bit
  if (static_cast<int>(flat.size()) + extra != spec.vector_length) {
    return absl::InvalidArgumentError(core::StrCat("the model has ", flat.size(), " floats, the session expects ",
                                                   spec.vector_length - extra));
  }
  security::FixedPointConfig fp;
  fp.clip = spec.clip;
  fp.bits = spec.bits;
  fp.weight_cap = spec.weight_cap;
  fp.modulus_bits = spec.modulus_bits;
  fp.max_clients = std::max<int>(static_cast<int>(spec.participants.size()), 1);
  core::Rng rounding(config.seed, {0x666978ULL /* "fix" */});
  TESSERA_ASSIGN_OR_RETURN(std::vector<uint64_t> encoded,
                           security::EncodeFixedPoint(flat, trained.output.num_examples, fp, rounding));
  // Adaptive clipping: the bit joins the secure sum, so the server learns only the count.
  if (task.dp.report_unclipped) encoded.push_back(unclipped);
  TESSERA_ASSIGN_OR_RETURN(sa::MaskedInput masked, session->MaskedInputStage(std::get<1>(relayed.body), encoded));
  TESSERA_ASSIGN_OR_RETURN(sa::StageReply unmask_request, Exchange(task, {std::move(masked)}));
  if (unmask_request.body.index() != 2) return absl::InternalError("unexpected reply to MaskedInput");
  TESSERA_ASSIGN_OR_RETURN(sa::UnmaskingResponse response, session->UnmaskingStage(std::get<2>(unmask_request.body)));
  TESSERA_RETURN_IF_ERROR(Exchange(task, {std::move(response)}).status());
  PublishModel(options_, personalizer_.get(), config, trained.global, task, trained.output.metrics);
  ++tasks_done_;
  return core::UploadAck{false, task.ref.round};
}

absl::Status ClientRuntime::Run(const std::atomic<bool>* stop) {
  auto log = core::Logger("client");
  auto stopped = [stop] { return stop != nullptr && stop->load(); };
  TESSERA_ASSIGN_OR_RETURN(core::RegisterReply reg, channel_->Register(options_.id, options_.properties));
  log->info("'{}' registered with run '{}'", options_.id.value, reg.run_id);

  // Heartbeats on their own thread so that long training does not look like a dead client.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread heartbeat([&] {
    std::unique_lock lock(mu);
    while (!cv.wait_for(lock, absl::ToChronoNanoseconds(reg.heartbeat_interval), [&] { return done; })) {
      lock.unlock();
      absl::Status s = channel_->Heartbeat(options_.id);
      if (absl::IsNotFound(s)) channel_->Register(options_.id, options_.properties).IgnoreError();
      lock.lock();
    }
  });
  auto finish = [&](absl::Status s) {
    {
      std::lock_guard lock(mu);
      done = true;
    }
    cv.notify_all();
    heartbeat.join();
    return s;
  };

  std::string last_task;
  while (!stopped()) {
    auto reply = channel_->PullTask(options_.id, options_.poll_wait);
    if (!reply.ok()) {
      if (absl::IsNotFound(reply.status())) {  // the coordinator forgot us (restart, expiry)
        if (auto r = channel_->Register(options_.id, options_.properties); !r.ok()) return finish(r.status());
        continue;
      }
      return finish(reply.status());
    }
    if (reply->run_finished) {
      log->info("'{}': run finished after {} tasks", options_.id.value, tasks_done_);
      return finish(absl::OkStatus());
    }
    if (!reply->task) {
      std::unique_lock lock(mu);
      cv.wait_for(lock, absl::ToChronoNanoseconds(std::min(reply->retry_after, absl::Seconds(5))),
                  [&] { return stopped(); });
      continue;
    }
    if (reply->task->ref.task_id == last_task) continue;  // already answered; wait for the next round
    const core::TrainTask task = *reply->task;
    auto ack = RunTask(task);
    last_task = task.ref.task_id;
    if (ack.ok()) {
      log->info("'{}': round {} result {}", options_.id.value, task.ref.round,
                ack->duplicate ? "was already accepted" : "accepted");
    } else if (absl::IsFailedPrecondition(ack.status()) || absl::IsNotFound(ack.status()) ||
               absl::IsInvalidArgument(ack.status()) || absl::IsDeadlineExceeded(ack.status())) {
      // The round moved on or refused this result: the run goes on.
      log->warn("'{}': round {} result not used: {}", options_.id.value, task.ref.round,
                std::string(ack.status().message()));
    } else {
      return finish(ack.status());
    }
  }
  return finish(absl::CancelledError("client stopped"));
}

}  // namespace tessera::client
