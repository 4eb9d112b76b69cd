// Crash safety of the coordinator: a Coordinator destroyed without warning (its memory is gone,
// as after SIGKILL) and created again on the same state database goes on where it stopped.
#include "coordinator/state_store.h"

#include <sqlite3.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/coordinator.h"
#include "coordinator/strategy.h"
#include "core/clock.h"
#include "core/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"
#include "tests/testing/temp_dir.h"

namespace tessera::coordinator {
namespace {

using core::ClientId;
using core::TrainTask;
using testutil::FloatModel;
using testutil::ResultFor;
using testutil::Values;

const std::vector<std::string> kClients = {"ann", "bob", "cat", "dan"};

// One "life" of a coordinator on a directory; a new Life on the same directory is a restart.
struct Life {
  Life(const std::string& dir, core::FakeClock* clock, int num_rounds = 2, std::string run_id = "run-s",
       std::map<std::string, TrainTask>* known_tasks = nullptr,
       const std::function<void(CoordinatorOptions&)>& configure = nullptr)
      : known(known_tasks) {
    CoordinatorOptions options;
    options.round.run_id = std::move(run_id);
    options.round.num_rounds = num_rounds;
    options.round.round_deadline = absl::Minutes(10);
    options.round.min_results = 1;
    options.round.seed = 3;
    options.model_dir = dir + "/models";
    options.state_db = dir + "/state.db";
    if (configure) configure(options);
    FedAvgOptions fedavg;
    fedavg.fraction = 1.0;
    fedavg.min_available_clients = static_cast<int>(kClients.size());
    CoordinatorDeps deps;
    deps.clock = clock;
    deps.extra_sender = &sender;
    created = Coordinator::Create(options, FedAvgStrategy::Create(fedavg).value(), FloatModel({0, 0, 0}), deps);
  }
  // The clients remember their tasks across the coordinator's restart.
  ~Life() {
    if (known == nullptr) return;
    for (const auto& [client, task] : sender.sent) (*known)[client.value] = task;
  }
  Coordinator& c() { return **created; }
  const TrainTask& TaskOf(const std::string& id) {
    for (auto it = sender.sent.rbegin(); it != sender.sent.rend(); ++it) {
      if (it->first == ClientId{id}) return it->second;
    }
    if (known != nullptr && known->contains(id)) return known->at(id);
    ADD_FAILURE() << "no task for " << id;
    static TrainTask none;
    return none;
  }
  absl::StatusOr<core::UploadAck> Submit(const std::string& id, std::vector<float> values, int64_t n) {
    return c().SubmitResult(ClientId{id}, ResultFor(TaskOf(id), FloatModel(std::move(values)), n));
  }

  std::map<std::string, TrainTask>* known;
  testutil::RecordingSender sender;
  absl::StatusOr<std::unique_ptr<Coordinator>> created;
};

std::vector<float> Global(Coordinator& c) { return Values(*c.global_model()->weights); }

size_t SpooledFiles(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/state.db.spool")) n += e.is_regular_file();
  return n;
}

class CrashRestartTest : public ::testing::Test {
 protected:
  std::unique_ptr<Life> Start(int num_rounds = 2, const std::function<void(CoordinatorOptions&)>& configure = nullptr) {
    auto life = std::make_unique<Life>(dir_.path(), &clock_, num_rounds, "run-s", &tasks_, configure);
    EXPECT_OK(life->created.status());
    return life;
  }
  // A one-round run whose first life ends after ann's result of {1, 1, 1} was accepted.
  void FirstLifeWithAnnsResult() {
    auto first = Start(1);
    RegisterAll(*first);
    ASSERT_OK(first->Submit("ann", {1, 1, 1}, 1));
  }
  void RegisterAll(Life& life) {
    for (const auto& id : kClients) ASSERT_OK(life.c().Register(ClientId{id}, {{"os", "linux"}}));
  }
  testutil::ScopedTempDir dir_;
  core::FakeClock clock_;
  std::map<std::string, TrainTask> tasks_;
};

// The reference: the same uploads to a coordinator that never stopped.
std::vector<float> UninterruptedModel(const std::string& dir, core::FakeClock* clock) {
  Life life(dir, clock, 1);
  for (const auto& id : kClients) EXPECT_OK(life.c().Register(ClientId{id}, {}));
  EXPECT_OK(life.Submit("ann", {1, 2, 3}, 10));
  EXPECT_OK(life.Submit("bob", {3, 2, 1}, 30));
  EXPECT_OK(life.Submit("cat", {5, 5, 5}, 20));
  EXPECT_OK(life.Submit("dan", {-1, 0, 7}, 40));
  return Global(life.c());
}

TEST_F(CrashRestartTest, RoundResumesWithEveryAcceptedResultCountedOnce) {
  {
    auto first = Start(1);
    RegisterAll(*first);
    ASSERT_EQ(first->c().current_round(), 1u);
    ASSERT_OK(first->Submit("ann", {1, 2, 3}, 10));
    ASSERT_OK(first->Submit("bob", {3, 2, 1}, 30));
    EXPECT_EQ(SpooledFiles(dir_.path()), 2u);
  }  // the first life ends without closing anything: its memory is gone
  auto second = Start(1);
  EXPECT_TRUE(second->c().resumed());
  EXPECT_EQ(second->c().current_round(), 1u);
  EXPECT_EQ(second->c().phase(), RoundPhase::kTraining);
  // The clients are still known (no re-registration needed) and get their tasks again.
  EXPECT_OK(second->c().Heartbeat(ClientId{"cat"}));
  EXPECT_EQ(second->sender.sent.size(), 2u);  // cat and dan: ann and bob have answered

  // Ann did not hear her acknowledgement and sends again: it is the first one's, once.
  ASSERT_OK_AND_ASSIGN(core::UploadAck again, second->Submit("ann", {1, 2, 3}, 10));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(SpooledFiles(dir_.path()), 2u);  // the duplicate's spool file went at once
  ASSERT_OK(second->Submit("cat", {5, 5, 5}, 20));
  ASSERT_OK(second->Submit("dan", {-1, 0, 7}, 40));
  ASSERT_TRUE(second->c().finished());
  const auto history = second->c().history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].reported, 4);
  EXPECT_EQ(history[0].sampled, 4);
  EXPECT_EQ(SpooledFiles(dir_.path()), 0u);  // closing the round removed its spool

  // Bit-identical to the run that never stopped: the results were folded in the same order.
  testutil::ScopedTempDir other;
  core::FakeClock clock;
  EXPECT_EQ(Global(second->c()), UninterruptedModel(other.path(), &clock));
  // (10 a + 30 b + 20 c + 40 d) / 100: each result once.
  EXPECT_THAT(Global(second->c()), ::testing::Pointwise(::testing::FloatNear(1e-6f), std::vector<float>{1.6f, 1.8f, 4.4f}));
}

TEST_F(CrashRestartTest, RestartAfterARoundClosedStartsTheNextFromThePublishedModel) {
  std::vector<float> v1;
  {
    auto first = Start(2);
    RegisterAll(*first);
    for (const auto& id : kClients) ASSERT_OK(first->Submit(id, {2, 4, 6}, 1));
    ASSERT_EQ(first->c().history().size(), 1u);
    ASSERT_EQ(first->c().current_round(), 2u);  // round 2 opened at once
    v1 = Global(first->c());
  }
  auto second = Start(2);
  EXPECT_EQ(second->c().global_model()->version, 1u);
  EXPECT_EQ(Global(second->c()), v1);
  EXPECT_EQ(second->c().current_round(), 2u);
  ASSERT_EQ(second->c().history().size(), 1u);
  EXPECT_EQ(second->c().history()[0].reported, 4);
  // A retry of round 1 still gets its acknowledgement after the restart.
  ASSERT_OK_AND_ASSIGN(core::UploadAck ack, second->c().SubmitResult(
                                                ClientId{"ann"}, ResultFor(TrainTask{core::RoundRef{"run-s", 1, "run-s/1/ann"}},
                                                                           FloatModel({2, 4, 6}), 1)));
  EXPECT_TRUE(ack.duplicate);
  EXPECT_EQ(ack.accepted_round, 1u);
  for (const auto& id : kClients) ASSERT_OK(second->Submit(id, {4, 4, 4}, 1));
  EXPECT_TRUE(second->c().finished());
  EXPECT_EQ(second->c().global_model()->version, 2u);

  // A finished run restarts finished, with its whole history.
  second.reset();
  auto third = Start(2);
  EXPECT_TRUE(third->c().finished());
  EXPECT_EQ(third->c().history().size(), 2u);
  EXPECT_EQ(Global(third->c()), (std::vector<float>{4, 4, 4}));
}

TEST_F(CrashRestartTest, RejectionsAndDropoutsAreRememberedAcrossTheRestart) {
  {
    auto first = Start(1);
    RegisterAll(*first);
    ASSERT_OK(first->Submit("ann", {1, 1, 1}, 1));
    EXPECT_CODE(first->Submit("bob", {1, 1}, 1), absl::StatusCode::kInvalidArgument);  // wrong shape
    first->c().ReportFailure(ClientId{"cat"});
  }
  auto second = Start(1);
  EXPECT_EQ(second->sender.sent.size(), 1u);  // only dan still owes an answer
  EXPECT_CODE(second->Submit("bob", {1, 1, 1}, 1), absl::StatusCode::kFailedPrecondition);  // answered already
  ASSERT_OK(second->Submit("dan", {3, 3, 3}, 1));
  ASSERT_TRUE(second->c().finished());
  const RoundSummary s = second->c().history()[0];
  EXPECT_EQ(s.reported, 2);
  EXPECT_EQ(s.rejected, 1);
  EXPECT_EQ(s.dropped, 1);
  EXPECT_EQ(Global(second->c()), (std::vector<float>{2, 2, 2}));
}

TEST_F(CrashRestartTest, TheOpenRoundKeepsItsDeadlineAcrossTheRestart) {
  {
    auto first = Start(1);
    RegisterAll(*first);
    ASSERT_OK(first->Submit("ann", {8, 8, 8}, 1));
  }
  clock_.Advance(absl::Minutes(11));  // the coordinator was down past the deadline
  auto second = Start(1);
  second->c().Tick();
  ASSERT_TRUE(second->c().finished());
  EXPECT_EQ(second->c().history()[0].outcome, RoundOutcome::kCompleted);
  EXPECT_EQ(second->c().history()[0].reported, 1);
  EXPECT_EQ(Global(second->c()), (std::vector<float>{8, 8, 8}));
}

TEST_F(CrashRestartTest, RevocationsSurviveTheRestart) {
  {
    auto first = Start(1);
    RegisterAll(*first);
    first->c().Revoke(ClientId{"bob"});
  }
  auto second = Start(1);
  EXPECT_CODE(second->c().Register(ClientId{"bob"}, {}), absl::StatusCode::kPermissionDenied);
  EXPECT_CODE(second->Submit("bob", {1, 1, 1}, 1), absl::StatusCode::kPermissionDenied);
}

TEST_F(CrashRestartTest, AHalfWrittenNextVersionDoesNotHarmTheLastGoodOne) {
  FirstLifeWithAnnsResult();
  // The crash came while version 1 was being written: what is there is garbage.
  ASSERT_OK(core::WriteFileAtomic(dir_.path() + "/models/model_v000001.safetensors", "torn"));
  auto second = Start(1);
  EXPECT_EQ(second->c().global_model()->version, 0u);
  EXPECT_EQ(Global(second->c()), (std::vector<float>{0, 0, 0}));
  for (const std::string id : {"bob", "cat", "dan"}) ASSERT_OK(second->Submit(id, {1, 1, 1}, 1));
  ASSERT_TRUE(second->c().finished());
  // Version 1 was written again, whole.
  ASSERT_OK_AND_ASSIGN(auto file, core::ReadFile(dir_.path() + "/models/model_v000001.safetensors"));
  EXPECT_GT(file.size(), 4u);
  EXPECT_EQ(Global(second->c()), (std::vector<float>{1, 1, 1}));
}

TEST_F(CrashRestartTest, ADamagedCurrentModelIsRefusedAtStart) {
  {
    auto first = Start(1);
    RegisterAll(*first);
  }
  ASSERT_OK(core::WriteFileAtomic(dir_.path() + "/models/model_v000000.safetensors", "not a model"));
  Life second(dir_.path(), &clock_, 1);
  EXPECT_CODE(second.created, absl::StatusCode::kDataLoss);
}

TEST_F(CrashRestartTest, ADatabaseOfAnotherRunIsRefused) {
  { auto first = Start(1); }
  Life other(dir_.path(), &clock_, 1, "another-run");
  EXPECT_CODE(other.created, absl::StatusCode::kFailedPrecondition);
}

TEST_F(CrashRestartTest, AFileThatIsNotADatabaseIsRefused) {
  ASSERT_OK(core::WriteFileAtomic(dir_.path() + "/state.db", std::string(8192, 'x')));
  Life life(dir_.path(), &clock_, 1);
  EXPECT_FALSE(life.created.ok());
  EXPECT_EQ(life.created.status().code(), absl::StatusCode::kDataLoss) << life.created.status();
}

TEST_F(CrashRestartTest, ASpoolFileWithoutItsRowIsRemoved) {
  FirstLifeWithAnnsResult();
  // A crash between writing a spool file and committing its row.
  ASSERT_OK(core::WriteFileAtomic(dir_.path() + "/state.db.spool/result_99.safetensors", "half"));
  auto second = Start(1);
  EXPECT_EQ(SpooledFiles(dir_.path()), 1u);  // ann's
}

TEST_F(CrashRestartTest, ASecureRoundIsAbandonedByTheRestartAndTheNextOneOpens) {
  auto secure = [](CoordinatorOptions& o) { o.round.secure_aggregation = security::secagg::SecAggConfig{}; };
  {
    auto first = Start(2, secure);
    RegisterAll(*first);
    ASSERT_EQ(first->c().current_round(), 1u);
  }
  auto second = Start(2, secure);
  const auto history = second->c().history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].outcome, RoundOutcome::kAbandoned);
  EXPECT_NE(history[0].reason.find("restarted during secure aggregation"), std::string::npos) << history[0].reason;
  EXPECT_EQ(second->c().global_model()->version, 0u);
  EXPECT_EQ(second->c().current_round(), 2u);  // the clients are known: round 2 opened at once
  EXPECT_EQ(second->c().phase(), RoundPhase::kTraining);
}

TEST_F(CrashRestartTest, SpentPrivacyBudgetMovesWithTheRoundsAcrossTheRestart) {
  auto dp = [](CoordinatorOptions& o) {
    o.round.dp.clip_norm = 10;
    o.round.dp.noise_multiplier = 1.0;
    o.round.dp.noise_seed = 7;
  };
  {
    auto first = Start(2, dp);
    RegisterAll(*first);
    for (const auto& id : kClients) ASSERT_OK(first->Submit(id, {1, 1, 1}, 1));
    ASSERT_EQ(first->c().history().size(), 1u);
  }
  auto second = Start(2, dp);
  for (const auto& id : kClients) ASSERT_OK(second->Submit(id, {1, 1, 1}, 1));
  ASSERT_TRUE(second->c().finished());
  const auto resumed = second->c().history();

  testutil::ScopedTempDir other;
  core::FakeClock clock;
  Life straight(other.path(), &clock, 2, "run-s", nullptr, dp);
  for (int round = 0; round < 2; ++round) {
    for (const auto& id : kClients) {
      if (round == 0) ASSERT_OK(straight.c().Register(ClientId{id}, {}));
    }
    for (const auto& id : kClients) ASSERT_OK(straight.Submit(id, {1, 1, 1}, 1));
  }
  const auto uninterrupted = straight.c().history();
  ASSERT_EQ(resumed.size(), 2u);
  ASSERT_EQ(uninterrupted.size(), 2u);
  EXPECT_GT(resumed[1].epsilon, resumed[0].epsilon);
  EXPECT_DOUBLE_EQ(resumed[1].epsilon, uninterrupted[1].epsilon);
  EXPECT_EQ(Global(second->c()), Global(straight.c()));  // seeded noise: the same model
}

TEST(SummaryJsonTest, RoundTripsEveryField) {
  RoundSummary s;
  s.round = 7;
  s.outcome = RoundOutcome::kAbandoned;
  s.reason = "quorum";
  s.sampled = 10;
  s.reported = 3;
  s.rejected = 2;
  s.dropped = 5;
  s.model_version = 4;
  s.server_metrics = {{"accuracy", 0.5}};
  s.client_metrics = {{"eval_loss", 1.25}};
  s.duration = absl::Milliseconds(1500);
  s.aggregate_time = absl::Milliseconds(20);
  s.eval_time = absl::Milliseconds(70);
  s.epsilon = 2.5;
  s.dp_clip_norm = 0.75;
  ASSERT_OK_AND_ASSIGN(RoundSummary back, SummaryFromJson(SummaryToJson(s)));
  EXPECT_EQ(back.round, 7u);
  EXPECT_EQ(back.outcome, RoundOutcome::kAbandoned);
  EXPECT_EQ(back.reason, "quorum");
  EXPECT_EQ(back.sampled, 10);
  EXPECT_EQ(back.reported, 3);
  EXPECT_EQ(back.rejected, 2);
  EXPECT_EQ(back.dropped, 5);
  EXPECT_EQ(back.model_version, 4u);
  EXPECT_EQ(back.server_metrics, s.server_metrics);
  EXPECT_EQ(back.client_metrics, s.client_metrics);
  EXPECT_EQ(back.duration, s.duration);
  EXPECT_DOUBLE_EQ(back.epsilon, 2.5);
  EXPECT_DOUBLE_EQ(back.dp_clip_norm, 0.75);
  EXPECT_CODE(SummaryFromJson("{\"round\": 1}"), absl::StatusCode::kDataLoss);
  EXPECT_CODE(SummaryFromJson("not json"), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace tessera::coordinator
