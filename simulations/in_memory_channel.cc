#include "simulations/in_memory_channel.h"

#include <future>

namespace tessera::simulations {

absl::StatusOr<core::PullTaskReply> InMemoryChannel::PullTask(const core::ClientId& client, absl::Duration max_wait) {
  std::promise<absl::StatusOr<core::PullTaskReply>> promise;
  auto future = promise.get_future();
  coordinator_->PullTask(client, max_wait,
                         [&promise](absl::StatusOr<core::PullTaskReply> reply) { promise.set_value(std::move(reply)); });
  return future.get();
}

absl::StatusOr<core::ModelWeights> InMemoryChannel::DownloadModel(const core::ClientId& client,
                                                                  const core::TrainTask& task) {
  auto blob = coordinator_->ModelForTask(client, task.ref);
  if (!blob.ok()) return blob.status();
  return *(*blob)->weights;  // the client trains its own copy
}

absl::StatusOr<core::UploadAck> InMemoryChannel::UploadResult(const core::ClientId& client,
                                                              const core::TrainResult& result) {
  if (before_upload_) before_upload_();
  return coordinator_->SubmitResult(client, result);
}

absl::StatusOr<security::secagg::StageReply> InMemoryChannel::SecAggStep(
    const core::ClientId& client, const core::TrainTask& task, const security::secagg::StageRequest& request,
    absl::Duration max_wait) {
  std::promise<absl::StatusOr<security::secagg::StageReply>> promise;
  auto future = promise.get_future();
  coordinator_->SecAggStep(client, task.ref, request, max_wait,
                           [&promise](absl::StatusOr<security::secagg::StageReply> r) { promise.set_value(std::move(r)); });
  return future.get();
}

}  // namespace tessera::simulations
