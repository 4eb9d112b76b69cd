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
#include "client/personalizer.h"
#include "client/trainer.h"
#include "core/federation.h"
#include "core/ids.h"
#include "security/secagg/messages.h"

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
  // One SecAgg+ stage of a secure task: sends the client's message and returns its reply once
  // the stage closed; UNAVAILABLE when it is still open after `max_wait` (send it again).
  virtual absl::StatusOr<security::secagg::StageReply> SecAggStep(const core::ClientId& client,
                                                                  const core::TrainTask& task,
                                                                  const security::secagg::StageRequest& request,
                                                                  absl::Duration max_wait) = 0;
};

struct ClientOptions {
  core::ClientId id;
  std::map<std::string, std::string> properties;
  absl::Duration poll_wait = absl::Seconds(20);
  bool evaluate_locally = true;  // evaluate the trained model on the local held-out split
  // Refuse (FAILED_PRECONDITION, nothing sent) tasks whose round is not securely aggregated.
  bool require_secure_aggregation = false;
  // Called with every result just before it is uploaded (e.g. to keep an audit copy). In a
  // secure round it is the plaintext result before masking, which never leaves the device.
  std::function<void(const core::TrainResult&)> on_upload;
  // Where this client keeps its personal model across rounds and restarts ("" = memory only);
  // used when the federation personalizes (TrainConfig::personalization).
  std::string personal_state_dir;
  // Serving hook: called after each completed task with the model this client now serves (its
  // personal model when the federation personalizes and it has one, else the global model it
  // trained from), the version of that global model, the round and the round's metrics. Runs
  // on the task thread; the reference is valid during the call only.
  std::function<void(const core::ModelWeights& model, core::ModelVersion version, core::RoundNumber round,
                     const core::Metrics& metrics)>
      on_model;
};

class ClientRuntime {
 public:
  // `channel` and `trainer` are borrowed and must outlive the runtime.
  ClientRuntime(ClientOptions options, CoordinatorChannel* channel, Trainer* trainer);

  // Registers, then serves tasks until the coordinator says the run is finished (OK), `stop`
  // becomes true (CANCELLED), or the channel fails for good (its status).
  absl::Status Run(const std::atomic<bool>* stop = nullptr);

  // One task: download, train, evaluate, upload. The task's config seed is made specific to
  // this client and round before training. A secure task (task.secure_aggregation set) runs
  // the SecAgg+ stages instead of the plaintext upload: keys first, then training, then the
  // masked update (the delta to the global model, clipped to task.dp.clip_norm when set, in
  // fixed point), then unmasking.
  absl::StatusOr<core::UploadAck> RunTask(const core::TrainTask& task);

  int tasks_done() const { return tasks_done_; }
  // The personalizer (opened at the first personalized task; nullptr before).
  const Personalizer* personalizer() const { return personalizer_.get(); }

 private:
  struct Trained {
    core::ModelWeights global;
    TrainOutput output;
  };
  // Downloads the task's model and trains from it (fedper: with this client's private layers),
  // then updates the personal model; config receives the round's training config.
  absl::StatusOr<Trained> DownloadAndTrain(const core::TrainTask& task, core::TrainConfig* config);
  // The personal model's metrics on the local held-out data, as "personal_eval_*".
  absl::Status EvaluatePersonal(const core::ModelWeights& global, const core::TrainConfig& config,
                                core::Metrics* metrics);
  absl::StatusOr<core::UploadAck> RunSecureTask(const core::TrainTask& task);
  // Sends `request` until its stage closes (or the task's time is up).
  absl::StatusOr<security::secagg::StageReply> Exchange(const core::TrainTask& task,
                                                        const security::secagg::StageRequest& request);

  ClientOptions options_;
  CoordinatorChannel* channel_;
  Trainer* trainer_;
  std::unique_ptr<Personalizer> personalizer_;
  int tasks_done_ = 0;
};

}  // namespace tessera::client
