// Coordinator: the transport-facing facade of a federated run.
//
// Thread-safe: every entry point takes one mutex (mu_) around the registry and the round state
// machine; callbacks (long-poll completions) run outside the lock. Transports (the gRPC service,
// the simulator's in-memory channel) translate to these calls and nothing more.
//
// Tasks reach clients through a mailbox: the state machine's ClientSender puts a client's task
// in its box and wakes the client's pending PullTask; an optional extra sender (the simulator's
// scheduler) is told as well.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/client_registry.h"
#include "coordinator/client_sender.h"
#include "coordinator/model_store.h"
#include "coordinator/round_state_machine.h"
#include "coordinator/state_store.h"
#include "coordinator/strategy.h"
#include "core/clock.h"
#include "core/federation.h"
#include "core/thread_pool.h"

namespace tessera::coordinator {

struct CoordinatorOptions {
  RoundConfig round;
  std::string model_dir;  // where model versions are written ("" = memory only)
  // The SQLite database of the run's state (needs model_dir; "" = memory only). A coordinator
  // started on the database of an earlier life of the same run picks up where it stopped.
  std::string state_db;
  bool sync_state_to_disk = false;  // see StateStore: survive machine crashes, not only SIGKILL
  // A secure round's unmasking (seconds for hundreds of clients with dropouts) runs on a worker
  // thread, not under the lock every RPC takes; false runs it inside the closing event.
  bool finalize_off_lock = true;
  absl::Duration heartbeat_interval = absl::Seconds(5);
  absl::Duration liveness_timeout = absl::Seconds(30);  // a silent client is dropped after this
  absl::Duration max_poll_wait = absl::Seconds(30);

  // Admission (SECURITY.md, "Transport and identity"). Under mutual TLS a client id is the name
  // in the client's certificate, so these lists admit or refuse certificates by name.
  // Only these ids may take part (nullopt: any id).
  std::optional<std::set<std::string>> allowed_clients;
  // These ids are refused even when allowed; Coordinator::Revoke adds to them at runtime.
  std::set<std::string> revoked_clients;
};

struct CoordinatorDeps {
  const core::Clock* clock = core::RealClock::Get();
  Evaluator* evaluator = nullptr;      // optional
  RoundObserver* observer = nullptr;   // optional; called under the lock
  ClientSender* extra_sender = nullptr;  // optional; told of every task, under the lock
};

class Coordinator {
 public:
  using PullCallback = std::function<void(absl::StatusOr<core::PullTaskReply>)>;
  using SecAggCallback = std::function<void(absl::StatusOr<security::secagg::StageReply>)>;

  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options,
                                                             std::unique_ptr<Strategy> strategy,
                                                             core::ModelWeights initial_model,
                                                             CoordinatorDeps deps = {});
  ~Coordinator();

  // INVALID_ARGUMENT for an empty id.
  absl::StatusOr<core::RegisterReply> Register(const core::ClientId& client,
                                               std::map<std::string, std::string> properties);
  // NOT_FOUND when the client must register (again).
  absl::Status Heartbeat(const core::ClientId& client);
  // Long poll: `done` is called (once, maybe on this thread) with the client's task as soon as it
  // has one, or with no task after `max_wait` (capped by the options; 0 answers at once). A
  // second poll of the same client answers the first one with no task.
  void PullTask(const core::ClientId& client, absl::Duration max_wait, PullCallback done);
  // The global model a task is for. NOT_FOUND when the client holds no such task now.
  absl::StatusOr<std::shared_ptr<const ModelBlob>> ModelForTask(const core::ClientId& client,
                                                               const core::RoundRef& ref);
  absl::StatusOr<core::UploadAck> SubmitResult(const core::ClientId& client, core::TrainResult result);
  // A client's SecAgg+ stage message for the open secure round. `done` is called (once) with the
  // client's reply as soon as the stage closed, with UNAVAILABLE after `max_wait` while it is
  // still open (the client sends the same message again: a repeat is a poll), with ABORTED when
  // the session ended without the client, or with the message's refusal.
  void SecAggStep(const core::ClientId& client, const core::RoundRef& ref, const security::secagg::StageRequest& request,
                  absl::Duration max_wait, SecAggCallback done);
  // The transport knows `client` failed its task (a broken stream, a crashed virtual client):
  // the open round counts it as dropped instead of waiting for its deadline.
  void ReportFailure(const core::ClientId& client);

  // Refuses `client` from now on: every later call for it is PERMISSION_DENIED, its pending polls
  // are answered so, it leaves the registry (it is never sampled again) and, in an open round,
  // it counts as dropped. Idempotent.
  void Revoke(const core::ClientId& client);

  // Expires silent clients, answers timed-out polls, closes rounds at their deadline.
  // Servers call it periodically; the simulator after every event it drives.
  void Tick();
  // Answers every pending long poll with UNAVAILABLE, and every later one at once: called
  // before a transport shuts down so that no poll outlives it.
  void ReleaseWaiters();

  bool finished() const;
  // Blocks until the run is finished or `timeout` passes; true if finished.
  bool WaitFinished(absl::Duration timeout);
  std::vector<RoundSummary> history() const;
  // Whether this coordinator resumed a run from its state database.
  bool resumed() const { return resumed_; }
  std::shared_ptr<const ModelBlob> global_model() const { return store_->Current(); }
  const std::string& run_id() const { return options_.round.run_id; }
  RoundPhase phase() const;
  core::RoundNumber current_round() const;

 private:
  class Mailbox;
  struct Waiter {
    absl::Time deadline;
    PullCallback done;
  };
  struct SecAggWaiter {
    core::RoundRef ref;
    security::secagg::Stage stage;
    absl::Time deadline;
    SecAggCallback done;
  };
  using Completion = std::function<void()>;

  Coordinator(CoordinatorOptions options, std::unique_ptr<Strategy> strategy, CoordinatorDeps deps);
  // Hands a round's finalize job (if any) to the finalizer thread. Requires mu_.
  void ScheduleFinalize();
  // Answers waiters whose client now has a task (or the run finished). Requires mu_.
  void CollectReadyWaiters(std::vector<Completion>& out);
  core::PullTaskReply ReplyFor(const core::ClientId& client) const;  // requires mu_
  // PERMISSION_DENIED, naming the id, for a revoked client or one outside the allow-list.
  // Requires mu_.
  absl::Status CheckAdmitted(const core::ClientId& client) const;
  static void RunAll(std::vector<Completion>& completions);

  const CoordinatorOptions options_;
  const CoordinatorDeps deps_;
  std::unique_ptr<Strategy> strategy_;
  std::unique_ptr<StateStore> journal_;
  std::unique_ptr<ModelStore> store_;
  std::unique_ptr<Mailbox> mailbox_;
  std::unique_ptr<core::ThreadPool> finalizer_;  // one thread: secure rounds' unmasking

  mutable std::mutex mu_;
  std::condition_variable finished_cv_;
  ClientRegistry registry_;                        // GUARDED_BY(mu_)
  std::unique_ptr<RoundStateMachine> rounds_;      // GUARDED_BY(mu_)
  std::map<core::ClientId, Waiter> waiters_;       // GUARDED_BY(mu_)
  std::multimap<absl::Time, core::ClientId> waiter_deadlines_;  // GUARDED_BY(mu_); may hold stale entries
  std::map<core::ClientId, SecAggWaiter> secagg_waiters_;  // GUARDED_BY(mu_)
  bool released_ = false;                          // GUARDED_BY(mu_)
  std::set<std::string> revoked_;                  // GUARDED_BY(mu_)
  bool resumed_ = false;
};

}  // namespace tessera::coordinator
