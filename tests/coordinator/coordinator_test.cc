#include "coordinator/coordinator.h"

#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/strategy.h"
#include "core/clock.h"
#include "core/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"

namespace tessera::coordinator {
namespace {

using core::ClientId;
using core::PullTaskReply;
using core::TrainTask;
using testutil::FloatModel;
using testutil::ResultFor;
using testutil::Values;
using ::testing::FloatNear;
using ::testing::Pointwise;

constexpr float kTol = 1e-6f;

// What a PullTask callback received.
struct Poll {
  int calls = 0;
  absl::StatusOr<PullTaskReply> reply = absl::UnknownError("callback not called");

  bool answered() const { return calls > 0; }
  bool has_task() const { return reply.ok() && reply->task.has_value(); }
};

struct Options {
  int min_available = 2;
  core::RoundNumber num_rounds = 2;
  absl::Duration liveness = absl::Seconds(30);
};

struct Harness {
  explicit Harness(Options o = Options()) {
    CoordinatorOptions options;
    options.round.run_id = "run-c";
    options.round.num_rounds = o.num_rounds;
    options.round.round_deadline = absl::Minutes(10);
    options.round.min_results = 1;
    options.round.seed = 5;
    options.heartbeat_interval = absl::Seconds(5);
    options.liveness_timeout = o.liveness;
    options.max_poll_wait = absl::Seconds(30);
    FedAvgOptions fedavg;
    fedavg.fraction = 1.0;
    fedavg.min_available_clients = o.min_available;
    CoordinatorDeps deps;
    deps.clock = &clock;
    deps.observer = &observer;
    deps.extra_sender = &extra;
    coordinator = Coordinator::Create(options, FedAvgStrategy::Create(fedavg).value(), FloatModel({1, 2, 3, 4}), deps)
                      .value();
  }

  std::shared_ptr<Poll> Pull(const std::string& id, absl::Duration wait) {
    auto poll = std::make_shared<Poll>();
    coordinator->PullTask(ClientId{id}, wait, [poll](absl::StatusOr<PullTaskReply> r) {
      ++poll->calls;
      poll->reply = std::move(r);
    });
    return poll;
  }
  void Register(const std::vector<std::string>& ids) {
    for (const auto& id : ids) ASSERT_OK(coordinator->Register(ClientId{id}, {}));
  }
  absl::StatusOr<core::UploadAck> Submit(const TrainTask& task, const std::string& id, std::vector<float> values,
                                         int64_t n) {
    return coordinator->SubmitResult(ClientId{id}, ResultFor(task, FloatModel(std::move(values)), n));
  }
  std::vector<float> GlobalValues() const { return Values(*coordinator->global_model()->weights); }

  core::FakeClock clock;
  testutil::RecordingSender extra;
  testutil::RecordingObserver observer;
  std::unique_ptr<Coordinator> coordinator;
};

TEST(CoordinatorTest, CreateValidatesItsInputs) {
  CoordinatorDeps deps;
  core::FakeClock clock;
  deps.clock = &clock;
  auto strategy = [] { return std::unique_ptr<Strategy>(FedAvgStrategy::Create(FedAvgOptions{}).value()); };
  EXPECT_CODE(Coordinator::Create(CoordinatorOptions{}, nullptr, FloatModel({1}), deps),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(Coordinator::Create(CoordinatorOptions{}, strategy(), core::ModelWeights{}, deps),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(Coordinator::Create(CoordinatorOptions{}, strategy(),
                                  FloatModel({1, std::numeric_limits<float>::quiet_NaN()}), deps),
              absl::StatusCode::kInvalidArgument);
  CoordinatorOptions bad_rounds;
  bad_rounds.round.num_rounds = 0;
  EXPECT_CODE(Coordinator::Create(bad_rounds, strategy(), FloatModel({1}), deps), absl::StatusCode::kInvalidArgument);
  EXPECT_OK(Coordinator::Create(CoordinatorOptions{}, strategy(), FloatModel({1}), deps));
}

TEST(CoordinatorTest, RegisterValidatesTheIdAndAnswersWithTheRun) {
  Harness h;
  EXPECT_CODE(h.coordinator->Register(ClientId{""}, {}), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(h.coordinator->Register(ClientId{std::string(257, 'x')}, {}), absl::StatusCode::kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(core::RegisterReply reply, h.coordinator->Register(ClientId{"alice"}, {{"gpu", "none"}}));
  EXPECT_EQ(reply.run_id, "run-c");
  EXPECT_EQ(reply.heartbeat_interval, absl::Seconds(5));
  EXPECT_OK(h.coordinator->Register(ClientId{"alice"}, {}));  // a restarted client registers again
  EXPECT_OK(h.coordinator->Register(ClientId{std::string(256, 'x')}, {}));
}

TEST(CoordinatorTest, HeartbeatOfAnUnknownClientIsNotFound) {
  Harness h;
  EXPECT_CODE(h.coordinator->Heartbeat(ClientId{"ghost"}), absl::StatusCode::kNotFound);
  h.Register({"alice"});
  EXPECT_OK(h.coordinator->Heartbeat(ClientId{"alice"}));
}

TEST(CoordinatorTest, PullTaskOfAnUnknownClientIsNotFound) {
  Harness h;
  auto poll = h.Pull("ghost", absl::Seconds(10));
  ASSERT_TRUE(poll->answered());
  EXPECT_CODE(poll->reply, absl::StatusCode::kNotFound);
}

TEST(CoordinatorTest, PullTaskWithZeroWaitAnswersAtOnce) {
  Harness h;
  h.Register({"alice"});  // one client is not enough for a round
  auto poll = h.Pull("alice", absl::ZeroDuration());
  ASSERT_EQ(poll->calls, 1);
  ASSERT_OK(poll->reply);
  EXPECT_FALSE(poll->reply->task.has_value());
  EXPECT_FALSE(poll->reply->run_finished);
  EXPECT_GT(poll->reply->retry_after, absl::ZeroDuration());
}

TEST(CoordinatorTest, PendingPullTaskIsAnsweredWhenARoundOpens) {
  Harness h;
  h.Register({"alice"});
  auto poll = h.Pull("alice", absl::Seconds(10));
  EXPECT_FALSE(poll->answered());
  h.clock.Advance(absl::Seconds(2));
  h.coordinator->Tick();
  EXPECT_FALSE(poll->answered());

  h.Register({"bob"});  // the second client opens round 1
  ASSERT_EQ(poll->calls, 1);
  ASSERT_TRUE(poll->has_task());
  const TrainTask& task = *poll->reply->task;
  EXPECT_EQ(task.ref.run_id, "run-c");
  EXPECT_EQ(task.ref.round, 1u);
  EXPECT_EQ(task.model_version, 0u);
  const auto sent = h.extra.LastTaskFor(ClientId{"alice"});
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ(sent->ref, task.ref);

  auto bob = h.Pull("bob", absl::ZeroDuration());
  ASSERT_TRUE(bob->has_task());
  EXPECT_EQ(bob->reply->task->ref.round, 1u);
  EXPECT_NE(bob->reply->task->ref.task_id, task.ref.task_id);
  EXPECT_EQ(poll->calls, 1) << "answered twice";
}

TEST(CoordinatorTest, PendingPullTaskTimesOutOnTickWithNoTask) {
  Harness h;
  h.Register({"alice"});
  auto poll = h.Pull("alice", absl::Seconds(5));
  h.clock.Advance(absl::Seconds(4));
  h.coordinator->Tick();
  EXPECT_FALSE(poll->answered());
  h.clock.Advance(absl::Seconds(1));
  h.coordinator->Tick();
  ASSERT_EQ(poll->calls, 1);
  ASSERT_OK(poll->reply);
  EXPECT_FALSE(poll->reply->task.has_value());
  EXPECT_FALSE(poll->reply->run_finished);
}

TEST(CoordinatorTest, PollWaitIsCappedByMaxPollWait) {
  Harness h;
  h.Register({"alice"});
  auto poll = h.Pull("alice", absl::Hours(1));
  h.clock.Advance(absl::Seconds(29));
  h.coordinator->Tick();
  EXPECT_FALSE(poll->answered());
  h.clock.Advance(absl::Seconds(1));  // max_poll_wait = 30 s
  h.coordinator->Tick();
  ASSERT_EQ(poll->calls, 1);
  EXPECT_OK(poll->reply);
}

TEST(CoordinatorTest, SecondPollAnswersTheFirstWithNoTask) {
  Harness h;
  h.Register({"alice"});
  auto first = h.Pull("alice", absl::Seconds(10));
  auto second = h.Pull("alice", absl::Seconds(10));
  ASSERT_EQ(first->calls, 1);
  ASSERT_OK(first->reply);
  EXPECT_FALSE(first->reply->task.has_value());
  EXPECT_FALSE(second->answered());
  h.Register({"bob"});
  EXPECT_TRUE(second->has_task());
  EXPECT_EQ(first->calls, 1);
}

TEST(CoordinatorTest, ModelForTaskNeedsTheTaskTheClientHolds) {
  Harness h;
  h.Register({"alice"});
  EXPECT_CODE(h.coordinator->ModelForTask(ClientId{"alice"}, {"run-c", 1, "run-c/1/alice"}),
              absl::StatusCode::kNotFound);
  h.Register({"bob"});
  auto alice = h.Pull("alice", absl::ZeroDuration());
  auto bob = h.Pull("bob", absl::ZeroDuration());
  ASSERT_TRUE(alice->has_task());
  ASSERT_TRUE(bob->has_task());
  const TrainTask& task = *alice->reply->task;

  ASSERT_OK_AND_ASSIGN(auto blob, h.coordinator->ModelForTask(ClientId{"alice"}, task.ref));
  EXPECT_EQ(blob->version, 0u);
  EXPECT_EQ(blob->serialized.size(), task.model_bytes);
  EXPECT_EQ(core::Sha256Digest(blob->serialized), task.model_sha256);
  EXPECT_EQ(Values(*blob->weights), (std::vector<float>{1, 2, 3, 4}));

  // Another client's task, a made-up one, an unknown client.
  EXPECT_CODE(h.coordinator->ModelForTask(ClientId{"alice"}, bob->reply->task->ref), absl::StatusCode::kNotFound);
  core::RoundRef wrong = task.ref;
  wrong.round = 2;
  EXPECT_CODE(h.coordinator->ModelForTask(ClientId{"alice"}, wrong), absl::StatusCode::kNotFound);
  EXPECT_CODE(h.coordinator->ModelForTask(ClientId{"mallory"}, task.ref), absl::StatusCode::kNotFound);
}

TEST(CoordinatorTest, SubmitResultWithoutATaskIsRefused) {
  Harness h;
  h.Register({"alice"});
  core::TrainResult r;
  r.ref = {"run-c", 1, "run-c/1/alice"};
  r.num_examples = 1;
  r.weights = FloatModel({1, 1, 1, 1});
  EXPECT_CODE(h.coordinator->SubmitResult(ClientId{"alice"}, r), absl::StatusCode::kFailedPrecondition);
  h.Register({"bob"});
  auto bob = h.Pull("bob", absl::ZeroDuration());
  ASSERT_TRUE(bob->has_task());
  EXPECT_CODE(h.coordinator->SubmitResult(ClientId{"mallory"}, ResultFor(*bob->reply->task, FloatModel({1, 1, 1, 1}), 1)),
              absl::StatusCode::kNotFound);
}

// Two rounds through the facade as a client sees them: poll, download, upload.
TEST(CoordinatorTest, RunsTwoRoundsEndToEnd) {
  Harness h;
  h.Register({"alice"});
  auto alice_poll = h.Pull("alice", absl::Seconds(10));
  h.Register({"bob"});
  auto bob_poll = h.Pull("bob", absl::Seconds(10));
  ASSERT_TRUE(alice_poll->has_task());
  ASSERT_TRUE(bob_poll->has_task());

  // Round 1.
  const TrainTask a1 = *alice_poll->reply->task;
  const TrainTask b1 = *bob_poll->reply->task;
  ASSERT_OK(h.coordinator->ModelForTask(ClientId{"alice"}, a1.ref));
  ASSERT_OK(h.coordinator->ModelForTask(ClientId{"bob"}, b1.ref));
  ASSERT_OK_AND_ASSIGN(core::UploadAck ack, h.Submit(a1, "alice", {1, 1, 1, 1}, 1));
  EXPECT_FALSE(ack.duplicate);
  EXPECT_EQ(ack.accepted_round, 1u);
  // A retry of the same upload is acknowledged as a duplicate.
  ASSERT_OK_AND_ASSIGN(core::UploadAck dup, h.Submit(a1, "alice", {1, 1, 1, 1}, 1));
  EXPECT_TRUE(dup.duplicate);
  // alice already answered: her poll gets no task until the next round.
  EXPECT_FALSE(h.Pull("alice", absl::ZeroDuration())->has_task());
  ASSERT_OK(h.Submit(b1, "bob", {3, 5, 7, 9}, 3));
  EXPECT_EQ(h.coordinator->global_model()->version, 1u);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{2.5f, 4.0f, 5.5f, 7.0f}));
  EXPECT_EQ(h.coordinator->current_round(), 2u);
  EXPECT_EQ(h.coordinator->phase(), RoundPhase::kTraining);
  EXPECT_FALSE(h.coordinator->finished());

  // Round 2. The tasks the coordinator handed out (the extra sender sees every one).
  const auto a2_sent = h.extra.LastTaskFor(ClientId{"alice"});
  const auto b2_sent = h.extra.LastTaskFor(ClientId{"bob"});
  ASSERT_TRUE(a2_sent.has_value() && b2_sent.has_value());
  ASSERT_EQ(a2_sent->ref.round, 2u);
  ASSERT_EQ(b2_sent->ref.round, 2u);
  EXPECT_EQ(a2_sent->model_version, 1u);
  auto a2 = h.Pull("alice", absl::ZeroDuration());
  auto b2 = h.Pull("bob", absl::ZeroDuration());
  ASSERT_TRUE(a2->has_task());
  EXPECT_EQ(a2->reply->task->ref, a2_sent->ref);
  // bob's upload closed round 1 (see ClientWhoseResultClosedTheRoundGetsItsNextTask).
  EXPECT_TRUE(b2->has_task()) << "bob's round-2 task was lost";
  ASSERT_OK_AND_ASSIGN(auto blob, h.coordinator->ModelForTask(ClientId{"bob"}, b2_sent->ref));
  EXPECT_EQ(blob->version, 1u);
  ASSERT_OK(h.Submit(*a2_sent, "alice", {0, 0, 0, 0}, 1));
  ASSERT_OK(h.Submit(*b2_sent, "bob", {4, 4, 4, 4}, 1));

  EXPECT_TRUE(h.coordinator->finished());
  EXPECT_EQ(h.coordinator->phase(), RoundPhase::kFinished);
  EXPECT_TRUE(h.coordinator->WaitFinished(absl::ZeroDuration()));
  EXPECT_EQ(h.coordinator->global_model()->version, 2u);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{2, 2, 2, 2}));
  const auto history = h.coordinator->history();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].outcome, RoundOutcome::kCompleted);
  EXPECT_EQ(history[1].outcome, RoundOutcome::kCompleted);
  EXPECT_EQ(history[1].reported, 2);
  EXPECT_EQ(h.observer.summaries.size(), 2u);

  // Polls now learn that the run is over, at once even when willing to wait.
  auto after = h.Pull("alice", absl::Seconds(10));
  ASSERT_EQ(after->calls, 1);
  ASSERT_OK(after->reply);
  EXPECT_TRUE(after->reply->run_finished);
  EXPECT_FALSE(after->reply->task.has_value());
  // A retry of an accepted last-round upload still gets its first acknowledgement...
  ASSERT_OK_AND_ASSIGN(core::UploadAck retry, h.Submit(*a2_sent, "alice", {0, 0, 0, 0}, 1));
  EXPECT_TRUE(retry.duplicate);
  // ...while a result for a task nobody answered is refused: no round is open.
  TrainTask stale = *a2_sent;
  stale.ref.task_id = "run-c/2/carol";
  EXPECT_CODE(h.Submit(stale, "alice", {0, 0, 0, 0}, 1), absl::StatusCode::kFailedPrecondition);
}

// Regression: the client whose upload closes round r is often sampled for round r + 1, which
// opens inside that same SubmitResult call. Its new task must reach its next poll. (An earlier
// SubmitResult emptied the client's mailbox after OnTrainResult, deleting the round-(r+1) task
// it had just received; round r + 1 then waited for that client until its deadline.)
TEST(CoordinatorTest, ClientWhoseResultClosedTheRoundGetsItsNextTask) {
  Harness h;
  h.Register({"alice", "bob"});
  auto a1 = h.Pull("alice", absl::ZeroDuration());
  auto b1 = h.Pull("bob", absl::ZeroDuration());
  ASSERT_TRUE(a1->has_task());
  ASSERT_TRUE(b1->has_task());
  ASSERT_OK(h.Submit(*a1->reply->task, "alice", {1, 1, 1, 1}, 1));
  ASSERT_OK(h.Submit(*b1->reply->task, "bob", {1, 1, 1, 1}, 1));  // closes round 1, opens round 2
  ASSERT_EQ(h.coordinator->current_round(), 2u);

  auto b2 = h.Pull("bob", absl::ZeroDuration());
  ASSERT_OK(b2->reply);
  ASSERT_TRUE(b2->reply->task.has_value()) << "bob's round-2 task was dropped from the mailbox";
  EXPECT_EQ(b2->reply->task->ref.round, 2u);
}

// Same regression, seen by clients that long-poll for their next task.
TEST(CoordinatorTest, ClientPollingAfterItsUploadIsWokenByTheNextRound) {
  Harness h;
  h.Register({"alice", "bob"});
  auto a1 = h.Pull("alice", absl::ZeroDuration());
  auto b1 = h.Pull("bob", absl::ZeroDuration());
  ASSERT_TRUE(a1->has_task() && b1->has_task());
  ASSERT_OK(h.Submit(*a1->reply->task, "alice", {1, 1, 1, 1}, 1));
  auto alice_waits = h.Pull("alice", absl::Seconds(20));
  EXPECT_FALSE(alice_waits->answered());
  ASSERT_OK(h.Submit(*b1->reply->task, "bob", {1, 1, 1, 1}, 1));
  // alice was not the one submitting: her poll is answered with her round-2 task.
  ASSERT_EQ(alice_waits->calls, 1);
  ASSERT_TRUE(alice_waits->has_task());
  EXPECT_EQ(alice_waits->reply->task->ref.round, 2u);
  // bob, who submitted last, polls and waits: he must get his round-2 task too.
  auto bob_waits = h.Pull("bob", absl::Seconds(20));
  EXPECT_TRUE(bob_waits->has_task());
}

TEST(CoordinatorTest, PendingPollLearnsThatTheRunFinished) {
  Options o;
  o.num_rounds = 1;
  Harness h(o);
  h.Register({"alice", "bob"});
  auto a = h.Pull("alice", absl::ZeroDuration());
  auto b = h.Pull("bob", absl::ZeroDuration());
  ASSERT_TRUE(a->has_task() && b->has_task());
  ASSERT_OK(h.Submit(*a->reply->task, "alice", {1, 1, 1, 1}, 1));
  auto waiting = h.Pull("alice", absl::Seconds(20));
  EXPECT_FALSE(waiting->answered());
  ASSERT_OK(h.Submit(*b->reply->task, "bob", {1, 1, 1, 1}, 1));
  ASSERT_EQ(waiting->calls, 1);
  ASSERT_OK(waiting->reply);
  EXPECT_TRUE(waiting->reply->run_finished);
}

TEST(CoordinatorTest, ReportFailureCountsTheClientAsDroppedAndVoidsItsTask) {
  Options o;
  o.min_available = 3;
  o.num_rounds = 1;
  Harness h(o);
  h.Register({"alice", "bob", "carol"});
  const auto a = h.extra.LastTaskFor(ClientId{"alice"});
  const auto b = h.extra.LastTaskFor(ClientId{"bob"});
  ASSERT_TRUE(a && b);
  h.coordinator->ReportFailure(ClientId{"carol"});
  EXPECT_FALSE(h.Pull("carol", absl::ZeroDuration())->has_task());
  h.coordinator->ReportFailure(ClientId{"mallory"});  // unknown: ignored
  ASSERT_OK(h.Submit(*a, "alice", {1, 1, 1, 1}, 1));
  EXPECT_EQ(h.coordinator->phase(), RoundPhase::kTraining);
  ASSERT_OK(h.Submit(*b, "bob", {3, 3, 3, 3}, 1));
  const auto history = h.coordinator->history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].outcome, RoundOutcome::kCompleted);
  EXPECT_EQ(history[0].dropped, 1);
  EXPECT_EQ(history[0].reported, 2);
  EXPECT_TRUE(h.coordinator->finished());
}

TEST(CoordinatorTest, SilentClientIsExpiredOnTickAndCountedAsDropped) {
  Options o;
  o.min_available = 3;
  o.num_rounds = 1;
  Harness h(o);
  h.Register({"alice", "bob", "carol"});
  ASSERT_EQ(h.coordinator->current_round(), 1u);
  const auto a = h.extra.LastTaskFor(ClientId{"alice"});
  const auto b = h.extra.LastTaskFor(ClientId{"bob"});
  ASSERT_TRUE(a && b);

  h.clock.Advance(absl::Seconds(20));
  ASSERT_OK(h.Submit(*a, "alice", {1, 1, 1, 1}, 1));  // a result is a sign of life
  ASSERT_OK(h.coordinator->Heartbeat(ClientId{"bob"}));
  h.clock.Advance(absl::Seconds(5));
  ASSERT_OK(h.Submit(*b, "bob", {3, 3, 3, 3}, 1));
  h.clock.Advance(absl::Seconds(5));  // carol silent for exactly the timeout: still live
  h.coordinator->Tick();
  EXPECT_EQ(h.coordinator->phase(), RoundPhase::kTraining);
  EXPECT_TRUE(h.coordinator->history().empty());
  h.clock.Advance(absl::Seconds(1));  // silent for 31 s
  h.coordinator->Tick();

  EXPECT_CODE(h.coordinator->Heartbeat(ClientId{"carol"}), absl::StatusCode::kNotFound);
  const auto history = h.coordinator->history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].outcome, RoundOutcome::kCompleted);
  EXPECT_EQ(history[0].dropped, 1);
  EXPECT_EQ(history[0].reported, 2);
  EXPECT_THAT(h.GlobalValues(), Pointwise(FloatNear(kTol), std::vector<float>{2, 2, 2, 2}));
  // The expired client must register again.
  auto poll = h.Pull("carol", absl::ZeroDuration());
  EXPECT_CODE(poll->reply, absl::StatusCode::kNotFound);
}

TEST(CoordinatorTest, ExpiredClientThatRegistersAgainGetsNoStaleTask) {
  Options o;
  o.min_available = 3;
  o.num_rounds = 1;
  Harness h(o);
  h.Register({"alice", "bob", "carol"});
  ASSERT_EQ(h.coordinator->current_round(), 1u);
  h.clock.Advance(absl::Seconds(25));
  ASSERT_OK(h.coordinator->Heartbeat(ClientId{"alice"}));
  ASSERT_OK(h.coordinator->Heartbeat(ClientId{"bob"}));
  h.clock.Advance(absl::Seconds(10));  // carol silent for 35 s: expired and counted as dropped
  h.coordinator->Tick();
  h.Register({"carol"});
  auto poll = h.Pull("carol", absl::ZeroDuration());
  ASSERT_OK(poll->reply);
  EXPECT_FALSE(poll->has_task());  // her round-1 task is void
}

TEST(CoordinatorTest, RefusedUploadLeavesTheClientsTaskInPlace) {
  Options o;
  o.num_rounds = 1;
  Harness h(o);
  h.Register({"alice", "bob"});
  auto poll = h.Pull("alice", absl::ZeroDuration());
  ASSERT_TRUE(poll->has_task());
  TrainTask wrong = *poll->reply->task;
  wrong.ref.round = 7;  // refused: FAILED_PRECONDITION
  EXPECT_CODE(h.Submit(wrong, "alice", {1, 1, 1, 1}, 1), absl::StatusCode::kFailedPrecondition);
  auto again = h.Pull("alice", absl::ZeroDuration());
  ASSERT_TRUE(again->has_task());
  EXPECT_EQ(again->reply->task->ref.task_id, poll->reply->task->ref.task_id);
}

TEST(CoordinatorTest, RoundWithoutResultsIsAbandonedAtItsDeadlineOnTick) {
  Options o;
  o.liveness = absl::Hours(1);
  Harness h(o);
  h.Register({"alice", "bob"});
  ASSERT_EQ(h.coordinator->current_round(), 1u);
  h.clock.Advance(absl::Minutes(10) - absl::Seconds(1));
  h.coordinator->Tick();
  EXPECT_TRUE(h.coordinator->history().empty());
  h.clock.Advance(absl::Seconds(1));
  h.coordinator->Tick();
  const auto history = h.coordinator->history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].outcome, RoundOutcome::kAbandoned);
  EXPECT_EQ(h.coordinator->global_model()->version, 0u);
  EXPECT_EQ(h.GlobalValues(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(h.coordinator->current_round(), 2u);  // the next round opened
}

TEST(CoordinatorTest, ReleaseWaitersAnswersPendingPollsWithUnavailableAndLaterOnesAtOnce) {
  Harness h;
  h.Register({"alice", "bob"});  // round 1 opens; alice answers it, so she has no task
  const auto task = h.extra.LastTaskFor(ClientId{"alice"});
  ASSERT_TRUE(task.has_value());
  ASSERT_OK(h.Submit(*task, "alice", {1, 1, 1, 1}, 1));
  auto pending = h.Pull("alice", absl::Seconds(20));
  EXPECT_FALSE(pending->answered());

  h.coordinator->ReleaseWaiters();
  ASSERT_EQ(pending->calls, 1);
  EXPECT_CODE(pending->reply, absl::StatusCode::kUnavailable);

  auto later = h.Pull("alice", absl::Seconds(20));
  EXPECT_EQ(later->calls, 1) << "a poll after ReleaseWaiters must not wait";
  h.clock.Advance(absl::Seconds(30));
  h.coordinator->Tick();
  EXPECT_EQ(pending->calls, 1);
  EXPECT_EQ(later->calls, 1);
}

TEST(CoordinatorTest, DestructorAnswersPendingPollsWithUnavailable) {
  auto h = std::make_unique<Harness>();
  h->Register({"alice"});
  auto pending = h->Pull("alice", absl::Seconds(20));
  EXPECT_FALSE(pending->answered());
  h.reset();
  ASSERT_EQ(pending->calls, 1);
  EXPECT_CODE(pending->reply, absl::StatusCode::kUnavailable);
}

TEST(CoordinatorTest, WaitFinishedReturnsTrueAfterTheLastRound) {
  Options o;
  o.num_rounds = 1;
  Harness h(o);
  EXPECT_FALSE(h.coordinator->WaitFinished(absl::ZeroDuration()));
  EXPECT_FALSE(h.coordinator->WaitFinished(absl::Milliseconds(1)));
  h.Register({"alice", "bob"});
  const auto a = h.extra.LastTaskFor(ClientId{"alice"});
  const auto b = h.extra.LastTaskFor(ClientId{"bob"});
  ASSERT_TRUE(a && b);

  bool waited = false;
  std::thread waiter([&] { waited = h.coordinator->WaitFinished(absl::Seconds(30)); });
  ASSERT_OK(h.Submit(*a, "alice", {1, 1, 1, 1}, 1));
  ASSERT_OK(h.Submit(*b, "bob", {1, 1, 1, 1}, 1));
  waiter.join();
  EXPECT_TRUE(waited);
  EXPECT_TRUE(h.coordinator->finished());
  EXPECT_TRUE(h.coordinator->WaitFinished(absl::ZeroDuration()));
}

}  // namespace
}  // namespace tessera::coordinator

namespace tessera::coordinator {
namespace {

// fedper: clients upload the shared layers only; the round averages those and the global
// model's private layers stay as they were. A full upload does not fit the round's layout.
TEST(FedPerRoundTest, AggregatesTheSharedLayersAndKeepsTheRest) {
  auto model = [](float body, float head) {
    core::ModelWeights w;
    w.tensors.push_back(core::NamedTensor::FromFloats("body.w", {2}, std::vector<float>{body, body}));
    w.tensors.push_back(core::NamedTensor::FromFloats("head.w", {2}, std::vector<float>{head, head}));
    return w;
  };
  CoordinatorOptions options;
  options.round.run_id = "fedper";
  options.round.num_rounds = 1;
  FedAvgOptions fedavg;
  fedavg.fraction = 1.0;
  fedavg.min_available_clients = 2;
  fedavg.train.personalization.mode = core::PersonalizationMode::kFedPer;
  fedavg.train.personalization.private_layers = {"head."};
  core::FakeClock clock;
  testutil::RecordingSender sender;
  CoordinatorDeps deps;
  deps.clock = &clock;
  deps.extra_sender = &sender;
  ASSERT_OK_AND_ASSIGN(auto c, Coordinator::Create(options, FedAvgStrategy::Create(fedavg).value(), model(0, 5), deps));
  ASSERT_OK(c->Register(ClientId{"a"}, {}));
  ASSERT_OK(c->Register(ClientId{"b"}, {}));
  ASSERT_EQ(sender.sent.size(), 2u);
  EXPECT_EQ(sender.sent[0].second.config.personalization.private_layers, std::vector<std::string>{"head."});
  auto shared = [&](float v) { return core::SharedTensors(model(v, 99), fedavg.train.personalization); };
  EXPECT_CODE(c->SubmitResult(ClientId{"a"}, ResultFor(*sender.LastTaskFor(ClientId{"a"}), model(2, 99), 1)),
              absl::StatusCode::kInvalidArgument);  // the head must not come
  ASSERT_OK(c->SubmitResult(ClientId{"b"}, ResultFor(*sender.LastTaskFor(ClientId{"b"}), shared(4), 1)));
  ASSERT_TRUE(c->finished());
  const core::ModelWeights& global = *c->global_model()->weights;
  EXPECT_EQ(global.tensors[0].f32()[0], 4.0f);  // b's body (a was rejected)
  EXPECT_EQ(global.tensors[1].f32()[0], 5.0f);  // the head as it was
}

}  // namespace
}  // namespace tessera::coordinator
