#include "client/client_runtime.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/logging.h"
#include "core/rng.h"
#include "core/status.h"

namespace tessera::client {

ClientRuntime::ClientRuntime(ClientOptions options, CoordinatorChannel* channel, Trainer* trainer)
    : options_(std::move(options)), channel_(channel), trainer_(trainer) {}

absl::StatusOr<core::UploadAck> ClientRuntime::RunTask(const core::TrainTask& task) {
  TESSERA_ASSIGN_OR_RETURN(core::ModelWeights global, channel_->DownloadModel(options_.id, task));
  core::TrainConfig config = task.config;
  config.seed = core::DeriveSeed(task.config.seed, {std::hash<std::string>()(options_.id.value), task.ref.round});
  TESSERA_ASSIGN_OR_RETURN(TrainOutput out, trainer_->Train(global, config));
  core::TrainResult result;
  result.ref = task.ref;
  result.num_examples = out.num_examples;
  result.metrics = std::move(out.metrics);
  if (options_.evaluate_locally) {
    auto eval = trainer_->Evaluate(out.weights);
    if (eval.ok()) {
      for (const auto& [k, v] : *eval) result.metrics["eval_" + k] = v;
    } else if (eval.status().code() != absl::StatusCode::kFailedPrecondition) {  // no held-out data is fine
      return eval.status();
    }
  }
  result.weights = std::move(out.weights);
  if (options_.on_upload) options_.on_upload(result);
  TESSERA_ASSIGN_OR_RETURN(core::UploadAck ack, channel_->UploadResult(options_.id, result));
  ++tasks_done_;
  return ack;
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
