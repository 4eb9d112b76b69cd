// ClientRuntime: one client's life in a federation, transport-free.
//
// It registers, long-polls for tasks, downloads the task's global model, trains it with the
// Trainer on local data, evaluates it on the local held-out split and uploads the result, all
// through a CoordinatorChannel. The deployment plugs in a gRPC channel; the simulator an
// in-memory one. Not thread-safe: one thread drives a runtime (Run, or RunTask for schedulers).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/trainer.h"
#include "core/federation.h"
#include "core/ids.h"

namespace tessera::client {

// The client's view of the coordinator. Implementations are thread-safe (the heartbeat thread
// and the task thread share one channel).
class CoordinatorChannel {
 public:
  virtual ~CoordinatorChannel() = default;
  virtual absl::StatusOr<core::RegisterReply> Register(const core::ClientId& client,
                                                       const std::map<std::string, std::string>& properties) = 0;
  virtual absl::Status Heartbeat(const core::ClientId& client) = 0;
  virtual absl::StatusOr<core::PullTaskReply> PullTask(const core::ClientId& client, absl::Duration max_wait) = 0;
  virtual absl::StatusOr<core::ModelWeights> DownloadModel(const core::ClientId& client,
                                                           const core::TrainTask& task) = 0;
  virtual absl::StatusOr<core::UploadAck> UploadResult(const core::ClientId& client,
                                                       const core::TrainResult& result) = 0;
};

struct ClientOptions {
  core::ClientId id;
  std::map<std::string, std::string> properties;
  absl::Duration poll_wait = absl::Seconds(20);
  bool evaluate_locally = true;  // evaluate the trained model on the local held-out split
  // Called with every result just before it is uploaded (e.g. to keep an audit copy).
  std::function<void(const core::TrainResult&)> on_upload;
};

class ClientRuntime {
 public:
  // `channel` and `trainer` are borrowed and must outlive the runtime.
  ClientRuntime(ClientOptions options, CoordinatorChannel* channel, Trainer* trainer);

  // Registers, then serves tasks until the coordinator says the run is finished (OK), `stop`
  // becomes true (CANCELLED), or the channel fails for good (its status).
  absl::Status Run(const std::atomic<bool>* stop = nullptr);

  // One task: download, train, evaluate, upload. The task's config seed is made specific to
  // this client and round before training.
  absl::StatusOr<core::UploadAck> RunTask(const core::TrainTask& task);

  int tasks_done() const { return tasks_done_; }

 private:
  ClientOptions options_;
  CoordinatorChannel* channel_;
  Trainer* trainer_;
  int tasks_done_ = 0;
};

}  // namespace tessera::client
