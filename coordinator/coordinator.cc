#include "coordinator/coordinator.h"

#include <utility>

#include "core/logging.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::coordinator {

using core::ClientId;

// The deployment's ClientSender: a box per client holding its task of the open round.
class Coordinator::Mailbox final : public ClientSender {
 public:
  explicit Mailbox(ClientSender* extra) : extra_(extra) {}
  void SendTask(const ClientId& client, const core::TrainTask& task) override {
    boxes_[client] = task;
    ready_.push_back(client);
    if (extra_) extra_->SendTask(client, task);
  }
  // The clients that got a task since the last call (their pending polls can be answered).
  std::vector<ClientId> TakeReady() { return std::exchange(ready_, {}); }
  void EndRound(core::RoundNumber round) override {
    boxes_.clear();
    if (extra_) extra_->EndRound(round);
  }
  const core::TrainTask* Peek(const ClientId& client) const {
    auto it = boxes_.find(client);
    return it == boxes_.end() ? nullptr : &it->second;
  }
  // Removes the client's task if it is `task_id` (a newer round's task stays).
  void RemoveTask(const ClientId& client, const std::string& task_id) {
    auto it = boxes_.find(client);
    if (it != boxes_.end() && it->second.ref.task_id == task_id) boxes_.erase(it);
  }
  void Remove(const ClientId& client) { boxes_.erase(client); }

 private:
  ClientSender* extra_;
  std::map<ClientId, core::TrainTask> boxes_;
  std::vector<ClientId> ready_;
};

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options,
                                                                  std::unique_ptr<Strategy> strategy,
                                                                  core::ModelWeights initial_model,
                                                                  CoordinatorDeps deps) {
  if (!strategy) return absl::InvalidArgumentError("a strategy is required");
  if (initial_model.tensors.empty()) return absl::InvalidArgumentError("the initial model has no tensors");
  TESSERA_RETURN_IF_ERROR(initial_model.CheckFinite());
  if (!deps.clock) deps.clock = core::RealClock::Get();
  std::unique_ptr<Coordinator> c(new Coordinator(options, std::move(strategy), deps));
  std::optional<RestoredState> restored;
  if (!options.state_db.empty()) {
    if (options.model_dir.empty()) return absl::InvalidArgumentError("a state database needs a model directory");
    TESSERA_ASSIGN_OR_RETURN(c->journal_, StateStore::Open({options.state_db, options.round.run_id,
                                                            options.sync_state_to_disk}));
    TESSERA_ASSIGN_OR_RETURN(restored, c->journal_->Load());
  }
  if (restored) {
    TESSERA_ASSIGN_OR_RETURN(c->store_, ModelStore::Reopen(options.model_dir, options.round.run_id,
                                                           restored->model_version, restored->model_round,
                                                           restored->model_sha256, initial_model));
    // Every client the run knew is given a liveness period to be heard from again.
    for (auto& [id, properties] : restored->clients) c->registry_.Register(id, properties, deps.clock->Now());
    c->revoked_.insert(restored->revoked.begin(), restored->revoked.end());
    c->resumed_ = true;
  } else {
    TESSERA_ASSIGN_OR_RETURN(c->store_,
                             ModelStore::Create(options.model_dir, std::move(initial_model), options.round.run_id));
    if (c->journal_) TESSERA_RETURN_IF_ERROR(c->journal_->SaveInitialVersion(c->store_->Current()->sha256));
  }
  RoundDeps rd;
  rd.strategy = c->strategy_.get();
  rd.store = c->store_.get();
  rd.registry = &c->registry_;
  rd.sender = c->mailbox_.get();
  rd.clock = deps.clock;
  rd.evaluator = deps.evaluator;
  rd.observer = deps.observer;
  rd.journal = c->journal_.get();
  rd.async_finalize = options.finalize_off_lock;
  if (options.finalize_off_lock) c->finalizer_ = std::make_unique<core::ThreadPool>(1);
  TESSERA_ASSIGN_OR_RETURN(c->rounds_, RoundStateMachine::Create(options.round, rd));
  if (restored) {
    std::lock_guard lock(c->mu_);
    TESSERA_RETURN_IF_ERROR(c->rounds_->Restore(*restored));
    core::Logger("coordinator")->info("run '{}' resumed from {}: model v{}, {} rounds done, {} clients known",
                                      options.round.run_id, options.state_db, restored->model_version,
                                      restored->history.size(), restored->clients.size());
  }
  return c;
}

Coordinator::Coordinator(CoordinatorOptions options, std::unique_ptr<Strategy> strategy, CoordinatorDeps deps)
    : options_(std::move(options)),
      deps_(deps),
      strategy_(std::move(strategy)),
      mailbox_(std::make_unique<Mailbox>(deps.extra_sender)),
      registry_(options_.liveness_timeout),
      revoked_(options_.revoked_clients) {}

Coordinator::~Coordinator() {
  ReleaseWaiters();
  finalizer_.reset();  // a running finalization completes first: it needs the round state
}

void Coordinator::ScheduleFinalize() {
  auto job = rounds_->TakeFinalizeJob();
  if (!job) return;
  finalizer_->Submit([this, job = std::move(*job)] {
    const absl::Time t0 = absl::Now();
    absl::Status result = job();
    core::Logger("coordinator")->info("secure aggregation unmasked in {}", absl::FormatDuration(absl::Now() - t0));
    std::vector<Completion> completions;
    {
      std::lock_guard lock(mu_);
      if (absl::Status s = rounds_->OnFinalized(std::move(result)); !s.ok()) {
        core::Logger("coordinator")->error("closing round: {}", std::string(s.message()));
      }
      CollectReadyWaiters(completions);
    }
    RunAll(completions);
  });
}

void Coordinator::RunAll(std::vector<Completion>& completions) {
  for (auto& c : completions) c();
  completions.clear();
}

absl::StatusOr<core::RegisterReply> Coordinator::Register(const ClientId& client,
                                                          std::map<std::string, std::string> properties) {
  if (client.value.empty()) return absl::InvalidArgumentError("client id must not be empty");
  if (client.value.size() > 256) return absl::InvalidArgumentError("client id longer than 256 bytes");
  std::vector<Completion> completions;
  {
    std::lock_guard lock(mu_);
    if (absl::Status s = CheckAdmitted(client); !s.ok()) {
      core::Logger("coordinator")->warn("registration refused: {}", std::string(s.message()));
      return s;
    }
    if (journal_) {
      // A registration the database cannot keep is refused: the client tries again.
      if (absl::Status s = journal_->SaveClient(client, properties); !s.ok()) {
        core::Logger("coordinator")->error("cannot record the registration of '{}': {}", client.value,
                                           std::string(s.message()));
        return absl::UnavailableError("the coordinator cannot record registrations right now; try again");
      }
    }
    if (registry_.Register(client, std::move(properties), deps_.clock->Now())) {
      core::Logger("coordinator")->info("client '{}' registered ({} known)", client.value, registry_.size());
    }
    TESSERA_RETURN_IF_ERROR(rounds_->MaybeStartRound());
    CollectReadyWaiters(completions);
  }
  RunAll(completions);
  return core::RegisterReply{options_.round.run_id, options_.heartbeat_interval};
}

absl::Status Coordinator::Heartbeat(const ClientId& client) {
  std::lock_guard lock(mu_);
  TESSERA_RETURN_IF_ERROR(CheckAdmitted(client));
  return registry_.Touch(client, deps_.clock->Now());
}

core::PullTaskReply Coordinator::ReplyFor(const ClientId& client) const {
  core::PullTaskReply reply;
  reply.retry_after = absl::Milliseconds(500);
  if (rounds_->phase() == RoundPhase::kFinished) {
    reply.run_finished = true;
  } else if (const core::TrainTask* task = mailbox_->Peek(client)) {
    reply.task = *task;
  }
  return reply;
}

void Coordinator::PullTask(const ClientId& client, absl::Duration max_wait, PullCallback done) {
  std::vector<Completion> completions;
  {
    std::lock_guard lock(mu_);
    const absl::Time now = deps_.clock->Now();
    absl::Status s = CheckAdmitted(client);
    if (s.ok()) s = registry_.Touch(client, now);
    if (!s.ok()) {
      completions.push_back([done = std::move(done), s] { done(s); });
    } else {
      if (auto old = waiters_.find(client); old != waiters_.end()) {
        completions.push_back([d = std::move(old->second.done)] { d(core::PullTaskReply{}); });
        waiters_.erase(old);
      }
      core::PullTaskReply reply = ReplyFor(client);
      if (reply.task || reply.run_finished || max_wait <= absl::ZeroDuration() || released_) {
        completions.push_back([done = std::move(done), reply] { done(reply); });
      } else {
        const absl::Time deadline = now + std::min(max_wait, options_.max_poll_wait);
        waiters_[client] = Waiter{deadline, std::move(done)};
        waiter_deadlines_.emplace(deadline, client);
      }
    }
  }
  RunAll(completions);
}

void Coordinator::CollectReadyWaiters(std::vector<Completion>& out) {
  // Every event ends here with the lock held: the place to notice a round ready to finalize.
  ScheduleFinalize();
  const absl::Time now = deps_.clock->Now();
  // Only the polls that can be answered are visited (10,000 clients may be waiting): those
  // whose client just got a task, those past their deadline, or all once the run finished.
  auto answer = [&](std::map<ClientId, Waiter>::iterator it) {
    out.push_back([done = std::move(it->second.done), reply = ReplyFor(it->first)] { done(reply); });
    waiters_.erase(it);
  };
  if (rounds_->phase() == RoundPhase::kFinished) {
    while (!waiters_.empty()) answer(waiters_.begin());
    waiter_deadlines_.clear();
  }
  for (const ClientId& id : mailbox_->TakeReady()) {
    auto it = waiters_.find(id);
    if (it != waiters_.end() && mailbox_->Peek(id) != nullptr) answer(it);
  }
  while (!waiter_deadlines_.empty() && waiter_deadlines_.begin()->first <= now) {
    auto it = waiters_.find(waiter_deadlines_.begin()->second);
    // The entry may be stale (the poll was answered or superseded by a later one).
    if (it != waiters_.end() && it->second.deadline <= now) answer(it);
    waiter_deadlines_.erase(waiter_deadlines_.begin());
  }
  for (auto it = secagg_waiters_.begin(); it != secagg_waiters_.end();) {
    bool gone = false;
    const auto* reply = rounds_->SecAggReply(it->first, it->second.ref, it->second.stage, &gone);
    if (reply != nullptr) {
      out.push_back([done = std::move(it->second.done), r = *reply] { done(r); });
    } else if (gone) {
      out.push_back([done = std::move(it->second.done)] {
        done(absl::AbortedError("the secure aggregation session ended without this client"));
      });
    } else if (now >= it->second.deadline) {
      out.push_back([done = std::move(it->second.done)] {
        done(absl::UnavailableError("the secure aggregation stage is still open; send the message again"));
      });
    } else {
      ++it;
      continue;
    }
    it = secagg_waiters_.erase(it);
  }
  if (rounds_->phase() == RoundPhase::kFinished) finished_cv_.notify_all();
}

void Coordinator::SecAggStep(const ClientId& client, const core::RoundRef& ref,
                             const security::secagg::StageRequest& request, absl::Duration max_wait,
                             SecAggCallback done) {
  std::vector<Completion> completions;
  {
    std::unique_lock lock(mu_);
    if (absl::Status s = CheckAdmitted(client); !s.ok()) {
      lock.unlock();  // callbacks run outside the lock
      done(s);
      return;
    }
    const absl::Time now = deps_.clock->Now();
    registry_.Touch(client, now).IgnoreError();
    if (auto old = secagg_waiters_.find(client); old != secagg_waiters_.end()) {
      completions.push_back([d = std::move(old->second.done)] {
        d(absl::UnavailableError("superseded by a newer message of the same client"));
      });
      secagg_waiters_.erase(old);
    }
    auto reply = rounds_->OnSecAggMessage(client, ref, request);
    if (!reply.ok()) {
      completions.push_back([done = std::move(done), s = reply.status()] { done(s); });
    } else if (reply->has_value()) {
      completions.push_back([done = std::move(done), r = **reply] { done(r); });
    } else if (released_ || max_wait <= absl::ZeroDuration()) {
      completions.push_back([done = std::move(done)] {
        done(absl::UnavailableError("the secure aggregation stage is still open; send the message again"));
      });
    } else {
      secagg_waiters_[client] =
          SecAggWaiter{ref, request.stage(), now + std::min(max_wait, options_.max_poll_wait), std::move(done)};
    }
    CollectReadyWaiters(completions);
  }
  RunAll(completions);
}

absl::StatusOr<std::shared_ptr<const ModelBlob>> Coordinator::ModelForTask(const ClientId& client,
                                                                          const core::RoundRef& ref) {
  std::lock_guard lock(mu_);
  TESSERA_RETURN_IF_ERROR(CheckAdmitted(client));
  const core::TrainTask* task = rounds_->TaskFor(client);
  if (task == nullptr || !(task->ref == ref)) {
    return absl::NotFoundError(core::StrCat("client '", client.value, "' holds no task '", ref.task_id,
                                            "' in the open round"));
  }
  auto blob = store_->Current();
  if (blob->version != task->model_version) return absl::InternalError("task's model version is not current");
  return blob;
}

absl::StatusOr<core::UploadAck> Coordinator::SubmitResult(const ClientId& client, core::TrainResult result) {
  std::vector<Completion> completions;
  absl::StatusOr<core::UploadAck> ack;
  // Writing a result to the spool is the costly part of making it durable (megabytes): it is
  // done before taking the lock; under it only the database row is committed.
  std::optional<SpooledResult> spooled;
  if (journal_) {
    auto s = journal_->Spool(result.weights);
    if (!s.ok()) {
      core::Logger("coordinator")->error("cannot spool the result of '{}': {}", client.value,
                                         std::string(s.status().message()));
      return absl::UnavailableError("the coordinator cannot record results right now; send it again");
    }
    spooled = *std::move(s);
  }
  {
    std::lock_guard lock(mu_);
    absl::Status admitted = CheckAdmitted(client);
    if (!admitted.ok()) {
      if (spooled) journal_->Discard(*spooled);
      return admitted;
    }
    registry_.Touch(client, deps_.clock->Now()).IgnoreError();  // a result is a sign of life
    const std::string task_id = result.ref.task_id;
    ack = rounds_->OnTrainResult(client, std::move(result), spooled ? &*spooled : nullptr);
    if (spooled && !(ack.ok() && !ack->duplicate)) journal_->Discard(*spooled);
    // An accepted or rejected result answers its task. Only that task leaves the box: closing
    // the round may already have put the client's next task there. A refused upload (wrong
    // round, unknown task) leaves the client's task alone.
    if (ack.ok() || absl::IsInvalidArgument(ack.status())) mailbox_->RemoveTask(client, task_id);
    CollectReadyWaiters(completions);
  }
  RunAll(completions);
  return ack;
}

void Coordinator::ReportFailure(const ClientId& client) {
  std::vector<Completion> completions;
  {
    std::lock_guard lock(mu_);
    mailbox_->Remove(client);
    if (auto s = rounds_->OnClientDropped(client); !s.ok()) {
      core::Logger("coordinator")->error("closing round: {}", std::string(s.message()));
    }
    CollectReadyWaiters(completions);
  }
  RunAll(completions);
}

// ---------------------------------------------------------------- admission (allow-list, revocation)

absl::Status Coordinator::CheckAdmitted(const ClientId& client) const {
  if (revoked_.contains(client.value)) {
    return absl::PermissionDeniedError(core::StrCat("client '", client.value, "' is revoked"));
  }
  if (options_.allowed_clients && !options_.allowed_clients->contains(client.value)) {
    return absl::PermissionDeniedError(core::StrCat("client '", client.value, "' is not on the allow-list"));
  }
  return absl::OkStatus();
}

void Coordinator::Revoke(const ClientId& client) {
  std::vector<Completion> completions;
  {
    std::lock_guard lock(mu_);
    if (!revoked_.insert(client.value).second) return;
    if (journal_) {
      if (absl::Status s = journal_->SaveRevoked(client.value); !s.ok()) {
        core::Logger("coordinator")->error("the revocation of '{}' is not durable: {}", client.value,
                                           std::string(s.message()));
      }
    }
    core::Logger("coordinator")->warn("client '{}' revoked", client.value);
    const absl::Status denied = CheckAdmitted(client);
    if (auto w = waiters_.find(client); w != waiters_.end()) {
      completions.push_back([d = std::move(w->second.done), denied] { d(denied); });
      waiters_.erase(w);
    }
    if (auto w = secagg_waiters_.find(client); w != secagg_waiters_.end()) {
      completions.push_back([d = std::move(w->second.done), denied] { d(denied); });
      secagg_waiters_.erase(w);
    }
    registry_.Remove(client);  // never sampled again
    mailbox_->Remove(client);  // its task is void: it counts as dropped
    if (auto s = rounds_->OnClientDropped(client); !s.ok()) {
      core::Logger("coordinator")->error("closing round: {}", std::string(s.message()));
    }
    CollectReadyWaiters(completions);
  }
  RunAll(completions);
}

// ---------------------------------------------------------------- periodic work

void Coordinator::Tick() {
  std::vector<Completion> completions;
  {
    std::lock_guard lock(mu_);
    const absl::Time now = deps_.clock->Now();
    for (const ClientId& gone : registry_.ExpireStale(now)) {
      mailbox_->Remove(gone);  // counted as dropped: its task is void
      if (journal_) journal_->ForgetClient(gone).IgnoreError();  // at worst it is live again after a restart
      core::Logger("coordinator")->info("client '{}' dropped: silent for over {}", gone.value,
                                        absl::FormatDuration(options_.liveness_timeout));
      if (auto s = rounds_->OnClientDropped(gone); !s.ok()) {
        core::Logger("coordinator")->error("closing round: {}", std::string(s.message()));
      }
    }
    if (auto s = rounds_->OnTick(); !s.ok()) {
      core::Logger("coordinator")->error("tick: {}", std::string(s.message()));
    }
    CollectReadyWaiters(completions);
  }
  RunAll(completions);
}

void Coordinator::ReleaseWaiters() {
  std::vector<Completion> completions;
  {
    std::lock_guard lock(mu_);
    released_ = true;
    for (auto& [id, w] : waiters_) {
      completions.push_back([done = std::move(w.done)] { done(absl::UnavailableError("coordinator shutting down")); });
    }
    waiters_.clear();
    waiter_deadlines_.clear();
    for (auto& [id, w] : secagg_waiters_) {
      completions.push_back([done = std::move(w.done)] { done(absl::UnavailableError("coordinator shutting down")); });
    }
    secagg_waiters_.clear();
  }
  RunAll(completions);
}

bool Coordinator::finished() const {
  std::lock_guard lock(mu_);
  return rounds_->phase() == RoundPhase::kFinished;
}

bool Coordinator::WaitFinished(absl::Duration timeout) {
  std::unique_lock lock(mu_);
  return finished_cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                               [this] { return rounds_->phase() == RoundPhase::kFinished; });
}

std::vector<RoundSummary> Coordinator::history() const {
  std::lock_guard lock(mu_);
  return rounds_->history();
}

RoundPhase Coordinator::phase() const {
  std::lock_guard lock(mu_);
  return rounds_->phase();
}

core::RoundNumber Coordinator::current_round() const {
  std::lock_guard lock(mu_);
  return rounds_->current_round();
}

}  // namespace tessera::coordinator
