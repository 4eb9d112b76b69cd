#include "client/client_runtime.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/file_io.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"
#include "tests/testing/temp_dir.h"

namespace tessera::client {
namespace {

using core::ClientId;
using core::PullTaskReply;
using core::TrainTask;
using testutil::FloatModel;
using testutil::Values;
using ::testing::ElementsAre;
using ::testing::Key;
using ::testing::Not;
using ::testing::Contains;

TrainTask MakeTask(core::RoundNumber round, const std::string& client, uint64_t seed = 42) {
  TrainTask t;
  t.ref = {"run-rt", round, "run-rt/" + std::to_string(round) + "/" + client};
  t.model_version = round - 1;
  t.config.local_epochs = 2;
  t.config.batch_size = 16;
  t.config.learning_rate = 0.125;
  t.config.seed = seed;
  return t;
}

PullTaskReply WithTask(TrainTask task) {
  PullTaskReply r;
  r.task = std::move(task);
  return r;
}
PullTaskReply Finished() {
  PullTaskReply r;
  r.run_finished = true;
  return r;
}
PullTaskReply NoTask(absl::Duration retry_after = absl::Milliseconds(1)) {
  PullTaskReply r;
  r.retry_after = retry_after;
  return r;
}

// A scripted coordinator. PullTask answers from `pulls` in order, then with `when_empty`;
// UploadResult answers from `acks` in order, then with an accepted ack for the result's round.
// Thread-safe (the runtime's heartbeat thread calls Heartbeat concurrently).
class FakeChannel final : public CoordinatorChannel {
 public:
  absl::StatusOr<core::RegisterReply> Register(const ClientId& client,
                                               const std::map<std::string, std::string>& properties) override {
    std::lock_guard lock(mu);
    ++register_calls;
    registered_as.push_back(client);
    last_properties = properties;
    if (!register_results.empty()) {
      auto r = register_results.front();
      register_results.pop_front();
      return r;
    }
    return core::RegisterReply{"run-rt", heartbeat_interval};
  }
  absl::Status Heartbeat(const ClientId& client) override {
    std::lock_guard lock(mu);
    ++heartbeats;
    return heartbeat_status;
  }
  absl::StatusOr<PullTaskReply> PullTask(const ClientId& client, absl::Duration max_wait) override {
    std::function<void()> hook;
    absl::StatusOr<PullTaskReply> reply;
    {
      std::lock_guard lock(mu);
      ++pull_calls;
      last_poll_wait = max_wait;
      hook = on_pull;
      if (!pulls.empty()) {
        reply = pulls.front();
        pulls.pop_front();
      } else {
        reply = when_empty;
      }
    }
    if (hook) hook();
    return reply;
  }
  absl::StatusOr<core::ModelWeights> DownloadModel(const ClientId& client, const TrainTask& task) override {
    std::lock_guard lock(mu);
    events.push_back("download");
    downloads.push_back(task);
    if (!download_status.ok()) return download_status;
    return model;
  }
  absl::StatusOr<core::UploadAck> UploadResult(const ClientId& client, const core::TrainResult& result) override {
    std::lock_guard lock(mu);
    events.push_back("upload");
    uploads.push_back(result);
    uploaders.push_back(client);
    if (!acks.empty()) {
      auto a = acks.front();
      acks.pop_front();
      return a;
    }
    return core::UploadAck{false, result.ref.round};
  }
  // These tests cover plain (non-secure) tasks only.
  absl::StatusOr<security::secagg::StageReply> SecAggStep(const ClientId& client, const TrainTask& task,
                                                          const security::secagg::StageRequest& request,
                                                          absl::Duration max_wait) override {
    std::lock_guard lock(mu);
    events.push_back("secagg");
    return absl::UnimplementedError("FakeChannel has no secure aggregation");
  }

  std::mutex mu;
  // Script.
  absl::Duration heartbeat_interval = absl::Hours(1);
  std::deque<absl::StatusOr<core::RegisterReply>> register_results;
  absl::Status heartbeat_status;
  std::deque<absl::StatusOr<PullTaskReply>> pulls;
  absl::StatusOr<PullTaskReply> when_empty = absl::InternalError("the test's script ran out of pull replies");
  std::function<void()> on_pull;
  core::ModelWeights model = FloatModel({1, 2, 3, 4});
  absl::Status download_status;
  std::deque<absl::StatusOr<core::UploadAck>> acks;
  // Record.
  int register_calls = 0;
  std::vector<ClientId> registered_as;
  std::map<std::string, std::string> last_properties;
  int heartbeats = 0;
  int pull_calls = 0;
  absl::Duration last_poll_wait;
  std::vector<TrainTask> downloads;
  std::vector<core::TrainResult> uploads;
  std::vector<ClientId> uploaders;
  std::vector<std::string> events;  // "download", "train", "evaluate", "on_upload", "upload" in call order
};

// Adds `delta` to every weight; reports `num_examples`. Records what it was given.
class FakeTrainer final : public Trainer {
 public:
  explicit FakeTrainer(std::vector<std::string>* events) : events_(events) {}

  absl::StatusOr<TrainOutput> Train(const core::ModelWeights& global, const core::TrainConfig& config) override {
    events_->push_back("train");
    trained_from.push_back(global);
    configs.push_back(config);
    if (train_delay > absl::ZeroDuration()) std::this_thread::sleep_for(absl::ToChronoNanoseconds(train_delay));
    if (!train_status.ok()) return train_status;
    TrainOutput out;
    out.weights = global;
    for (auto& t : out.weights.tensors) {
      for (float& v : t.mutable_f32()) v += delta;
    }
    out.num_examples = num_examples;
    out.metrics = {{"train_loss", 0.5}};
    return out;
  }
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& weights) override {
    events_->push_back("evaluate");
    evaluated.push_back(weights);
    if (!eval_status.ok()) return eval_status;
    return core::Metrics{{"loss", 0.25}, {"accuracy", 0.875}};
  }

  float delta = 1.0f;
  int64_t num_examples = 37;
  absl::Duration train_delay = absl::ZeroDuration();
  absl::Status train_status;
  absl::Status eval_status;
  std::vector<core::ModelWeights> trained_from;
  std::vector<core::TrainConfig> configs;
  std::vector<core::ModelWeights> evaluated;

 private:
  std::vector<std::string>* events_;
};

ClientOptions Options(const std::string& id) {
  ClientOptions o;
  o.id = ClientId{id};
  o.properties = {{"os", "linux"}};
  o.poll_wait = absl::Milliseconds(250);
  return o;
}

// The seed a runtime of client `id` trains with for `task`.
uint64_t SeedUsed(const std::string& id, const TrainTask& task) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  ClientRuntime runtime(Options(id), &channel, &trainer);
  EXPECT_OK(runtime.RunTask(task));
  EXPECT_EQ(trainer.configs.size(), 1u);
  return trainer.configs.empty() ? 0 : trainer.configs[0].seed;
}

// ---------------------------------------------------------------------------------------------
// RunTask

TEST(ClientRuntimeTest, RunTaskDownloadsTrainsEvaluatesAndUploads) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  std::vector<core::TrainResult> audited;
  ClientOptions options = Options("alice");
  options.on_upload = [&](const core::TrainResult& r) {
    channel.events.push_back("on_upload");
    audited.push_back(r);
  };
  ClientRuntime runtime(options, &channel, &trainer);
  const TrainTask task = MakeTask(3, "alice");
  channel.acks.push_back(core::UploadAck{false, 3});

  ASSERT_OK_AND_ASSIGN(core::UploadAck ack, runtime.RunTask(task));
  EXPECT_FALSE(ack.duplicate);
  EXPECT_EQ(ack.accepted_round, 3u);
  EXPECT_EQ(runtime.tasks_done(), 1);
  EXPECT_THAT(channel.events, ElementsAre("download", "train", "evaluate", "on_upload", "upload"));

  // Downloaded the task's model and trained from exactly it, with the task's settings.
  ASSERT_EQ(channel.downloads.size(), 1u);
  EXPECT_EQ(channel.downloads[0].ref, task.ref);
  ASSERT_EQ(trainer.trained_from.size(), 1u);
  EXPECT_EQ(Values(trainer.trained_from[0]), Values(channel.model));
  ASSERT_EQ(trainer.configs.size(), 1u);
  EXPECT_EQ(trainer.configs[0].local_epochs, 2);
  EXPECT_EQ(trainer.configs[0].batch_size, 16);
  EXPECT_EQ(trainer.configs[0].learning_rate, 0.125);

  // Evaluated the trained weights, not the global ones.
  ASSERT_EQ(trainer.evaluated.size(), 1u);
  EXPECT_EQ(Values(trainer.evaluated[0]), (std::vector<float>{2, 3, 4, 5}));

  // Uploaded the trained weights for the task, with its num_examples and prefixed eval metrics.
  ASSERT_EQ(channel.uploads.size(), 1u);
  const core::TrainResult& up = channel.uploads[0];
  EXPECT_EQ(channel.uploaders[0], ClientId{"alice"});
  EXPECT_EQ(up.ref, task.ref);
  EXPECT_EQ(up.num_examples, 37);
  EXPECT_EQ(Values(up.weights), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ(up.metrics, (core::Metrics{{"train_loss", 0.5}, {"eval_loss", 0.25}, {"eval_accuracy", 0.875}}));

  // on_upload saw the very result that was uploaded.
  ASSERT_EQ(audited.size(), 1u);
  EXPECT_EQ(audited[0].ref, up.ref);
  EXPECT_EQ(audited[0].num_examples, up.num_examples);
  EXPECT_EQ(audited[0].metrics, up.metrics);
  EXPECT_EQ(Values(audited[0].weights), Values(up.weights));
}

// The serving hook gets, after the upload, the model the client serves: the global model it
// trained from (no personalization) or its personal model (finetune: the global one + 1 here).
TEST(ClientRuntimeTest, OnModelGetsTheGlobalOrPersonalModelAfterEachUploadedTask) {
  for (bool finetune : {false, true}) {
    FakeChannel channel;
    FakeTrainer trainer(&channel.events);
    struct Served {
      std::vector<float> values;
      core::ModelVersion version;
      core::RoundNumber round;
      core::Metrics metrics;
    };
    std::vector<Served> served;
    ClientOptions options = Options("alice");
    options.on_model = [&](const core::ModelWeights& m, core::ModelVersion v, core::RoundNumber r,
                           const core::Metrics& metrics) {
      channel.events.push_back("on_model");
      served.push_back({Values(m), v, r, metrics});
    };
    ClientRuntime runtime(options, &channel, &trainer);
    TrainTask task = MakeTask(4, "alice");
    if (finetune) task.config.personalization.mode = core::PersonalizationMode::kFinetune;
    ASSERT_OK(runtime.RunTask(task));
    EXPECT_EQ(channel.events.back(), "on_model") << finetune;
    ASSERT_EQ(served.size(), 1u);
    const std::vector<float> want = finetune ? std::vector<float>{2, 3, 4, 5} : Values(channel.model);
    EXPECT_EQ(served[0].values, want) << finetune;
    EXPECT_EQ(served[0].version, 3u);
    EXPECT_EQ(served[0].round, 4u);
    EXPECT_EQ(served[0].metrics, channel.uploads[0].metrics);

    channel.acks.push_back(absl::UnavailableError("down"));  // a task that fails serves nothing new
    EXPECT_FALSE(runtime.RunTask(MakeTask(5, "alice")).ok());
    EXPECT_EQ(served.size(), 1u);
  }
}

TEST(ClientRuntimeTest, RunTaskReturnsTheCoordinatorsAck) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  ClientRuntime runtime(Options("alice"), &channel, &trainer);
  channel.acks.push_back(core::UploadAck{true, 2});
  ASSERT_OK_AND_ASSIGN(core::UploadAck ack, runtime.RunTask(MakeTask(2, "alice")));
  EXPECT_TRUE(ack.duplicate);
  EXPECT_EQ(ack.accepted_round, 2u);
}

TEST(ClientRuntimeTest, TrainingSeedIsSpecificToClientAndRound) {
  const uint64_t alice_r1 = SeedUsed("alice", MakeTask(1, "alice", 42));
  const uint64_t alice_r1_again = SeedUsed("alice", MakeTask(1, "alice", 42));
  const uint64_t alice_r2 = SeedUsed("alice", MakeTask(2, "alice", 42));
  const uint64_t bob_r1 = SeedUsed("bob", MakeTask(1, "bob", 42));
  const uint64_t alice_r1_other_run_seed = SeedUsed("alice", MakeTask(1, "alice", 43));

  EXPECT_EQ(alice_r1, alice_r1_again) << "same inputs must give the same seed (reproducible runs)";
  EXPECT_NE(alice_r1, alice_r2) << "rounds must shuffle differently";
  EXPECT_NE(alice_r1, bob_r1) << "clients must shuffle differently";
  EXPECT_NE(alice_r1, alice_r1_other_run_seed) << "the run's seed must matter";
  EXPECT_NE(alice_r1, 42u) << "the task's seed is not used as is";
}

TEST(ClientRuntimeTest, TrainerFailurePropagatesAndNothingIsUploaded) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  trainer.train_status = absl::InvalidArgumentError("model does not fit");
  int audited = 0;
  ClientOptions options = Options("alice");
  options.on_upload = [&](const core::TrainResult&) { ++audited; };
  ClientRuntime runtime(options, &channel, &trainer);

  auto ack = runtime.RunTask(MakeTask(1, "alice"));
  EXPECT_CODE(ack, absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ack.status().message(), "model does not fit");
  EXPECT_TRUE(channel.uploads.empty());
  EXPECT_EQ(audited, 0);
  EXPECT_EQ(runtime.tasks_done(), 0);
}

TEST(ClientRuntimeTest, DownloadFailurePropagatesWithoutTraining) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.download_status = absl::DataLossError("transfer corrupted");
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  EXPECT_CODE(runtime.RunTask(MakeTask(1, "alice")), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(trainer.configs.empty());
  EXPECT_TRUE(channel.uploads.empty());
}

TEST(ClientRuntimeTest, UploadFailurePropagatesAndTheTaskIsNotDone) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.acks.push_back(absl::UnavailableError("coordinator gone"));
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  EXPECT_CODE(runtime.RunTask(MakeTask(1, "alice")), absl::StatusCode::kUnavailable);
  EXPECT_EQ(runtime.tasks_done(), 0);
}

TEST(ClientRuntimeTest, NoHeldOutDataStillUploadsWithoutEvalMetrics) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  trainer.eval_status = absl::FailedPreconditionError("no held-out split");
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  ASSERT_OK(runtime.RunTask(MakeTask(1, "alice")));
  ASSERT_EQ(channel.uploads.size(), 1u);
  EXPECT_EQ(channel.uploads[0].metrics, (core::Metrics{{"train_loss", 0.5}}));
}

TEST(ClientRuntimeTest, EvaluationErrorPropagatesAndNothingIsUploaded) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  trainer.eval_status = absl::InternalError("evaluation crashed");
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  EXPECT_CODE(runtime.RunTask(MakeTask(1, "alice")), absl::StatusCode::kInternal);
  EXPECT_TRUE(channel.uploads.empty());
}

TEST(ClientRuntimeTest, LocalEvaluationCanBeTurnedOff) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  ClientOptions options = Options("alice");
  options.evaluate_locally = false;
  ClientRuntime runtime(options, &channel, &trainer);

  ASSERT_OK(runtime.RunTask(MakeTask(1, "alice")));
  EXPECT_TRUE(trainer.evaluated.empty());
  ASSERT_EQ(channel.uploads.size(), 1u);
  EXPECT_THAT(channel.uploads[0].metrics, Not(Contains(Key("eval_loss"))));
}

// ---------------------------------------------------------------------------------------------
// Run

TEST(ClientRuntimeTest, RunRegistersServesTwoTasksAndEndsWhenTheRunFinishes) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.pulls = {NoTask(), WithTask(MakeTask(1, "alice")), NoTask(), WithTask(MakeTask(2, "alice")), Finished()};
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  ASSERT_OK(runtime.Run());
  EXPECT_EQ(channel.register_calls, 1);
  EXPECT_EQ(channel.registered_as, (std::vector<ClientId>{ClientId{"alice"}}));
  EXPECT_EQ(channel.last_properties, (std::map<std::string, std::string>{{"os", "linux"}}));
  EXPECT_EQ(channel.pull_calls, 5);
  EXPECT_EQ(channel.last_poll_wait, absl::Milliseconds(250));
  ASSERT_EQ(channel.uploads.size(), 2u);
  EXPECT_EQ(channel.uploads[0].ref, MakeTask(1, "alice").ref);
  EXPECT_EQ(channel.uploads[1].ref, MakeTask(2, "alice").ref);
  EXPECT_EQ(runtime.tasks_done(), 2);
}

TEST(ClientRuntimeTest, RunReRegistersWhenTheCoordinatorForgotTheClient) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.pulls = {absl::NotFoundError("unknown client 'alice'"), WithTask(MakeTask(1, "alice")), Finished()};
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  ASSERT_OK(runtime.Run());
  EXPECT_EQ(channel.register_calls, 2);
  EXPECT_EQ(channel.uploads.size(), 1u);
}

TEST(ClientRuntimeTest, RunFailsWhenReRegistrationFails) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.register_results = {core::RegisterReply{"run-rt", absl::Hours(1)},
                              absl::PermissionDeniedError("client revoked")};
  channel.pulls = {absl::NotFoundError("unknown client 'alice'")};
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  EXPECT_CODE(runtime.Run(), absl::StatusCode::kPermissionDenied);
}

TEST(ClientRuntimeTest, RunReturnsAPermanentChannelFailure) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.pulls = {WithTask(MakeTask(1, "alice"))};
  channel.when_empty = absl::UnavailableError("PullTask to 127.0.0.1:1 failed after 8 attempts");
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  const absl::Status s = runtime.Run();
  EXPECT_CODE(s, absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "PullTask to 127.0.0.1:1 failed after 8 attempts");
  EXPECT_EQ(runtime.tasks_done(), 1);
}

TEST(ClientRuntimeTest, RunReturnsARegistrationFailure) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.register_results = {absl::UnavailableError("Register to 127.0.0.1:1 failed after 3 attempts")};
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  EXPECT_CODE(runtime.Run(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(channel.pull_calls, 0);
}

TEST(ClientRuntimeTest, RunEndsOnAnUploadFailureThatIsNotAboutTheRound) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.pulls = {WithTask(MakeTask(1, "alice")), Finished()};
  channel.acks.push_back(absl::UnavailableError("UploadResult failed after 8 attempts"));
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  EXPECT_CODE(runtime.Run(), absl::StatusCode::kUnavailable);
}

TEST(ClientRuntimeTest, RunStopsWithCancelledWhenTheStopFlagIsSet) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  std::atomic<bool> stop{false};
  channel.when_empty = NoTask(absl::Milliseconds(5));
  channel.on_pull = [&] {
    if (channel.pull_calls >= 3) stop = true;  // read under no lock: only the Run thread polls
  };
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  EXPECT_CODE(runtime.Run(&stop), absl::StatusCode::kCancelled);
  EXPECT_EQ(channel.pull_calls, 3);
  EXPECT_TRUE(channel.uploads.empty());
}

TEST(ClientRuntimeTest, RunStopsPromptlyWhenStoppedFromAnotherThread) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  std::atomic<bool> stop{false};
  channel.when_empty = NoTask(absl::Milliseconds(20));
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  absl::Status result = absl::UnknownError("Run did not return");
  std::thread t([&] { result = runtime.Run(&stop); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto t0 = std::chrono::steady_clock::now();
  stop = true;
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_CODE(result, absl::StatusCode::kCancelled);
}

TEST(ClientRuntimeTest, TheSameTaskDeliveredTwiceIsTrainedOnce) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.pulls = {WithTask(MakeTask(1, "alice")), WithTask(MakeTask(1, "alice")), Finished()};
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  ASSERT_OK(runtime.Run());
  EXPECT_EQ(trainer.configs.size(), 1u);
  EXPECT_EQ(channel.uploads.size(), 1u);
  EXPECT_EQ(runtime.tasks_done(), 1);
}

TEST(ClientRuntimeTest, ARefusedUploadDoesNotEndTheRun) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.pulls = {WithTask(MakeTask(1, "alice")), WithTask(MakeTask(2, "alice")), Finished()};
  channel.acks = {absl::FailedPreconditionError("result for round 1 discarded: round 2 is open"),
                  core::UploadAck{false, 2}};
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  ASSERT_OK(runtime.Run());
  EXPECT_EQ(trainer.configs.size(), 2u);
  ASSERT_EQ(channel.uploads.size(), 2u);
  EXPECT_EQ(channel.uploads[1].ref, MakeTask(2, "alice").ref);
  EXPECT_EQ(runtime.tasks_done(), 1);  // only the accepted one
}

TEST(ClientRuntimeTest, ARefusedTaskIsNotRetrainedWhenDeliveredAgain) {
  // The round refused the result (e.g. a rejected update): the same task coming back in the
  // mailbox must not make the client train and upload it again.
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.pulls = {WithTask(MakeTask(1, "alice")), WithTask(MakeTask(1, "alice")), Finished()};
  channel.acks = {absl::InvalidArgumentError("num_examples must be positive")};
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  ASSERT_OK(runtime.Run());
  EXPECT_EQ(trainer.configs.size(), 1u);
  EXPECT_EQ(channel.uploads.size(), 1u);
}

TEST(ClientRuntimeTest, HeartbeatsContinueWhileTraining) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.heartbeat_interval = absl::Milliseconds(10);
  trainer.train_delay = absl::Milliseconds(300);
  channel.pulls = {WithTask(MakeTask(1, "alice")), Finished()};
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  ASSERT_OK(runtime.Run());
  std::lock_guard lock(channel.mu);
  EXPECT_GE(channel.heartbeats, 5) << "a client busy training must keep beating";
}

TEST(ClientRuntimeTest, AHeartbeatRefusedAsUnknownReRegisters) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  channel.heartbeat_interval = absl::Milliseconds(10);
  channel.heartbeat_status = absl::NotFoundError("unknown client");
  trainer.train_delay = absl::Milliseconds(200);
  channel.pulls = {WithTask(MakeTask(1, "alice")), Finished()};
  ClientRuntime runtime(Options("alice"), &channel, &trainer);

  ASSERT_OK(runtime.Run());
  std::lock_guard lock(channel.mu);
  EXPECT_GE(channel.register_calls, 2);
}

}  // namespace
}  // namespace tessera::client

namespace tessera::client {
namespace {

TEST(ClientRuntimePrivacyTest, RequiringSecureAggregationRefusesAPlaintextTaskAndSendsNothing) {
  FakeChannel channel;
  FakeTrainer trainer(&channel.events);
  ClientOptions options = Options("alice");
  options.require_secure_aggregation = true;
  ClientRuntime runtime(options, &channel, &trainer);
  EXPECT_CODE(runtime.RunTask(MakeTask(1, "alice")), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(channel.events.empty());  // no download, no training, no upload
  EXPECT_TRUE(channel.uploads.empty());
}

TEST(ClientRuntimePrivacyTest, DpClippingUploadsGlobalPlusClippedDeltaAndReportsTheBit) {
  FakeChannel channel;  // global {1, 2, 3, 4}; the fake trainer adds 1 to each: delta norm 2
  FakeTrainer trainer(&channel.events);
  ClientRuntime runtime(Options("alice"), &channel, &trainer);
  TrainTask task = MakeTask(1, "alice");
  task.dp.clip_norm = 1.0;
  task.dp.report_unclipped = true;
  channel.acks.push_back(core::UploadAck{false, 1});
  ASSERT_OK(runtime.RunTask(task).status());
  ASSERT_EQ(channel.uploads.size(), 1u);
  std::vector<float> up = Values(channel.uploads[0].weights);
  const std::vector<float> global = {1, 2, 3, 4};
  double norm = 0;
  for (size_t i = 0; i < up.size(); ++i) {
    EXPECT_NEAR(up[i] - global[i], 0.5, 1e-6);  // the delta of 1s scaled to norm 1
    norm += (up[i] - global[i]) * (up[i] - global[i]);
  }
  EXPECT_LE(std::sqrt(norm), 1.0 + 1e-6);
  EXPECT_EQ(channel.uploads[0].metrics.at(core::kUnclippedMetric), 0.0);  // it was clipped
}


// ---------------------------------------------------------------------------------------------
// Personalization (client/personalizer.h)

namespace personal {

// body.w [2] and head.w [2]: fedper keeps "head." on the client.
core::ModelWeights TwoLayerModel(float body, float head) {
  core::ModelWeights w;
  w.tensors.push_back(core::NamedTensor::FromFloats("body.w", {2}, std::vector<float>{body, body}));
  w.tensors.push_back(core::NamedTensor::FromFloats("head.w", {2}, std::vector<float>{head, head}));
  return w;
}

TrainTask PersonalTask(core::RoundNumber round, core::PersonalizationMode mode) {
  TrainTask t = MakeTask(round, "pat");
  t.config.personalization.mode = mode;
  t.config.personalization.steps = 5;
  t.config.personalization.ditto_lambda = 0.5;
  if (mode == core::PersonalizationMode::kFedPer) t.config.personalization.private_layers = {"head."};
  return t;
}

class ProximalFakeTrainer final : public Trainer {
 public:
  explicit ProximalFakeTrainer(Trainer* inner) : inner_(inner) {}
  absl::StatusOr<TrainOutput> Train(const core::ModelWeights& g, const core::TrainConfig& c) override {
    return inner_->Train(g, c);
  }
  absl::StatusOr<TrainOutput> TrainToward(const core::ModelWeights& start, const core::ModelWeights& anchor,
                                          const core::TrainConfig& c) override {
    anchors.push_back(anchor);
    return inner_->Train(start, c);
  }
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& w) override { return inner_->Evaluate(w); }
  std::vector<core::ModelWeights> anchors;

 private:
  Trainer* inner_;
};

TEST(PersonalizationTest, FedPerNeverUploadsPrivateLayersAndTrainsWithItsOwn) {
  testutil::ScopedTempDir dir;
  FakeChannel channel;
  channel.model = TwoLayerModel(10, 20);
  FakeTrainer trainer(&channel.events);  // adds 1 to every weight
  ClientOptions options = Options("pat");
  options.personal_state_dir = dir.path();
  ClientRuntime runtime(options, &channel, &trainer);
  ASSERT_OK(runtime.RunTask(PersonalTask(1, core::PersonalizationMode::kFedPer)));
  ASSERT_OK(runtime.RunTask(PersonalTask(2, core::PersonalizationMode::kFedPer)));

  ASSERT_EQ(channel.uploads.size(), 2u);
  for (const core::TrainResult& up : channel.uploads) {
    ASSERT_EQ(up.weights.tensors.size(), 1u);  // the head never left
    EXPECT_EQ(up.weights.tensors[0].name(), "body.w");
    EXPECT_EQ(up.weights.Find("head.w"), nullptr);
  }
  // Round 1 trained from the global model; round 2 from the global body and this client's own
  // head (20 + 1 after round 1), not the global's 20.
  ASSERT_EQ(trainer.trained_from.size(), 2u);
  EXPECT_EQ(trainer.trained_from[0].tensors[1].f32()[0], 20.0f);
  EXPECT_EQ(trainer.trained_from[1].tensors[0].f32()[0], 10.0f);
  EXPECT_EQ(trainer.trained_from[1].tensors[1].f32()[0], 21.0f);
  // The personal model was evaluated and reported; the trained shared part is not evaluated alone.
  EXPECT_THAT(channel.uploads[1].metrics, Contains(Key("personal_eval_accuracy")));
  EXPECT_THAT(channel.uploads[1].metrics, Not(Contains(Key("eval_accuracy"))));

  // A restarted client (a new runtime on the same state directory) keeps its head: 21 + 1.
  FakeTrainer after_restart(&channel.events);
  ClientRuntime restarted(options, &channel, &after_restart);
  ASSERT_OK(restarted.RunTask(PersonalTask(3, core::PersonalizationMode::kFedPer)));
  ASSERT_EQ(after_restart.trained_from.size(), 1u);
  EXPECT_EQ(after_restart.trained_from[0].tensors[1].f32()[0], 22.0f);
  EXPECT_EQ(after_restart.trained_from[0].tensors[0].f32()[0], 10.0f);
}

TEST(PersonalizationTest, FinetuneKeepsTheFineTunedGlobalAndItSurvivesARestart) {
  testutil::ScopedTempDir dir;
  FakeChannel channel;
  channel.model = TwoLayerModel(10, 20);
  FakeTrainer trainer(&channel.events);
  trainer.delta = 0.5f;
  ClientOptions options = Options("pat");
  options.personal_state_dir = dir.path();
  ClientRuntime runtime(options, &channel, &trainer);
  ASSERT_OK(runtime.RunTask(PersonalTask(1, core::PersonalizationMode::kFinetune)));
  // Federated training, then the fine-tuning pass from the received global with its step budget.
  ASSERT_EQ(trainer.configs.size(), 2u);
  EXPECT_EQ(trainer.configs[0].max_steps, 0);
  EXPECT_EQ(trainer.configs[1].max_steps, 5);
  EXPECT_EQ(trainer.trained_from[1].tensors[0].f32()[0], 10.0f);
  // The whole model was uploaded (finetune shares everything).
  ASSERT_EQ(channel.uploads.size(), 1u);
  EXPECT_EQ(channel.uploads[0].weights.tensors.size(), 2u);

  ASSERT_OK_AND_ASSIGN(auto reopened, Personalizer::Open(dir.path()));
  ASSERT_NE(reopened->saved(), nullptr);
  EXPECT_EQ(reopened->saved()->tensors[0].f32()[0], 10.5f);
  EXPECT_EQ(reopened->saved_round(), 1u);
}

TEST(PersonalizationTest, DittoTrainsItsPersonalModelTowardTheGlobalFromWhereItWas) {
  testutil::ScopedTempDir dir;
  FakeChannel channel;
  channel.model = TwoLayerModel(10, 20);
  std::vector<std::string> events;
  FakeTrainer inner(&events);
  ProximalFakeTrainer trainer(&inner);
  ClientOptions options = Options("pat");
  options.personal_state_dir = dir.path();
  ClientRuntime runtime(options, &channel, &trainer);
  ASSERT_OK(runtime.RunTask(PersonalTask(1, core::PersonalizationMode::kDitto)));
  ASSERT_OK(runtime.RunTask(PersonalTask(2, core::PersonalizationMode::kDitto)));
  ASSERT_EQ(trainer.anchors.size(), 2u);  // one personal pass per round, anchored at the global
  EXPECT_EQ(trainer.anchors[1].tensors[0].f32()[0], 10.0f);
  // inner.trained_from: fed 1, personal 1 (from the global), fed 2, personal 2 (from 11).
  ASSERT_EQ(inner.trained_from.size(), 4u);
  EXPECT_EQ(inner.trained_from[1].tensors[0].f32()[0], 10.0f);
  EXPECT_EQ(inner.trained_from[3].tensors[0].f32()[0], 11.0f);
  EXPECT_DOUBLE_EQ(inner.configs[3].proximal_mu, 0.5);  // lambda
}

TEST(PersonalizationTest, ADamagedPersonalModelIsRefusedNotReplaced) {
  testutil::ScopedTempDir dir;
  ASSERT_OK(core::WriteFileAtomic(dir.path() + "/personal.safetensors", "garbage"));
  EXPECT_CODE(Personalizer::Open(dir.path()), absl::StatusCode::kDataLoss);
}

}  // namespace personal
}  // namespace
}  // namespace tessera::client
