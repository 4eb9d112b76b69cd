// The gRPC transport end to end over loopback: a real CoordinatorServer on 127.0.0.1:<ephemeral>
// and real GrpcCoordinatorChannels (or raw stubs, for what a well-behaved channel never sends).
// Every test starts its own server and shuts it down; every RPC has a deadline.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/grpc/grpc_channel.h"
#include "coordinator/coordinator.h"
#include "coordinator/grpc/coordinator_service.h"
#include "coordinator/strategy.h"
#include "core/clock.h"
#include "core/proto_convert.h"
#include "core/sha256.h"
#include "core/status.h"
#include "core/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tessera/v1/tessera.grpc.pb.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"

namespace tessera {
namespace {

using client::ChannelOptions;
using client::ChannelTlsOptions;
using client::GrpcCoordinatorChannel;
using coordinator::Coordinator;
using coordinator::CoordinatorServer;
using coordinator::ServerTlsOptions;
using coordinator::ServiceOptions;
using core::ClientId;
using core::StrCat;
using SteadyClock = std::chrono::steady_clock;
using testutil::FloatModel;
using testutil::ResultFor;
using testutil::Values;
using ::testing::HasSubstr;

constexpr char kRunId[] = "run-grpc";

double SecondsSince(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// ---------------------------------------------------------------------------------------------
// A coordinator (FedAvg, fraction 1.0, real clock) behind a gRPC server on loopback.

struct FederationOptions {
  int min_available = 1;
  core::RoundNumber num_rounds = 1;
  ServiceOptions service;
};

class Federation {
 public:
  static absl::StatusOr<std::unique_ptr<Federation>> Start(core::ModelWeights initial, FederationOptions o = {}) {
    coordinator::CoordinatorOptions options;
    options.round.run_id = kRunId;
    options.round.num_rounds = o.num_rounds;
    options.round.round_deadline = absl::Minutes(5);  // no round closes by deadline in these tests
    options.round.min_results = 1;
    options.round.seed = 3;
    options.heartbeat_interval = absl::Seconds(5);
    options.liveness_timeout = absl::Minutes(5);
    options.max_poll_wait = absl::Seconds(30);
    coordinator::FedAvgOptions fedavg;
    fedavg.fraction = 1.0;
    fedavg.min_fit_clients = 1;
    fedavg.min_available_clients = o.min_available;
    TESSERA_ASSIGN_OR_RETURN(auto strategy, coordinator::FedAvgStrategy::Create(fedavg));
    coordinator::CoordinatorDeps deps;
    deps.clock = core::RealClock::Get();
    std::unique_ptr<Federation> f(new Federation());
    TESSERA_ASSIGN_OR_RETURN(f->coordinator, Coordinator::Create(options, std::move(strategy), std::move(initial), deps));
    ServerTlsOptions tls;
    tls.insecure = true;
    TESSERA_ASSIGN_OR_RETURN(f->server, CoordinatorServer::Start(f->coordinator.get(), "127.0.0.1:0", tls, o.service));
    return f;
  }
  ~Federation() {
    if (server) server->Shutdown();
    server.reset();  // before the coordinator it borrows
    coordinator.reset();
  }

  std::string address() const { return StrCat("127.0.0.1:", server->port()); }
  core::ModelVersion version() const { return coordinator->global_model()->version; }

  std::unique_ptr<Coordinator> coordinator;
  std::unique_ptr<CoordinatorServer> server;

 private:
  Federation() = default;
};

ChannelOptions QuickChannelOptions() {
  ChannelOptions o;
  o.rpc_timeout = absl::Seconds(10);
  o.transfer_timeout = absl::Seconds(60);
  o.retry.max_attempts = 3;
  o.retry.initial_backoff = absl::Milliseconds(10);
  o.retry.max_backoff = absl::Milliseconds(100);
  return o;
}

absl::StatusOr<std::unique_ptr<GrpcCoordinatorChannel>> Connect(const std::string& address,
                                                                ChannelOptions options = QuickChannelOptions()) {
  ChannelTlsOptions tls;
  tls.insecure = true;
  return GrpcCoordinatorChannel::Create(address, tls, options);
}

std::unique_ptr<v1::Coordinator::Stub> RawStub(const std::string& address) {
  return v1::Coordinator::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

void SetDeadline(grpc::ClientContext& ctx, std::chrono::seconds timeout = std::chrono::seconds(20)) {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

// A federation whose round needs two clients, alice and bob, each registered and holding its
// round-1 task (the round stays open until both answered).
struct AliceAndBob {
  std::unique_ptr<Federation> fed;
  std::unique_ptr<GrpcCoordinatorChannel> channel;
  core::TrainTask alice_task, bob_task;
};

absl::StatusOr<AliceAndBob> StartAliceAndBob(core::ModelWeights initial, FederationOptions fo = {}) {
  fo.min_available = 2;
  AliceAndBob f;
  TESSERA_ASSIGN_OR_RETURN(f.fed, Federation::Start(std::move(initial), fo));
  TESSERA_ASSIGN_OR_RETURN(f.channel, Connect(f.fed->address()));
  core::TrainTask* tasks[] = {&f.alice_task, &f.bob_task};
  const ClientId ids[] = {ClientId{"alice"}, ClientId{"bob"}};
  for (const ClientId& id : ids) TESSERA_RETURN_IF_ERROR(f.channel->Register(id, {}).status());
  for (int i = 0; i < 2; ++i) {
    TESSERA_ASSIGN_OR_RETURN(core::PullTaskReply pull, f.channel->PullTask(ids[i], absl::ZeroDuration()));
    if (!pull.task) return absl::InternalError(StrCat(ids[i].value, " got no task"));
    *tasks[i] = *pull.task;
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// Models.

using Layout = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// F32 tensors of `layout` filled with a deterministic pattern in [-10, 10].
core::ModelWeights PatternModel(const Layout& layout) {
  core::ModelWeights w;
  uint32_t t = 0;
  for (const auto& [name, shape] : layout) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i) {
      const uint32_t h = static_cast<uint32_t>(i) * 2654435761u + t * 40503u;
      v[i] = static_cast<float>(h % 20001u) * 1e-3f - 10.0f;
    }
    w.tensors.push_back(core::NamedTensor::FromFloats(name, shape, v));
    ++t;
  }
  return w;
}

core::ModelWeights PlusOne(core::ModelWeights w) {
  for (auto& t : w.tensors) {
    for (float& v : t.mutable_f32()) v += 1.0f;
  }
  return w;
}

// Same layout and the same bytes, tensor by tensor.
void ExpectBitExact(const core::ModelWeights& actual, const core::ModelWeights& expected) {
  ASSERT_OK(actual.CheckSameLayout(expected));
  for (size_t i = 0; i < expected.tensors.size(); ++i) {
    const auto& a = actual.tensors[i];
    const auto& e = expected.tensors[i];
    ASSERT_EQ(a.byte_size(), e.byte_size()) << e.name();
    EXPECT_EQ(std::memcmp(a.bytes().data(), e.bytes().data(), e.byte_size()), 0)
        << "tensor '" << e.name() << "' differs";
  }
}

// ---------------------------------------------------------------------------------------------
// A model much larger than gRPC's message limits travels both ways.

struct SizeCase {
  std::string name;
  Layout layout;
  uint64_t min_bytes;  // the serialized model is at least this large
};

void PrintTo(const SizeCase& c, std::ostream* os) { *os << c.name; }

class LargeModelTest : public ::testing::TestWithParam<SizeCase> {};

TEST_P(LargeModelTest, TravelsBothWaysBitExact) {
  const SizeCase& c = GetParam();
  const core::ModelWeights initial = PatternModel(c.layout);
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(initial));
  const auto global = fed->coordinator->global_model();
  ASSERT_GE(global->serialized.size(), c.min_bytes);

  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address()));
  const ClientId alice{"alice"};
  ASSERT_OK_AND_ASSIGN(core::RegisterReply reg, channel->Register(alice, {{"device", "test"}}));
  EXPECT_EQ(reg.run_id, kRunId);

  ASSERT_OK_AND_ASSIGN(core::PullTaskReply pull, channel->PullTask(alice, absl::ZeroDuration()));
  ASSERT_TRUE(pull.task.has_value());
  const core::TrainTask task = *pull.task;
  EXPECT_EQ(task.ref.run_id, kRunId);
  EXPECT_EQ(task.ref.round, 1u);
  EXPECT_EQ(task.model_version, 0u);
  EXPECT_EQ(task.model_bytes, global->serialized.size());
  EXPECT_EQ(task.model_sha256, core::Sha256Digest(global->serialized));

  ASSERT_OK_AND_ASSIGN(core::ModelWeights downloaded, channel->DownloadModel(alice, task));
  ExpectBitExact(downloaded, initial);

  // FedAvg with a single client is the client's model. num_examples is a power of two so that
  // the float weighting (x * n) * (1 / n) is exact.
  const core::ModelWeights trained = PlusOne(std::move(downloaded));
  ASSERT_OK_AND_ASSIGN(core::UploadAck ack, channel->UploadResult(alice, ResultFor(task, trained, 64)));
  EXPECT_FALSE(ack.duplicate);
  EXPECT_EQ(ack.accepted_round, 1u);

  const auto v1 = fed->coordinator->global_model();
  EXPECT_EQ(v1->version, 1u);
  EXPECT_EQ(v1->round, 1u);
  ExpectBitExact(*v1->weights, trained);
  EXPECT_TRUE(fed->coordinator->finished());
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, LargeModelTest,
    ::testing::Values(
        // ~70 MB: above protobuf's historical 64 MiB parse limit.
        SizeCase{"Above64MiB", {{"embedding", {2048, 4096}}, {"head", {9111392}}}, uint64_t{64} << 20},
        // The FedAvg paper's MNIST CNN: 1,663,370 floats (~6.65 MB), above gRPC's 4 MiB default.
        SizeCase{"MnistCnn",
                 {{"conv1.weight", {32, 1, 5, 5}},
                  {"conv1.bias", {32}},
                  {"conv2.weight", {64, 32, 5, 5}},
                  {"conv2.bias", {64}},
                  {"fc1.weight", {512, 3136}},
                  {"fc1.bias", {512}},
                  {"fc2.weight", {10, 512}},
                  {"fc2.bias", {10}}},
                 uint64_t{4} << 20}),
    [](const ::testing::TestParamInfo<SizeCase>& info) { return info.param.name; });

TEST(LargeModelLayoutTest, CnnCaseHasTheCnnsParameterCount) {
  core::ModelWeights cnn = PatternModel({{"conv1.weight", {32, 1, 5, 5}},
                                         {"conv1.bias", {32}},
                                         {"conv2.weight", {64, 32, 5, 5}},
                                         {"conv2.bias", {64}},
                                         {"fc1.weight", {512, 3136}},
                                         {"fc1.bias", {512}},
                                         {"fc2.weight", {10, 512}},
                                         {"fc2.bias", {10}}});
  EXPECT_EQ(cnn.num_elements(), 1663370);
}

// ---------------------------------------------------------------------------------------------
// Idempotent uploads.

TEST(GrpcTransportTest, UploadRetriedAfterTheRoundClosedIsAcknowledgedAsDuplicate) {
  FederationOptions fo;
  fo.num_rounds = 2;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel({1, 2, 3, 4}), fo));
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address()));
  const ClientId alice{"alice"};
  ASSERT_OK(channel->Register(alice, {}));
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply pull, channel->PullTask(alice, absl::ZeroDuration()));
  ASSERT_TRUE(pull.task.has_value());
  const core::TrainResult result = ResultFor(*pull.task, FloatModel({2, 2, 2, 2}), 4);

  ASSERT_OK_AND_ASSIGN(core::UploadAck first, channel->UploadResult(alice, result));
  EXPECT_FALSE(first.duplicate);
  EXPECT_EQ(first.accepted_round, 1u);
  EXPECT_EQ(fed->version(), 1u);
  EXPECT_EQ(fed->coordinator->current_round(), 2u);  // round 2 opened for alice at once

  ASSERT_OK_AND_ASSIGN(core::UploadAck again, channel->UploadResult(alice, result));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.accepted_round, 1u);
  // The retry changed nothing: round 2 still waits for alice's round-2 result.
  EXPECT_EQ(fed->version(), 1u);
  EXPECT_EQ(fed->coordinator->current_round(), 2u);
  EXPECT_EQ(fed->coordinator->phase(), coordinator::RoundPhase::kTraining);
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply next, channel->PullTask(alice, absl::ZeroDuration()));
  ASSERT_TRUE(next.task.has_value());
  EXPECT_EQ(next.task->ref.round, 2u);
}

TEST(GrpcTransportTest, UploadRetriedWhileTheRoundIsOpenCountsOnce) {
  FederationOptions fo;
  fo.min_available = 2;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel({0, 0}), fo));
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address()));
  const ClientId alice{"alice"}, bob{"bob"};
  ASSERT_OK(channel->Register(alice, {}));
  ASSERT_OK(channel->Register(bob, {}));
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply a, channel->PullTask(alice, absl::ZeroDuration()));
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply b, channel->PullTask(bob, absl::ZeroDuration()));
  ASSERT_TRUE(a.task.has_value());
  ASSERT_TRUE(b.task.has_value());

  const core::TrainResult from_alice = ResultFor(*a.task, FloatModel({3, 3}), 1);
  ASSERT_OK_AND_ASSIGN(core::UploadAck first, channel->UploadResult(alice, from_alice));
  EXPECT_FALSE(first.duplicate);
  ASSERT_OK_AND_ASSIGN(core::UploadAck again, channel->UploadResult(alice, from_alice));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.accepted_round, 1u);
  EXPECT_EQ(fed->version(), 0u);  // still waiting for bob

  ASSERT_OK(channel->UploadResult(bob, ResultFor(*b.task, FloatModel({5, 5}), 1)));
  ASSERT_EQ(fed->version(), 1u);
  // (3 + 5) / 2: alice counted once, not (3 + 3 + 5) / 3.
  EXPECT_EQ(Values(*fed->coordinator->global_model()->weights), (std::vector<float>{4, 4}));
}

// ---------------------------------------------------------------------------------------------
// Hostile uploads through the raw stub: each is refused with its own code, and the round still
// completes afterwards.

v1::UploadChunk HeaderMsg(const v1::UploadHeader& h) {
  v1::UploadChunk c;
  *c.mutable_header() = h;
  return c;
}
v1::UploadChunk DataMsg(std::string bytes) {
  v1::UploadChunk c;
  c.set_data(std::move(bytes));
  return c;
}

// What a hostile case builds its stream from.
struct UploadContext {
  core::TrainTask task;        // mallory's
  core::TrainTask other_task;  // alice's
  core::ModelWeights global;
  std::string blob;           // a valid result for mallory's task, serialized
  v1::UploadHeader header;    // a valid header for `blob`
  uint64_t limit = 0;         // the largest upload the server accepts
};

// Header and bytes for `weights` (valid length and digest).
std::vector<v1::UploadChunk> Upload(v1::UploadHeader h, const std::string& blob) {
  h.set_total_bytes(blob.size());
  h.set_sha256(core::Sha256Digest(blob));
  return {HeaderMsg(h), DataMsg(blob)};
}

// A valid model for the global layout whose tensor claims `dtype` (the bytes are the same).
std::string ModelWithDtype(v1::DType dtype) {
  v1::Model m;
  core::ToProto(FloatModel(std::vector<float>(1000, 1.0f)), &m);
  m.mutable_tensors(0)->set_dtype(dtype);
  return m.SerializeAsString();
}

// The valid bytes behind a header changed by `edit`.
std::vector<v1::UploadChunk> WithHeader(const UploadContext& x, const std::function<void(v1::UploadHeader&)>& edit) {
  v1::UploadHeader h = x.header;
  edit(h);
  return {HeaderMsg(h), DataMsg(x.blob)};
}

std::vector<v1::UploadChunk> WithExamples(const UploadContext& x, int64_t num_examples) {
  return WithHeader(x, [num_examples](v1::UploadHeader& h) { h.set_num_examples(num_examples); });
}

struct HostileCase {
  std::string name;
  std::function<std::vector<v1::UploadChunk>(const UploadContext&)> build;
  grpc::StatusCode code;
  // The refusal is the round's judgement of the result (it counts as mallory's answer and she
  // cannot answer again), not the transport's (her task stays open).
  bool answers_task = false;
  ServiceOptions service = {};  // the server's limits for this case
};

void PrintTo(const HostileCase& c, std::ostream* os) { *os << c.name; }

grpc::Status RawUpload(v1::Coordinator::Stub& stub, const std::vector<v1::UploadChunk>& msgs,
                       v1::UploadResponse* resp) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto writer = stub.UploadResult(&ctx, resp);
  for (const auto& m : msgs) {
    if (!writer->Write(m)) break;  // the server already answered
  }
  writer->WritesDone();
  return writer->Finish();
}

class HostileUploadTest : public ::testing::TestWithParam<HostileCase> {};

TEST_P(HostileUploadTest, IsRefusedAndTheRoundStillCompletes) {
  const HostileCase& c = GetParam();
  FederationOptions fo;
  fo.min_available = 2;
  fo.service = c.service;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel(std::vector<float>(1000, 0.5f)), fo));
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address()));
  const ClientId mallory{"mallory"}, alice{"alice"};
  ASSERT_OK(channel->Register(mallory, {}));
  ASSERT_OK(channel->Register(alice, {}));
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply m, channel->PullTask(mallory, absl::ZeroDuration()));
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply a, channel->PullTask(alice, absl::ZeroDuration()));
  ASSERT_TRUE(m.task.has_value());
  ASSERT_TRUE(a.task.has_value());

  UploadContext ctx;
  ctx.task = *m.task;
  ctx.other_task = *a.task;
  ctx.global = *fed->coordinator->global_model()->weights;
  ctx.blob = core::SerializeModel(FloatModel(std::vector<float>(1000, 1.0f)));
  ctx.header.set_client_id(mallory.value);
  core::ToProto(ctx.task.ref, ctx.header.mutable_ref());
  ctx.header.set_num_examples(1);
  ctx.header.set_total_bytes(ctx.blob.size());
  ctx.header.set_sha256(core::Sha256Digest(ctx.blob));
  ctx.limit = fed->coordinator->global_model()->serialized.size() + c.service.upload_slack_bytes;

  auto stub = RawStub(fed->address());
  v1::UploadResponse resp;
  const grpc::Status refused = RawUpload(*stub, c.build(ctx), &resp);
  EXPECT_EQ(refused.error_code(), c.code) << refused.error_message();
  EXPECT_EQ(fed->version(), 0u);

  // Mallory's honest retry: accepted unless the round already judged her result.
  auto retry = channel->UploadResult(mallory, ResultFor(ctx.task, FloatModel(std::vector<float>(1000, 1.0f)), 1));
  if (c.answers_task) {
    EXPECT_CODE(retry, absl::StatusCode::kFailedPrecondition);
  } else {
    EXPECT_OK(retry);
  }
  EXPECT_EQ(fed->version(), 0u);  // alice has not answered yet
  ASSERT_OK(channel->UploadResult(alice, ResultFor(ctx.other_task, FloatModel(std::vector<float>(1000, 3.0f)), 1)));

  // The round completed and published v1 from the valid results only.
  ASSERT_EQ(fed->version(), 1u);
  const auto history = fed->coordinator->history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].outcome, coordinator::RoundOutcome::kCompleted);
  EXPECT_EQ(history[0].reported, c.answers_task ? 1 : 2);
  EXPECT_EQ(history[0].rejected, c.answers_task ? 1 : 0);
  EXPECT_EQ(Values(*fed->coordinator->global_model()->weights),
            std::vector<float>(1000, c.answers_task ? 3.0f : 2.0f));
}

std::vector<HostileCase> HostileCases() {
  using Ctx = UploadContext;
  std::vector<HostileCase> cases;
  cases.push_back({"DataBeforeHeader", [](const Ctx& x) { return std::vector{DataMsg(x.blob), HeaderMsg(x.header)}; },
                   grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"DeclaredSizeAboveLimit",
                   [](const Ctx& x) {
                     return WithHeader(x, [&x](v1::UploadHeader& h) { h.set_total_bytes(x.limit + 1); });
                   },
                   grpc::StatusCode::RESOURCE_EXHAUSTED});
  cases.push_back({"DeclaredSizeHuge",
                   [](const Ctx& x) {
                     v1::UploadHeader h = x.header;
                     h.set_total_bytes(std::numeric_limits<uint64_t>::max());
                     return std::vector{HeaderMsg(h)};
                   },
                   grpc::StatusCode::RESOURCE_EXHAUSTED});
  // At the limit the size is allowed: what is wrong then is that the bytes stop short.
  cases.push_back({"DeclaredSizeAtLimitThenShort",
                   [](const Ctx& x) {
                     return WithHeader(x, [&x](v1::UploadHeader& h) { h.set_total_bytes(x.limit); });
                   },
                   grpc::StatusCode::DATA_LOSS});
  cases.push_back({"Sha256Mismatch",
                   [](const Ctx& x) {
                     return WithHeader(x, [](v1::UploadHeader& h) { h.set_sha256(core::Sha256Digest("something else")); });
                   },
                   grpc::StatusCode::DATA_LOSS});
  cases.push_back({"Sha256NotADigest",
                   [](const Ctx& x) {
                     return WithHeader(x, [](v1::UploadHeader& h) { h.set_sha256("0123"); });
                   },
                   grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"EndsBeforeTotalBytes",
                   [](const Ctx& x) { return std::vector{HeaderMsg(x.header), DataMsg(x.blob.substr(0, x.blob.size() / 2))}; },
                   grpc::StatusCode::DATA_LOSS});
  cases.push_back({"MoreBytesThanDeclared",
                   [](const Ctx& x) { return std::vector{HeaderMsg(x.header), DataMsg(x.blob), DataMsg("x")}; },
                   grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"SecondHeader",
                   [](const Ctx& x) {
                     return std::vector{HeaderMsg(x.header), DataMsg(x.blob.substr(0, 16)), HeaderMsg(x.header),
                                        DataMsg(x.blob.substr(16))};
                   },
                   grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"BytesAreNotAModel",
                   [](const Ctx& x) { return Upload(x.header, std::string(x.blob.size(), '\xff')); },
                   grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"ModelWithNaN",
                   [](const Ctx& x) {
                     std::vector<float> v(1000, 1.0f);
                     v[7] = std::numeric_limits<float>::quiet_NaN();
                     return Upload(x.header, core::SerializeModel(FloatModel(v)));
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, /*answers_task=*/true});
  cases.push_back({"ModelWithInf",
                   [](const Ctx& x) {
                     std::vector<float> v(1000, 1.0f);
                     v[999] = -std::numeric_limits<float>::infinity();
                     return Upload(x.header, core::SerializeModel(FloatModel(v)));
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, /*answers_task=*/true});
  cases.push_back({"WrongTensorShape",
                   [](const Ctx& x) { return Upload(x.header, core::SerializeModel(FloatModel(std::vector<float>(1001, 1.0f)))); },
                   grpc::StatusCode::INVALID_ARGUMENT, /*answers_task=*/true});
  cases.push_back({"WrongTensorName",
                   [](const Ctx& x) {
                     return Upload(x.header, core::SerializeModel(FloatModel(std::vector<float>(1000, 1.0f), "v")));
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, /*answers_task=*/true});
  cases.push_back({"ShapeDisagreesWithData",
                   [](const Ctx& x) {
                     v1::Model m;
                     core::ToProto(FloatModel(std::vector<float>(1000, 1.0f)), &m);
                     m.mutable_tensors(0)->set_shape(0, 2000);  // claims 2000 floats, carries 1000
                     return Upload(x.header, m.SerializeAsString());
                   },
                   grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"ZeroExamples", [](const Ctx& x) { return WithExamples(x, 0); },
                   grpc::StatusCode::INVALID_ARGUMENT, /*answers_task=*/true});
  cases.push_back({"UnknownTask",
                   [](const Ctx& x) {
                     return WithHeader(x, [](v1::UploadHeader& h) { h.mutable_ref()->set_task_id("forged"); });
                   },
                   grpc::StatusCode::NOT_FOUND});
  cases.push_back({"AnotherClientsTask",
                   [](const Ctx& x) {
                     return WithHeader(x, [&x](v1::UploadHeader& h) { core::ToProto(x.other_task.ref, h.mutable_ref()); });
                   },
                   grpc::StatusCode::NOT_FOUND});
  cases.push_back({"UnregisteredClient",
                   [](const Ctx& x) {
                     return WithHeader(x, [](v1::UploadHeader& h) { h.set_client_id("stranger"); });
                   },
                   grpc::StatusCode::NOT_FOUND});
  cases.push_back({"FutureRound",
                   [](const Ctx& x) {
                     return WithHeader(x, [&x](v1::UploadHeader& h) { h.mutable_ref()->set_round(x.task.ref.round + 1); });
                   },
                   grpc::StatusCode::FAILED_PRECONDITION});
  cases.push_back({"AnotherRun",
                   [](const Ctx& x) {
                     return WithHeader(x, [](v1::UploadHeader& h) { h.mutable_ref()->set_run_id("another-run"); });
                   },
                   grpc::StatusCode::FAILED_PRECONDITION});
  cases.push_back({"EmptyClientId",
                   [](const Ctx& x) {
                     return WithHeader(x, [](v1::UploadHeader& h) { h.clear_client_id(); });
                   },
                   grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"EmptyStream", [](const Ctx&) { return std::vector<v1::UploadChunk>{}; },
                   grpc::StatusCode::INVALID_ARGUMENT});
  // Same names, shape and byte count as the global model, but I32: the layout check refuses it.
  cases.push_back({"WrongTensorDtype",
                   [](const Ctx& x) { return Upload(x.header, ModelWithDtype(v1::DTYPE_INT32)); },
                   grpc::StatusCode::INVALID_ARGUMENT, /*answers_task=*/true});
  cases.push_back({"UnknownTensorDtype",
                   [](const Ctx& x) { return Upload(x.header, ModelWithDtype(static_cast<v1::DType>(99))); },
                   grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"NegativeExamples", [](const Ctx& x) { return WithExamples(x, -5); },
                   grpc::StatusCode::INVALID_ARGUMENT, /*answers_task=*/true});
  // The cap is RoundConfig::max_num_examples (2^31 unless configured): a client claiming more
  // would outweigh every other one in the weighted mean.
  cases.push_back({"ExamplesAboveTheCap",
                   [](const Ctx& x) { return WithExamples(x, coordinator::RoundConfig().max_num_examples + 1); },
                   grpc::StatusCode::INVALID_ARGUMENT, /*answers_task=*/true});
  // The stream carries no offsets: two chunks swapped have the right length, and only the digest
  // can tell.
  cases.push_back({"ReorderedChunks",
                   [](const Ctx& x) {
                     const size_t half = x.blob.size() / 2;
                     return std::vector{HeaderMsg(x.header), DataMsg(x.blob.substr(half)), DataMsg(x.blob.substr(0, half))};
                   },
                   grpc::StatusCode::DATA_LOSS});
  // One gRPC message above the server's receive limit (chunk_bytes + 1 MiB), in a stream whose
  // declared size the upload limit allows: gRPC refuses the message itself.
  {
    ServiceOptions roomy;
    roomy.upload_slack_bytes = uint64_t{8} << 20;
    const size_t oversized = roomy.chunk_bytes + (size_t{2} << 20);
    cases.push_back({"MessageAboveMaxReceiveSize",
                     [oversized](const Ctx& x) { return Upload(x.header, std::string(oversized, 'x')); },
                     grpc::StatusCode::RESOURCE_EXHAUSTED, /*answers_task=*/false, roomy});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, HostileUploadTest, ::testing::ValuesIn(HostileCases()),
                         [](const ::testing::TestParamInfo<HostileCase>& info) { return info.param.name; });

// Alice and mallory registered, each holding a task of round 1 (both sampled: fraction 1.0).
struct TwoClientRun {
  std::unique_ptr<Federation> fed;
  std::unique_ptr<GrpcCoordinatorChannel> channel;
  core::TrainTask alice_task, mallory_task;
};

absl::StatusOr<TwoClientRun> StartTwoClientRun(core::ModelWeights initial, core::RoundNumber rounds) {
  FederationOptions fo;
  fo.min_available = 2;
  fo.num_rounds = rounds;
  TwoClientRun run;
  TESSERA_ASSIGN_OR_RETURN(run.fed, Federation::Start(std::move(initial), fo));
  TESSERA_ASSIGN_OR_RETURN(run.channel, Connect(run.fed->address()));
  TESSERA_RETURN_IF_ERROR(run.channel->Register(ClientId{"alice"}, {}).status());
  TESSERA_RETURN_IF_ERROR(run.channel->Register(ClientId{"mallory"}, {}).status());
  TESSERA_ASSIGN_OR_RETURN(core::PullTaskReply a, run.channel->PullTask(ClientId{"alice"}, absl::ZeroDuration()));
  TESSERA_ASSIGN_OR_RETURN(core::PullTaskReply m, run.channel->PullTask(ClientId{"mallory"}, absl::ZeroDuration()));
  if (!a.task || !m.task) return absl::InternalError("a client got no task in round 1");
  run.alice_task = *a.task;
  run.mallory_task = *m.task;
  return run;
}

TEST(HostileUploadRoundTest, ResultForAClosedRoundIsFailedPreconditionAndTheOpenRoundCompletes) {
  const ClientId alice{"alice"}, mallory{"mallory"};
  ASSERT_OK_AND_ASSIGN(TwoClientRun run, StartTwoClientRun(FloatModel({1, 1}), 2));
  Federation& fed = *run.fed;
  // Round 1 closes without mallory (the transport saw her fail) on alice's result alone.
  fed.coordinator->ReportFailure(mallory);
  ASSERT_OK(run.channel->UploadResult(alice, ResultFor(run.alice_task, FloatModel({3, 3}), 1)));
  ASSERT_EQ(fed.version(), 1u);
  ASSERT_EQ(fed.coordinator->current_round(), 2u);
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply m2, run.channel->PullTask(mallory, absl::ZeroDuration()));
  ASSERT_TRUE(m2.task.has_value());

  // Her round-1 result arrives late, while she holds a round-2 task: refused as stale, not as
  // unknown, and it does not count as her round-2 answer.
  EXPECT_CODE(run.channel->UploadResult(mallory, ResultFor(run.mallory_task, FloatModel({9, 9}), 1)),
              absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(fed.version(), 1u);

  ASSERT_OK_AND_ASSIGN(core::PullTaskReply a2, run.channel->PullTask(alice, absl::ZeroDuration()));
  ASSERT_TRUE(a2.task.has_value());
  ASSERT_OK(run.channel->UploadResult(mallory, ResultFor(*m2.task, FloatModel({5, 5}), 1)));
  ASSERT_OK(run.channel->UploadResult(alice, ResultFor(*a2.task, FloatModel({7, 7}), 1)));
  ASSERT_EQ(fed.version(), 2u);
  EXPECT_EQ(Values(*fed.coordinator->global_model()->weights), (std::vector<float>{6, 6}));
  const auto history = fed.coordinator->history();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].dropped, 1);
  EXPECT_EQ(history[1].outcome, coordinator::RoundOutcome::kCompleted);
  EXPECT_EQ(history[1].reported, 2);
}

TEST(HostileUploadRoundTest, EveryResultInvalidAbandonsTheRoundAndTheNextRoundRuns) {
  const ClientId alice{"alice"}, mallory{"mallory"};
  ASSERT_OK_AND_ASSIGN(TwoClientRun run, StartTwoClientRun(FloatModel({1, 2}), 2));
  Federation& fed = *run.fed;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_CODE(run.channel->UploadResult(mallory, ResultFor(run.mallory_task, FloatModel({nan, nan}), 1)),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(run.channel->UploadResult(alice, ResultFor(run.alice_task, FloatModel({3, 3}), 0)),
              absl::StatusCode::kInvalidArgument);

  // Round 1 is abandoned: no model published, the global model is the initial one, finite.
  auto history = fed.coordinator->history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].outcome, coordinator::RoundOutcome::kAbandoned);
  EXPECT_EQ(history[0].reported, 0);
  EXPECT_EQ(history[0].rejected, 2);
  EXPECT_EQ(history[0].model_version, 0u);
  EXPECT_EQ(fed.version(), 0u);
  EXPECT_OK(fed.coordinator->global_model()->weights->CheckFinite());
  EXPECT_EQ(Values(*fed.coordinator->global_model()->weights), (std::vector<float>{1, 2}));

  // Round 2 runs on the unchanged model and completes with valid results.
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply a2, run.channel->PullTask(alice, absl::ZeroDuration()));
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply m2, run.channel->PullTask(mallory, absl::ZeroDuration()));
  ASSERT_TRUE(a2.task.has_value());
  ASSERT_TRUE(m2.task.has_value());
  EXPECT_EQ(a2.task->ref.round, 2u);
  EXPECT_EQ(a2.task->model_version, 0u);
  ASSERT_OK(run.channel->UploadResult(alice, ResultFor(*a2.task, FloatModel({3, 3}), 1)));
  ASSERT_OK(run.channel->UploadResult(mallory, ResultFor(*m2.task, FloatModel({5, 5}), 1)));
  ASSERT_EQ(fed.version(), 1u);
  EXPECT_EQ(Values(*fed.coordinator->global_model()->weights), (std::vector<float>{4, 4}));
  history = fed.coordinator->history();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[1].outcome, coordinator::RoundOutcome::kCompleted);
  EXPECT_EQ(history[1].reported, 2);
}

// ---------------------------------------------------------------------------------------------
// Downloads.

struct RawDownload {
  grpc::Status status;
  std::string data;
  std::vector<uint64_t> offsets;
  std::vector<uint64_t> totals;
  std::string first_sha256;
};

RawDownload Download(v1::Coordinator::Stub& stub, const std::string& client, const core::RoundRef& ref,
                     uint64_t offset) {
  v1::DownloadModelRequest req;
  req.set_client_id(client);
  core::ToProto(ref, req.mutable_ref());
  req.set_offset(offset);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto reader = stub.DownloadModel(&ctx, req);
  RawDownload out;
  v1::ModelChunk chunk;
  while (reader->Read(&chunk)) {
    if (out.offsets.empty()) out.first_sha256 = chunk.sha256();
    out.offsets.push_back(chunk.offset());
    out.totals.push_back(chunk.total_bytes());
    out.data += chunk.data();
  }
  out.status = reader->Finish();
  return out;
}

class DownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FederationOptions fo;
    fo.service.chunk_bytes = 64 << 10;  // several chunks for a 400 KB model
    ASSERT_OK_AND_ASSIGN(AliceAndBob f, StartAliceAndBob(PatternModel({{"w", {100000}}}), fo));
    fed_ = std::move(f.fed);
    channel_ = std::move(f.channel);
    alice_task_ = f.alice_task;
    bob_task_ = f.bob_task;
    serialized_ = fed_->coordinator->global_model()->serialized;
    stub_ = RawStub(fed_->address());
  }

  std::unique_ptr<Federation> fed_;
  std::unique_ptr<GrpcCoordinatorChannel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  core::TrainTask alice_task_, bob_task_;
  std::string serialized_;
};

TEST_F(DownloadTest, WholeModelArrivesInOrderedChunksWithItsDigest) {
  RawDownload d = Download(*stub_, "alice", alice_task_.ref, 0);
  ASSERT_TRUE(d.status.ok()) << d.status.error_message();
  EXPECT_GT(d.offsets.size(), 5u);
  EXPECT_TRUE(d.data == serialized_);
  EXPECT_EQ(d.first_sha256, core::Sha256Digest(serialized_));
  uint64_t expected = 0;
  for (size_t i = 0; i < d.offsets.size(); ++i) {
    EXPECT_EQ(d.offsets[i], expected) << "chunk " << i;
    EXPECT_EQ(d.totals[i], serialized_.size()) << "chunk " << i;
    expected += (i + 1 < d.offsets.size() ? d.offsets[i + 1] : serialized_.size()) - d.offsets[i];
  }
}

TEST_F(DownloadTest, ResumeFromHalfReturnsExactlyTheSecondHalf) {
  const uint64_t half = serialized_.size() / 2 + 3;  // not on a chunk boundary
  RawDownload d = Download(*stub_, "alice", alice_task_.ref, half);
  ASSERT_TRUE(d.status.ok()) << d.status.error_message();
  ASSERT_FALSE(d.offsets.empty());
  EXPECT_EQ(d.offsets.front(), half);
  EXPECT_EQ(d.data.size(), serialized_.size() - half);
  EXPECT_TRUE(d.data == serialized_.substr(half));
}

TEST_F(DownloadTest, OffsetAtTheEndReturnsNothing) {
  RawDownload d = Download(*stub_, "alice", alice_task_.ref, serialized_.size());
  ASSERT_TRUE(d.status.ok()) << d.status.error_message();
  EXPECT_TRUE(d.data.empty());
}

TEST_F(DownloadTest, OffsetBeyondTheEndIsOutOfRange) {
  RawDownload d = Download(*stub_, "alice", alice_task_.ref, serialized_.size() + 1);
  EXPECT_EQ(d.status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << d.status.error_message();
  EXPECT_TRUE(d.data.empty());
}

TEST_F(DownloadTest, AnotherClientsTaskIsNotFound) {
  RawDownload d = Download(*stub_, "bob", alice_task_.ref, 0);
  EXPECT_EQ(d.status.error_code(), grpc::StatusCode::NOT_FOUND) << d.status.error_message();
  EXPECT_TRUE(d.data.empty());
}

TEST_F(DownloadTest, AnUnknownTaskIsNotFound) {
  core::RoundRef forged = alice_task_.ref;
  forged.task_id = "run-grpc/1/nobody";
  RawDownload d = Download(*stub_, "alice", forged, 0);
  EXPECT_EQ(d.status.error_code(), grpc::StatusCode::NOT_FOUND) << d.status.error_message();
  // And through the channel: NOT_FOUND is final, not retried into UNAVAILABLE.
  core::TrainTask task = alice_task_;
  task.ref = forged;
  EXPECT_CODE(channel_->DownloadModel(ClientId{"alice"}, task), absl::StatusCode::kNotFound);
}

TEST_F(DownloadTest, ChannelDownloadsTheModelInSmallServerChunks) {
  ASSERT_OK_AND_ASSIGN(core::ModelWeights w, channel_->DownloadModel(ClientId{"bob"}, bob_task_));
  ExpectBitExact(w, *fed_->coordinator->global_model()->weights);
}

// ---------------------------------------------------------------------------------------------
// Long polls.

TEST(GrpcTransportTest, LongPollGetsItsTaskAsSoonAsTheRoundOpens) {
  FederationOptions fo;
  fo.min_available = 2;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel({1, 2}), fo));
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address()));
  ASSERT_OK(channel->Register(ClientId{"alice"}, {}));

  const auto t0 = SteadyClock::now();
  absl::StatusOr<core::PullTaskReply> reply = absl::UnknownError("not answered");
  SteadyClock::time_point answered_at;
  std::thread poller([&] {
    reply = channel->PullTask(ClientId{"alice"}, absl::Seconds(5));
    answered_at = SteadyClock::now();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto opened_at = SteadyClock::now();
  EXPECT_OK(channel->Register(ClientId{"bob"}, {}));  // the round opens now (no ASSERT: the poller must be joined)
  poller.join();

  ASSERT_OK(reply);
  ASSERT_TRUE(reply->task.has_value()) << "the poll must carry the task of the round that opened";
  EXPECT_EQ(reply->task->ref.round, 1u);
  EXPECT_LT(std::chrono::duration<double>(answered_at - opened_at).count(), 1.0);
  EXPECT_LT(std::chrono::duration<double>(answered_at - t0).count(), 2.5) << "well before the 5 s wait";
}

TEST(GrpcTransportTest, LongPollWithNothingToDoAnswersAfterItsWait) {
  FederationOptions fo;
  fo.min_available = 2;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel({1, 2}), fo));
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address()));
  ASSERT_OK(channel->Register(ClientId{"alice"}, {}));

  const auto t0 = SteadyClock::now();
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply reply, channel->PullTask(ClientId{"alice"}, absl::Milliseconds(300)));
  const double elapsed = SecondsSince(t0);
  EXPECT_FALSE(reply.task.has_value());
  EXPECT_FALSE(reply.run_finished);
  EXPECT_GT(reply.retry_after, absl::ZeroDuration());
  EXPECT_GE(elapsed, 0.28) << "the server must hold the poll for its wait";
  EXPECT_LT(elapsed, 2.0);
}

TEST(GrpcTransportTest, PollAfterTheRunFinishedSaysSo) {
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel({1, 2})));
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address()));
  const ClientId alice{"alice"};
  ASSERT_OK(channel->Register(alice, {}));
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply pull, channel->PullTask(alice, absl::ZeroDuration()));
  ASSERT_TRUE(pull.task.has_value());
  ASSERT_OK(channel->UploadResult(alice, ResultFor(*pull.task, FloatModel({3, 4}), 2)));
  ASSERT_TRUE(fed->coordinator->finished());

  const auto t0 = SteadyClock::now();
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply done, channel->PullTask(alice, absl::Seconds(5)));
  EXPECT_TRUE(done.run_finished);
  EXPECT_FALSE(done.task.has_value());
  EXPECT_LT(SecondsSince(t0), 1.0);
}

TEST(GrpcTransportTest, PullTaskOfAnUnregisteredClientIsNotFound) {
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel({1, 2})));
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address()));
  EXPECT_CODE(channel->PullTask(ClientId{"stranger"}, absl::Milliseconds(100)), absl::StatusCode::kNotFound);
  EXPECT_CODE(channel->Heartbeat(ClientId{"stranger"}), absl::StatusCode::kNotFound);
}

TEST(GrpcTransportTest, LongPollAnswersBeforeTheCallersDeadline) {
  // A poll asking to wait longer than its own RPC deadline gets an answer, not DEADLINE_EXCEEDED.
  FederationOptions fo;
  fo.min_available = 2;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel({1, 2}), fo));
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address()));
  ASSERT_OK(channel->Register(ClientId{"alice"}, {}));
  auto stub = RawStub(fed->address());

  v1::PullTaskRequest req;
  req.set_client_id("alice");
  req.set_max_wait_ms(10000);
  v1::PullTaskResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx, std::chrono::seconds(2));
  const auto t0 = SteadyClock::now();
  const grpc::Status s = stub->PullTask(&ctx, req, &resp);
  const double elapsed = SecondsSince(t0);
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_FALSE(resp.has_task());
  EXPECT_GE(elapsed, 1.0) << "the server should still hold the poll for most of the caller's deadline";
  EXPECT_LT(elapsed, 2.0);
}

// ---------------------------------------------------------------------------------------------
// Failures of the connection itself.

TEST(GrpcTransportTest, UnreachableCoordinatorIsUnavailableAfterTheRetries) {
  ChannelOptions options = QuickChannelOptions();
  options.rpc_timeout = absl::Seconds(2);
  options.retry.max_attempts = 3;
  options.retry.initial_backoff = absl::Milliseconds(10);
  ASSERT_OK_AND_ASSIGN(auto channel, Connect("127.0.0.1:1", options));

  const auto t0 = SteadyClock::now();
  auto reg = channel->Register(ClientId{"alice"}, {});
  EXPECT_LT(SecondsSince(t0), 5.0);
  EXPECT_CODE(reg, absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(reg.status().message()), HasSubstr("127.0.0.1:1"));
  EXPECT_THAT(std::string(reg.status().message()), HasSubstr("3 attempts"));
}

TEST(GrpcTransportTest, ShutdownAnswersAPendingLongPollPromptly) {
  FederationOptions fo;
  fo.min_available = 2;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel({1, 2}), fo));
  ChannelOptions options = QuickChannelOptions();
  options.rpc_timeout = absl::Seconds(5);
  options.retry.max_attempts = 1;  // see the shutdown's own answer, not a retry's
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed->address(), options));
  ASSERT_OK(channel->Register(ClientId{"alice"}, {}));

  absl::StatusOr<core::PullTaskReply> reply = absl::UnknownError("not answered");
  SteadyClock::time_point answered_at;
  std::thread poller([&] {
    reply = channel->PullTask(ClientId{"alice"}, absl::Seconds(20));
    answered_at = SteadyClock::now();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the poll is pending by now

  const auto t0 = SteadyClock::now();
  fed->server->Shutdown();
  EXPECT_LT(SecondsSince(t0), 3.0);
  poller.join();
  EXPECT_LT(std::chrono::duration<double>(answered_at - t0).count(), 3.0);
  EXPECT_CODE(reply, absl::StatusCode::kUnavailable);
}


// ---------------------------------------------------------------------------------------------
// The client runtime over the real transport.

// Adds `delta` to every weight and reports 8 examples.
class AddingTrainer final : public client::Trainer {
 public:
  explicit AddingTrainer(float delta) : delta_(delta) {}
  absl::StatusOr<client::TrainOutput> Train(const core::ModelWeights& global, const core::TrainConfig&) override {
    client::TrainOutput out;
    out.weights = global;
    for (auto& t : out.weights.tensors) {
      for (float& v : t.mutable_f32()) v += delta_;
    }
    out.num_examples = 8;
    out.metrics = {{"train_loss", 1.0}};
    return out;
  }
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights&) override {
    return core::Metrics{{"accuracy", 0.5}};
  }

 private:
  float delta_;
};

TEST(GrpcTransportTest, TwoClientRuntimesFinishATwoRoundRun) {
  FederationOptions fo;
  fo.min_available = 2;
  fo.num_rounds = 2;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(FloatModel({0, 0, 0}), fo));
  ASSERT_OK_AND_ASSIGN(auto channel_a, Connect(fed->address()));
  ASSERT_OK_AND_ASSIGN(auto channel_b, Connect(fed->address()));
  AddingTrainer plus_one(1.0f), plus_three(3.0f);
  client::ClientOptions oa, ob;
  oa.id = ClientId{"alice"};
  ob.id = ClientId{"bob"};
  oa.poll_wait = ob.poll_wait = absl::Seconds(2);
  client::ClientRuntime alice(oa, channel_a.get(), &plus_one);
  client::ClientRuntime bob(ob, channel_b.get(), &plus_three);

  std::atomic<bool> stop{false};
  absl::Status sa = absl::UnknownError("not run"), sb = absl::UnknownError("not run");
  std::thread ta([&] { sa = alice.Run(&stop); });
  std::thread tb([&] { sb = bob.Run(&stop); });
  const bool finished = fed->coordinator->WaitFinished(absl::Seconds(15));
  if (!finished) stop = true;  // bound the test: the runtimes stop after their current poll
  ta.join();
  tb.join();

  ASSERT_TRUE(finished);
  EXPECT_OK(sa);
  EXPECT_OK(sb);
  EXPECT_EQ(alice.tasks_done(), 2);
  EXPECT_EQ(bob.tasks_done(), 2);
  EXPECT_EQ(fed->version(), 2u);
  // Each round adds the mean of +1 and +3.
  EXPECT_EQ(Values(*fed->coordinator->global_model()->weights), (std::vector<float>{4, 4, 4}));
  const auto history = fed->coordinator->history();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[1].reported, 2);
  EXPECT_DOUBLE_EQ(history[1].client_metrics.at("eval_accuracy"), 0.5);
}

// ---------------------------------------------------------------------------------------------
// The channel's retries, against a scripted server that fails on purpose.

// Serves `blob` from the requested offset up to `stop_at`, then finishes with `end`.
class ScriptedDownload final : public grpc::ServerWriteReactor<v1::ModelChunk> {
 public:
  ScriptedDownload(const std::string* blob, uint64_t offset, uint64_t stop_at, grpc::Status end)
      : blob_(blob), offset_(offset), stop_at_(stop_at), end_(std::move(end)) {
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "broken"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  void Next() {
    if (offset_ >= stop_at_) {
      Finish(end_);
      return;
    }
    const uint64_t n = std::min<uint64_t>(256 << 10, stop_at_ - offset_);
    chunk_.set_offset(offset_);
    chunk_.set_data(blob_->data() + offset_, n);
    chunk_.set_total_bytes(blob_->size());
    if (first_) chunk_.set_sha256(core::Sha256Digest(*blob_)); else chunk_.clear_sha256();
    first_ = false;
    offset_ += n;
    StartWrite(&chunk_);
  }
  const std::string* blob_;
  uint64_t offset_, stop_at_;
  grpc::Status end_;
  bool first_ = true;
  v1::ModelChunk chunk_;
};

// A coordinator whose first calls fail with UNAVAILABLE, as a restarting or overloaded server's do.
class FlakyCoordinator final : public v1::Coordinator::CallbackService {
 public:
  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx, const v1::RegisterRequest* req,
                                     v1::RegisterResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    if (++register_calls <= register_failures) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "warming up"));
    } else {
      resp->set_run_id("flaky");
      resp->set_heartbeat_interval_ms(1000);
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }
  grpc::ServerWriteReactor<v1::ModelChunk>* DownloadModel(grpc::CallbackServerContext* ctx,
                                                          const v1::DownloadModelRequest* req) override {
    std::lock_guard lock(mu);
    download_offsets.push_back(req->offset());
    const bool fail = download_offsets.size() == 1;
    return new ScriptedDownload(&blob, req->offset(), fail ? break_download_at : blob.size(),
                                fail ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset")
                                     : grpc::Status::OK);
  }
  grpc::ServerReadReactor<v1::UploadChunk>* UploadResult(grpc::CallbackServerContext* ctx,
                                                         v1::UploadResponse* resp) override {
    class Collect final : public grpc::ServerReadReactor<v1::UploadChunk> {
     public:
      Collect(FlakyCoordinator* s, grpc::CallbackServerContext* ctx, v1::UploadResponse* resp)
          : s_(s), ctx_(ctx), resp_(resp) {
        StartSendInitialMetadata();  // admitted
        StartRead(&msg_);
      }
      void OnReadDone(bool ok) override {
        if (ok) {
          if (msg_.has_header()) header_ = msg_.header(); else data_ += msg_.data();
          StartRead(&msg_);
          return;
        }
        int call;
        {
          std::lock_guard lock(s_->mu);
          s_->upload_headers.push_back(header_);
          s_->upload_data.push_back(data_);
          call = static_cast<int>(s_->upload_data.size());
        }
        if (call == 1) {
          Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset"));
        } else if (call - 1 <= s_->shed_uploads) {
          ctx_->AddTrailingMetadata(core::kRetryAfterMetadata, std::to_string(s_->retry_after_ms));
          Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "busy"));
        } else {
          resp_->set_accepted_round(7);
          Finish(grpc::Status::OK);
        }
      }
      void OnDone() override { delete this; }

     private:
      FlakyCoordinator* s_;
      grpc::CallbackServerContext* ctx_;
      v1::UploadResponse* resp_;
      v1::UploadChunk msg_;
      v1::UploadHeader header_;
      std::string data_;
    };
    return new Collect(this, ctx, resp);
  }
  // After the first (broken) upload it claims to hold its first `held_after_break` bytes.
  grpc::ServerUnaryReactor* QueryUpload(grpc::CallbackServerContext* ctx, const v1::QueryUploadRequest* req,
                                        v1::QueryUploadResponse* resp) override {
    std::lock_guard lock(mu);
    ++query_calls;
    if (!upload_headers.empty() && upload_headers[0].sha256() == req->sha256() &&
        upload_headers[0].total_bytes() == req->total_bytes() && req->client_id() == upload_headers[0].client_id()) {
      resp->set_received(std::min<uint64_t>(held_after_break, upload_data[0].size()));
    }
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  std::atomic<int> register_calls{0};
  int register_failures = 0;
  std::string blob;
  uint64_t break_download_at = 0;
  uint64_t held_after_break = 0;
  int shed_uploads = 0;  // after the broken one, shed this many with a retry-after hint
  int retry_after_ms = 0;
  std::mutex mu;
  int query_calls = 0;
  std::vector<uint64_t> download_offsets;
  std::vector<v1::UploadHeader> upload_headers;
  std::vector<std::string> upload_data;
};

class ChannelRetryTest : public ::testing::Test {
 protected:
  void Start() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
  }
  void TearDown() override {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
      server_->Wait();
    }
  }
  std::string address() const { return StrCat("127.0.0.1:", port_); }

  FlakyCoordinator service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(ChannelRetryTest, RegisterSucceedsWithinItsAttempts) {
  service_.register_failures = 2;
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(address()));  // 3 attempts
  ASSERT_OK_AND_ASSIGN(core::RegisterReply reg, channel->Register(ClientId{"alice"}, {}));
  EXPECT_EQ(reg.run_id, "flaky");
  EXPECT_EQ(reg.heartbeat_interval, absl::Seconds(1));
  EXPECT_EQ(service_.register_calls.load(), 3);
}

TEST_F(ChannelRetryTest, RegisterGivesUpAfterItsAttempts) {
  service_.register_failures = 100;
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(address()));  // 3 attempts
  auto reg = channel->Register(ClientId{"alice"}, {});
  EXPECT_CODE(reg, absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(reg.status().message()), HasSubstr("3 attempts"));
  EXPECT_THAT(std::string(reg.status().message()), HasSubstr("warming up"));
  EXPECT_EQ(service_.register_calls.load(), 3);
}

TEST_F(ChannelRetryTest, BrokenDownloadResumesFromTheLastByteReceived) {
  const core::ModelWeights model = PatternModel({{"w", {600000}}});
  service_.blob = core::SerializeModel(model);
  service_.break_download_at = service_.blob.size() / 2 + 5;  // mid-chunk
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(address()));
  core::TrainTask task;
  task.ref = {"flaky", 1, "flaky/1/alice"};
  task.model_bytes = service_.blob.size();
  task.model_sha256 = core::Sha256Digest(service_.blob);

  ASSERT_OK_AND_ASSIGN(core::ModelWeights w, channel->DownloadModel(ClientId{"alice"}, task));
  ExpectBitExact(w, model);
  std::lock_guard lock(service_.mu);
  EXPECT_EQ(service_.download_offsets, (std::vector<uint64_t>{0, service_.break_download_at}));
}

// Regression: a retried upload used to send the whole blob again after a broken stream.
TEST_F(ChannelRetryTest, BrokenUploadResumesFromTheBytesAlreadyReceived) {
  const core::ModelWeights weights = PatternModel({{"w", {600000}}});  // > 1 chunk
  const std::string expected = core::SerializeModel(weights);
  service_.held_after_break = expected.size() / 2 + 5;  // mid-chunk
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(address()));
  core::TrainTask task;
  task.ref = {"flaky", 7, "flaky/7/alice"};
  ASSERT_OK_AND_ASSIGN(core::UploadAck ack,
                       channel->UploadResult(ClientId{"alice"}, ResultFor(task, weights, 12, {{"train_loss", 0.5}})));
  EXPECT_EQ(ack.accepted_round, 7u);
  EXPECT_FALSE(ack.duplicate);

  std::lock_guard lock(service_.mu);
  EXPECT_EQ(service_.query_calls, 1);
  ASSERT_EQ(service_.upload_data.size(), 2u);
  const std::vector<uint64_t> offsets = {0, service_.held_after_break};
  for (size_t i = 0; i < 2; ++i) {
    const v1::UploadHeader& h = service_.upload_headers[i];
    EXPECT_EQ(h.client_id(), "alice") << "attempt " << i;
    EXPECT_EQ(h.ref().task_id(), "flaky/7/alice") << "attempt " << i;
    EXPECT_EQ(h.num_examples(), 12) << "attempt " << i;
    EXPECT_EQ(h.metrics().at("train_loss"), 0.5) << "attempt " << i;
    EXPECT_EQ(h.total_bytes(), expected.size()) << "attempt " << i;
    EXPECT_EQ(h.sha256(), core::Sha256Digest(expected)) << "attempt " << i;  // of the whole blob
    EXPECT_EQ(h.offset(), offsets[i]) << "attempt " << i;
    EXPECT_TRUE(service_.upload_data[i] == expected.substr(offsets[i])) << "attempt " << i;
  }
}

TEST_F(ChannelRetryTest, ShedUploadWaitsTheHintWithoutUsingUpAttempts) {
  service_.shed_uploads = 4;
  service_.retry_after_ms = 150;
  ASSERT_NO_FATAL_FAILURE(Start());
  ChannelOptions options = QuickChannelOptions();
  options.retry.max_attempts = 2;  // the broken stream uses the only retry; four sheds follow
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(address(), options));
  core::TrainTask task;
  task.ref = {"flaky", 7, "flaky/7/alice"};
  const auto t0 = SteadyClock::now();
  ASSERT_OK_AND_ASSIGN(core::UploadAck ack,
                       channel->UploadResult(ClientId{"alice"}, ResultFor(task, FloatModel({1, 2, 3}), 1)));
  const double elapsed = SecondsSince(t0);
  EXPECT_EQ(ack.accepted_round, 7u);
  EXPECT_GE(elapsed, 4 * 0.150) << "each shed attempt waits at least the hint";
  EXPECT_LT(elapsed, 4 * 0.150 * 1.5 + 2.0) << "and at most the hint plus half of it as jitter";
  std::lock_guard lock(service_.mu);
  EXPECT_EQ(service_.upload_data.size(), 6u);
}

// ---------------------------------------------------------------------------------------------
// Resumable uploads and load shedding against the real service.

grpc::Status QueryUpload(v1::Coordinator::Stub& stub, const v1::UploadHeader& h, uint64_t* received) {
  v1::QueryUploadRequest req;
  req.set_client_id(h.client_id());
  *req.mutable_ref() = h.ref();
  req.set_total_bytes(h.total_bytes());
  req.set_sha256(h.sha256());
  v1::QueryUploadResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  grpc::Status s = stub.QueryUpload(&ctx, req, &resp);
  *received = resp.received();
  return s;
}

// A valid header for `client`'s upload of `blob` (one example) for the task `ref`.
v1::UploadHeader HeaderFor(const std::string& client, const core::RoundRef& ref, const std::string& blob) {
  v1::UploadHeader h;
  h.set_client_id(client);
  core::ToProto(ref, h.mutable_ref());
  h.set_num_examples(1);
  h.set_total_bytes(blob.size());
  h.set_sha256(core::Sha256Digest(blob));
  return h;
}

// An upload stream left open (the caller decides how it ends).
struct OpenUpload {
  grpc::ClientContext ctx;
  v1::UploadResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::UploadChunk>> writer;
};

std::unique_ptr<OpenUpload> StartUpload(v1::Coordinator::Stub& stub, const v1::UploadHeader& h,
                                        const std::string& bytes) {
  auto u = std::make_unique<OpenUpload>();
  SetDeadline(u->ctx);
  u->writer = stub.UploadResult(&u->ctx, &u->resp);
  if (u->writer->Write(HeaderMsg(h)) && !bytes.empty()) u->writer->Write(DataMsg(bytes));
  return u;
}

class UploadResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(AliceAndBob f, StartAliceAndBob(FloatModel(std::vector<float>(200000, 0.5f))));
    fed_ = std::move(f.fed);
    channel_ = std::move(f.channel);
    alice_task_ = f.alice_task;
    bob_task_ = f.bob_task;
    blob_ = core::SerializeModel(FloatModel(std::vector<float>(200000, 1.0f)));
    header_ = HeaderFor("alice", alice_task_.ref, blob_);
    stub_ = RawStub(fed_->address());
  }

  // Alice sends the header and the first `n` bytes, then her connection drops (the call is
  // cancelled). Waits (bounded) until the coordinator holds those bytes.
  void BreakAfter(uint64_t n) {
    auto u = StartUpload(*stub_, header_, blob_.substr(0, n));
    uint64_t held = 0;
    // The bytes are in flight until the server read them: wait for them before breaking off.
    for (int i = 0; i < 200 && fed_->server->service().upload_stats().in_flight == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    u->ctx.TryCancel();
    EXPECT_EQ(u->writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
    for (int i = 0; i < 200 && held != n; ++i) {
      ASSERT_TRUE(QueryUpload(*stub_, header_, &held).ok());
      if (held != n) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(held, n) << "the coordinator should keep the bytes of the broken upload";
  }

  // Bob's result completes the round; the model must be the mean of alice's 1.0 and bob's 3.0.
  void ExpectRoundCompletesWithAlicesUpload() {
    ASSERT_OK(channel_->UploadResult(ClientId{"bob"},
                                     ResultFor(bob_task_, FloatModel(std::vector<float>(200000, 3.0f)), 1)));
    ASSERT_EQ(fed_->version(), 1u);
    EXPECT_EQ(Values(*fed_->coordinator->global_model()->weights), std::vector<float>(200000, 2.0f));
  }

  std::unique_ptr<Federation> fed_;
  std::unique_ptr<GrpcCoordinatorChannel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  core::TrainTask alice_task_, bob_task_;
  std::string blob_;
  v1::UploadHeader header_;
};

TEST_F(UploadResumeTest, BrokenUploadResumesFromTheBytesReceived) {
  const uint64_t cut = blob_.size() / 3;
  ASSERT_NO_FATAL_FAILURE(BreakAfter(cut));
  v1::UploadHeader resumed = header_;
  resumed.set_offset(cut);
  v1::UploadResponse resp;
  const grpc::Status s = RawUpload(*stub_, {HeaderMsg(resumed), DataMsg(blob_.substr(cut))}, &resp);
  ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_FALSE(resp.duplicate());
  EXPECT_EQ(fed_->server->service().upload_stats().resumed, 1u);
  uint64_t held = 1;
  ASSERT_TRUE(QueryUpload(*stub_, header_, &held).ok());
  EXPECT_EQ(held, 0u) << "a completed upload is not kept";
  ExpectRoundCompletesWithAlicesUpload();
}

TEST_F(UploadResumeTest, ResumeWithAnotherDigestOrSizeStartsOver) {
  const uint64_t cut = blob_.size() / 2;
  ASSERT_NO_FATAL_FAILURE(BreakAfter(cut));
  v1::UploadHeader other_sha = header_, other_size = header_;
  other_sha.set_sha256(core::Sha256Digest("another result"));
  other_size.set_total_bytes(blob_.size() + 4);
  for (const v1::UploadHeader* h : {&other_sha, &other_size}) {
    uint64_t held = 1;
    ASSERT_TRUE(QueryUpload(*stub_, *h, &held).ok());
    EXPECT_EQ(held, 0u);
    v1::UploadHeader resumed = *h;
    resumed.set_offset(cut);
    v1::UploadResponse resp;
    const grpc::Status s = RawUpload(*stub_, {HeaderMsg(resumed), DataMsg(blob_.substr(cut))}, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE) << s.error_message();
  }
  // Starting over (offset 0) with the whole blob is accepted.
  v1::UploadResponse resp;
  const grpc::Status s = RawUpload(*stub_, {HeaderMsg(header_), DataMsg(blob_)}, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(fed_->server->service().upload_stats().resumed, 0u);
  ExpectRoundCompletesWithAlicesUpload();
}

TEST_F(UploadResumeTest, AnotherClientCannotSeeOrResumeIt) {
  const uint64_t cut = blob_.size() / 2;
  ASSERT_NO_FATAL_FAILURE(BreakAfter(cut));
  v1::UploadHeader as_bob = header_;
  as_bob.set_client_id("bob");
  uint64_t held = 1;
  ASSERT_TRUE(QueryUpload(*stub_, as_bob, &held).ok());
  EXPECT_EQ(held, 0u) << "bob must not learn of alice's partial upload";
  as_bob.set_offset(cut);
  v1::UploadResponse resp;
  const grpc::Status s = RawUpload(*stub_, {HeaderMsg(as_bob), DataMsg(blob_.substr(cut))}, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE) << s.error_message();
  // Alice's bytes are still hers to resume.
  ASSERT_TRUE(QueryUpload(*stub_, header_, &held).ok());
  EXPECT_EQ(held, cut);
}

TEST_F(UploadResumeTest, BadOffsetsAreRefused) {
  struct Case {
    uint64_t offset;
    grpc::StatusCode code;
  };
  const uint64_t cut = 1000;
  ASSERT_NO_FATAL_FAILURE(BreakAfter(cut));
  for (const Case& c : {Case{cut + 1, grpc::StatusCode::OUT_OF_RANGE},           // beyond what is held
                        Case{blob_.size(), grpc::StatusCode::OUT_OF_RANGE},       // at the end, not held
                        Case{blob_.size() + 1, grpc::StatusCode::INVALID_ARGUMENT}}) {  // beyond the total
    v1::UploadHeader h = header_;
    h.set_offset(c.offset);
    v1::UploadResponse resp;
    const grpc::Status s = RawUpload(*stub_, {HeaderMsg(h)}, &resp);
    EXPECT_EQ(s.error_code(), c.code) << "offset " << c.offset << ": " << s.error_message();
  }
  // The refusals did not take the partial away: the honest resume still works.
  v1::UploadHeader resumed = header_;
  resumed.set_offset(cut);
  v1::UploadResponse resp;
  const grpc::Status s = RawUpload(*stub_, {HeaderMsg(resumed), DataMsg(blob_.substr(cut))}, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ExpectRoundCompletesWithAlicesUpload();
}

TEST_F(UploadResumeTest, ANewUploadFromTheStartReplacesTheKeptPart) {
  const uint64_t cut = blob_.size() / 2;
  ASSERT_NO_FATAL_FAILURE(BreakAfter(cut));
  uint64_t held = 0;
  ASSERT_TRUE(QueryUpload(*stub_, header_, &held).ok());
  ASSERT_EQ(held, cut);
  // A new channel call starts at 0 (the resume happens within one call's retries).
  ASSERT_OK(channel_->UploadResult(ClientId{"alice"}, ResultFor(alice_task_, FloatModel(std::vector<float>(200000, 1.0f)), 1)));
  ExpectRoundCompletesWithAlicesUpload();
}

TEST(UploadSheddingTest, OverTheStreamCapAnUploadIsShedWithAHintThenGetsThrough) {
  FederationOptions fo;
  fo.service.uploads.max_concurrent = 1;
  ASSERT_OK_AND_ASSIGN(AliceAndBob f, StartAliceAndBob(FloatModel(std::vector<float>(1000, 0.0f)), fo));
  auto& fed = f.fed;
  auto stub = RawStub(fed->address());

  // Alice's upload holds the only slot: header and half of her bytes, the rest later.
  const std::string alice_blob = core::SerializeModel(FloatModel(std::vector<float>(1000, 1.0f)));
  const v1::UploadHeader ah = HeaderFor("alice", f.alice_task.ref, alice_blob);
  auto alice = StartUpload(*stub, ah, alice_blob.substr(0, alice_blob.size() / 2));
  for (int i = 0; i < 200 && fed->server->service().upload_stats().in_flight == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(fed->server->service().upload_stats().in_flight, 1);

  // Bob's raw upload is shed at its header: UNAVAILABLE, the hint in metadata and message.
  const std::string bob_blob = core::SerializeModel(FloatModel(std::vector<float>(1000, 3.0f)));
  const v1::UploadHeader bh = HeaderFor("bob", f.bob_task.ref, bob_blob);
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::UploadResponse resp;
    auto writer = stub->UploadResult(&ctx, &resp);
    writer->Write(HeaderMsg(bh));
    writer->WritesDone();
    const grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("retry after"));
    const auto& trailers = ctx.GetServerTrailingMetadata();
    auto it = trailers.find(core::kRetryAfterMetadata);
    ASSERT_NE(it, trailers.end());
    EXPECT_GT(std::stoi(std::string(it->second.data(), it->second.size())), 0);
  }

  // Bob's channel, with no normal retry at all, is shed and honours the hint until the slot frees.
  ChannelOptions one_attempt = QuickChannelOptions();
  one_attempt.retry.max_attempts = 1;
  ASSERT_OK_AND_ASSIGN(auto bob_channel, Connect(fed->address(), one_attempt));
  absl::StatusOr<core::UploadAck> bob_ack = absl::UnknownError("not run");
  std::thread bob([&] {
    bob_ack = bob_channel->UploadResult(ClientId{"bob"}, ResultFor(f.bob_task, FloatModel(std::vector<float>(1000, 3.0f)), 1));
  });
  for (int i = 0; i < 500 && fed->server->service().upload_stats().shed < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(fed->server->service().upload_stats().shed, 2u) << "bob's channel should have been shed too";
  alice->writer->Write(DataMsg(alice_blob.substr(alice_blob.size() / 2)));
  alice->writer->WritesDone();
  const grpc::Status alice_status = alice->writer->Finish();
  bob.join();
  EXPECT_TRUE(alice_status.ok()) << alice_status.error_message();
  ASSERT_OK(bob_ack);
  ASSERT_EQ(fed->version(), 1u);
  EXPECT_EQ(Values(*fed->coordinator->global_model()->weights), std::vector<float>(1000, 2.0f));
  EXPECT_EQ(fed->server->service().upload_stats().in_flight, 0);
}

// A download that reads its first chunk and then stops reading.
struct StalledDownload {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::ModelChunk>> reader;
  v1::ModelChunk chunk;
  bool got_first = false;
  // Reads what is left (after a cancellation) and returns the call's status.
  grpc::Status Drain() {
    while (reader->Read(&chunk)) {
    }
    return reader->Finish();
  }
};

std::unique_ptr<StalledDownload> StallDownload(v1::Coordinator::Stub& stub, const std::string& client,
                                               const core::RoundRef& ref) {
  auto d = std::make_unique<StalledDownload>();
  SetDeadline(d->ctx);
  v1::DownloadModelRequest req;
  req.set_client_id(client);
  core::ToProto(ref, req.mutable_ref());
  d->reader = stub.DownloadModel(&d->ctx, req);
  d->got_first = d->reader->Read(&d->chunk);
  return d;
}

// A federation whose coordinator serves one download at a time, of a 16 MB model in 64 KiB
// chunks: more than the transport buffers while a reader stalls.
FederationOptions OneDownloadAtATime() {
  FederationOptions fo;
  fo.service.max_concurrent_downloads = 1;
  fo.service.chunk_bytes = 64 << 10;
  return fo;
}
const Layout kSixteenMegabytes = {{"w", {4000000}}};

TEST(DownloadSheddingTest, OverTheCapADownloadIsRefusedWithAHintAndTheChannelGetsThrough) {
  ASSERT_OK_AND_ASSIGN(AliceAndBob f, StartAliceAndBob(PatternModel(kSixteenMegabytes), OneDownloadAtATime()));
  auto stub = RawStub(f.fed->address());
  const coordinator::StreamGate& gate = f.fed->server->service().download_gate();

  // Alice reads one chunk and stalls: her download holds the only place.
  auto alice = StallDownload(*stub, "alice", f.alice_task.ref);
  ASSERT_TRUE(alice->got_first);
  ASSERT_EQ(gate.in_flight(), 1);

  // Bob's is refused: UNAVAILABLE, with the hint in the trailing metadata.
  RawDownload refused = Download(*stub, "bob", f.bob_task.ref, 0);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.status.error_message();
  EXPECT_THAT(refused.status.error_message(), HasSubstr("retry after"));
  EXPECT_TRUE(refused.data.empty());

  // Bob's channel, without any normal retry, waits as told and gets the model once alice is done.
  ChannelOptions one_attempt = QuickChannelOptions();
  one_attempt.retry.max_attempts = 1;
  ASSERT_OK_AND_ASSIGN(auto bob_channel, Connect(f.fed->address(), one_attempt));
  absl::StatusOr<core::ModelWeights> bob = absl::UnknownError("not run");
  std::thread t([&] { bob = bob_channel->DownloadModel(ClientId{"bob"}, f.bob_task); });
  for (int i = 0; i < 500 && gate.refused() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(gate.refused(), 2u);
  alice->ctx.TryCancel();
  alice->Drain().ok();
  t.join();
  ASSERT_OK(bob);
  ExpectBitExact(*bob, *f.fed->coordinator->global_model()->weights);
  EXPECT_EQ(gate.in_flight(), 0);
}

TEST(UploadSheddingTest, AStalledUploadLosesItsSlotButKeepsItsBytes) {
  FederationOptions fo;
  fo.service.uploads.max_concurrent = 1;
  fo.service.stall_timeout = absl::Milliseconds(300);
  ASSERT_OK_AND_ASSIGN(AliceAndBob f, StartAliceAndBob(FloatModel(std::vector<float>(1000, 0.0f)), fo));
  auto stub = RawStub(f.fed->address());
  const std::string blob = core::SerializeModel(FloatModel(std::vector<float>(1000, 1.0f)));
  const v1::UploadHeader h = HeaderFor("alice", f.alice_task.ref, blob);
  const uint64_t cut = blob.size() / 2;
  auto stalled = StartUpload(*stub, h, blob.substr(0, cut));  // then nothing more

  // Within a few ticker periods the coordinator cancels it, and keeps its bytes.
  uint64_t held = 0;
  for (int i = 0; i < 300 && held != cut; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(QueryUpload(*stub, h, &held).ok());
  }
  EXPECT_EQ(held, cut);
  EXPECT_EQ(f.fed->server->service().upload_stats().in_flight, 0);
  EXPECT_EQ(stalled->writer->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // The slot is free for bob, and alice resumes.
  ASSERT_OK(f.channel->UploadResult(ClientId{"bob"}, ResultFor(f.bob_task, FloatModel(std::vector<float>(1000, 3.0f)), 1)));
  v1::UploadHeader resumed = h;
  resumed.set_offset(cut);
  v1::UploadResponse resp;
  const grpc::Status s = RawUpload(*stub, {HeaderMsg(resumed), DataMsg(blob.substr(cut))}, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(f.fed->version(), 1u);
  EXPECT_EQ(Values(*f.fed->coordinator->global_model()->weights), std::vector<float>(1000, 2.0f));
}

TEST(DownloadSheddingTest, AStalledDownloadLosesItsPlace) {
  FederationOptions fo = OneDownloadAtATime();
  fo.service.stall_timeout = absl::Milliseconds(300);
  ASSERT_OK_AND_ASSIGN(AliceAndBob f, StartAliceAndBob(PatternModel(kSixteenMegabytes), fo));
  auto stub = RawStub(f.fed->address());
  const coordinator::StreamGate& gate = f.fed->server->service().download_gate();
  auto alice = StallDownload(*stub, "alice", f.alice_task.ref);
  ASSERT_TRUE(alice->got_first);
  for (int i = 0; i < 300 && gate.in_flight() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(gate.in_flight(), 0) << "the coordinator should cancel a download that makes no progress";
  ASSERT_OK_AND_ASSIGN(core::ModelWeights bob, f.channel->DownloadModel(ClientId{"bob"}, f.bob_task));
  ExpectBitExact(bob, *f.fed->coordinator->global_model()->weights);
  EXPECT_EQ(alice->Drain().error_code(), grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace tessera
