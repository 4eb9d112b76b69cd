// InMemoryChannel: a CoordinatorChannel that calls a Coordinator in the same process, so that a
// simulation runs the very Coordinator and ClientRuntime code a deployment runs, minus sockets.
// Thread-safe.
#pragma once

#include <functional>

#include "client/client_runtime.h"
#include "coordinator/coordinator.h"

namespace tessera::simulations {

class InMemoryChannel final : public client::CoordinatorChannel {
 public:
  // `coordinator` is borrowed. `before_upload`, when set, runs before each upload (the
  // simulator's ordered commit waits there for its turn).
  explicit InMemoryChannel(coordinator::Coordinator* coordinator, std::function<void()> before_upload = {})
      : coordinator_(coordinator), before_upload_(std::move(before_upload)) {}

  absl::StatusOr<core::RegisterReply> Register(const core::ClientId& client,
                                               const std::map<std::string, std::string>& properties) override {
    return coordinator_->Register(client, properties);
  }
  absl::Status Heartbeat(const core::ClientId& client) override { return coordinator_->Heartbeat(client); }
  absl::StatusOr<core::PullTaskReply> PullTask(const core::ClientId& client, absl::Duration max_wait) override;
  absl::StatusOr<core::ModelWeights> DownloadModel(const core::ClientId& client, const core::TrainTask& task) override;
  absl::StatusOr<core::UploadAck> UploadResult(const core::ClientId& client, const core::TrainResult& result) override;
  absl::StatusOr<security::secagg::StageReply> SecAggStep(const core::ClientId& client, const core::TrainTask& task,
                                                          const security::secagg::StageRequest& request,
                                                          absl::Duration max_wait) override;

 private:
  coordinator::Coordinator* coordinator_;
  std::function<void()> before_upload_;
};

}  // namespace tessera::simulations
