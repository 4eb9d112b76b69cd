// The serving transports over loopback: HTTP/JSON (cpp-httplib) and gRPC (tessera.v1.Predictor)
// in front of one PredictionService with fake models, including hot swaps under load.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/serving/grpc/predictor_server.h"
#include "client/serving/http_server.h"
#include "client/serving/prediction_service.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tessera/v1/tessera.grpc.pb.h"
#include "tests/testing/serving_fakes.h"
#include "tests/testing/status_macros.h"

namespace tessera::client::serving {
namespace {

using nlohmann::json;
using testutil::FakeLinearPredictor;
using testutil::FakeSnapshot;

constexpr int64_t kFeatures = 8;
constexpr int kClasses = 4;
constexpr int64_t kMaxBatch = 16;

ServingOptions Options() {
  ServingOptions o;
  o.num_features = kFeatures;
  o.num_classes = kClasses;
  o.max_batch = kMaxBatch;  // identity preprocessing: the fake sees the raw inputs
  return o;
}

// Inputs of request `i`: distinct per request so that a mixed-up answer shows.
std::vector<float> InputsOf(int i, int64_t batch) {
  std::vector<float> x(static_cast<size_t>(batch * kFeatures));
  for (size_t j = 0; j < x.size(); ++j) x[j] = static_cast<float>((i * 31 + static_cast<int>(j) * 7) % 97) / 8.0f;
  return x;
}

std::vector<float> Expected(core::ModelVersion version, const std::vector<float>& x, int64_t batch) {
  return FakeLinearPredictor(kFeatures, kClasses, static_cast<float>(version)).Predict(x, batch).value();
}

std::string InstancesJson(const std::vector<float>& x, int64_t batch) {
  json instances = json::array();
  for (int64_t b = 0; b < batch; ++b) {
    instances.push_back(std::vector<float>(x.begin() + b * kFeatures, x.begin() + (b + 1) * kFeatures));
  }
  return json{{"instances", instances}}.dump();
}

class ServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = PredictionService::Create(Options()).value();
    HttpServerOptions http_options;
    http_options.max_body_bytes = 64 * 1024;
    http_ = HttpServer::Start(service_.get(), "127.0.0.1:0", http_options).value();
    grpc_ = PredictorServer::Start(service_.get(), "127.0.0.1:0").value();
    grpc_channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_->port()), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    grpc_->Shutdown();
    http_->Shutdown();
  }

  httplib::Client Http() const {
    httplib::Client c("127.0.0.1", http_->port());
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    return c;
  }
  std::unique_ptr<v1::Predictor::Stub> Stub() const { return v1::Predictor::NewStub(grpc_channel_); }

  static grpc::Status GrpcPredict(v1::Predictor::Stub& stub, int64_t batch, int64_t features, const std::string& bytes,
                                  v1::PredictResponse* resp) {
    v1::PredictRequest req;
    req.set_batch(batch);
    req.set_features(features);
    req.set_inputs(bytes);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub.Predict(&ctx, req, resp);
  }
  static std::string Bytes(const std::vector<float>& x) {
    return std::string(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
  }

  std::unique_ptr<PredictionService> service_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<PredictorServer> grpc_;
  std::shared_ptr<grpc::Channel> grpc_channel_;
};

// Status and {"error": "..."} body of an HTTP answer.
void ExpectJsonError(const httplib::Result& r, int status, const std::string& what) {
  ASSERT_TRUE(r) << what << ": no response (" << httplib::to_string(r.error()) << ")";
  EXPECT_EQ(r->status, status) << what << ": " << r->body;
  json body = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(body.is_object() && body.contains("error") && body["error"].is_string()) << what << ": " << r->body;
  EXPECT_FALSE(body["error"].get<std::string>().empty()) << what;
}

TEST_F(ServingTest, HttpAnswersPredictModelAndHealthz) {
  auto c = Http();
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);  // no model yet
  ExpectJsonError(c.Get("/v1/model"), 503, "model before the first swap");
  const std::vector<float> x = InputsOf(1, 3);
  ExpectJsonError(c.Post("/v1/predict", InstancesJson(x, 3), "application/json"), 503, "predict before the first swap");

  ASSERT_OK(service_->Swap(FakeSnapshot(5, kFeatures, kClasses)));
  health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["model_version"], 5);
  auto model = c.Get("/v1/model");
  ASSERT_TRUE(model);
  ASSERT_EQ(model->status, 200);
  json m = json::parse(model->body);
  EXPECT_EQ(m["model_version"], 5);
  EXPECT_EQ(m["round"], 5);
  EXPECT_DOUBLE_EQ(m["metrics"]["eval_accuracy"].get<double>(), 0.55);
  EXPECT_EQ(m["num_features"], kFeatures);
  EXPECT_EQ(m["max_batch"], kMaxBatch);

  auto r = c.Post("/v1/predict", InstancesJson(x, 3), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json p = json::parse(r->body);
  EXPECT_EQ(p["model_version"], 5);
  const std::vector<float> expected = Expected(5, x, 3);
  const std::vector<int64_t> classes = ArgmaxRows(expected, kClasses);
  ASSERT_EQ(p["predictions"].size(), 3u);
  for (int b = 0; b < 3; ++b) {
    EXPECT_EQ(p["predictions"][b]["logits"].get<std::vector<float>>(),
              std::vector<float>(expected.begin() + b * kClasses, expected.begin() + (b + 1) * kClasses));
    EXPECT_EQ(p["predictions"][b]["class"].get<int64_t>(), classes[b]);
  }
}

TEST_F(ServingTest, HttpRefusesBadRequestsWithJsonErrors) {
  ASSERT_OK(service_->Swap(FakeSnapshot(1, kFeatures, kClasses)));
  auto c = Http();
  const std::string row = json(std::vector<float>(kFeatures, 1.0f)).dump();
  auto post = [&](const std::string& body) { return c.Post("/v1/predict", body, "application/json"); };
  ExpectJsonError(post("{\"instances\": [[1, 2"), 400, "truncated JSON");
  ExpectJsonError(post("not json"), 400, "not JSON");
  ExpectJsonError(post("[1, 2, 3]"), 400, "not an object");
  ExpectJsonError(post("{\"inputs\": []}"), 400, "no instances");
  ExpectJsonError(post("{\"instances\": []}"), 400, "empty batch");
  ExpectJsonError(post("{\"instances\": [[1, 2, 3]]}"), 400, "wrong feature count");
  ExpectJsonError(post("{\"instances\": [" + row + ", [1]]}"), 400, "ragged batch");
  ExpectJsonError(post("{\"instances\": [[[1, 2, 3, 4, 5, 6, 7, 8]]]}"), 400, "nested instance");
  ExpectJsonError(post("{\"instances\": [[1, 2, 3, \"4\", 5, 6, 7, 8]]}"), 400, "a string value");
  ExpectJsonError(post("{\"instances\": [[1, 2, 3, NaN, 5, 6, 7, 8]]}"), 400, "NaN (not JSON)");
  ExpectJsonError(post("{\"instances\": [[1, 2, 3, 1e39, 5, 6, 7, 8]]}"), 400, "beyond float32");
  ExpectJsonError(post("{\"instances\": [[1, 2, 3, 1e999, 5, 6, 7, 8]]}"), 400, "beyond double");
  std::string too_many = "{\"instances\": [";
  for (int i = 0; i <= kMaxBatch; ++i) too_many += (i ? "," : "") + row;
  ExpectJsonError(post(too_many + "]}"), 400, "batch above the cap");
  ExpectJsonError(post("{\"instances\": [" + row + "], \"pad\": \"" + std::string(70 * 1024, 'x') + "\"}"), 413,
                  "body above the limit");
  // curl's default type for --data: cpp-httplib caps such bodies at 8 KiB; the error says what to do.
  auto form = c.Post("/v1/predict", "{\"instances\": [" + row + "], \"pad\": \"" + std::string(9000, 'x') + "\"}",
                     "application/x-www-form-urlencoded");
  ExpectJsonError(form, 413, "form-encoded body above 8 KiB");
  EXPECT_NE(form->body.find("application/json"), std::string::npos) << form->body;
  ExpectJsonError(c.Get("/v1/nothing"), 404, "unknown path");
  ExpectJsonError(c.Post("/v2/predict", "{}", "application/json"), 404, "unknown path (POST)");
  ExpectJsonError(c.Get("/v1/predict"), 405, "GET on predict");
  // Still serving.
  auto ok = post("{\"instances\": [" + row + "]}");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST_F(ServingTest, GrpcPredictsAndRefusesBadRequests) {
  auto stub = Stub();
  const std::vector<float> x = InputsOf(2, 2);
  v1::PredictResponse resp;
  EXPECT_EQ(GrpcPredict(*stub, 2, kFeatures, Bytes(x), &resp).error_code(), grpc::StatusCode::UNAVAILABLE);

  ASSERT_OK(service_->Swap(FakeSnapshot(3, kFeatures, kClasses)));
  grpc::Status s = GrpcPredict(*stub, 2, kFeatures, Bytes(x), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.model_version(), 3u);
  EXPECT_EQ(resp.num_classes(), kClasses);
  std::vector<float> logits(resp.logits().size() / sizeof(float));
  std::memcpy(logits.data(), resp.logits().data(), resp.logits().size());
  EXPECT_EQ(logits, Expected(3, x, 2));
  EXPECT_EQ(std::vector<int64_t>(resp.classes().begin(), resp.classes().end()), ArgmaxRows(logits, kClasses));

  std::vector<float> nan = x;
  nan[5] = std::nanf("");
  struct Case {
    const char* what;
    int64_t batch, features;
    std::string bytes;
  };
  const std::vector<Case> bad = {
      {"wrong feature count", 2, kFeatures - 1, Bytes(x)},
      {"bytes for 1 example, batch 2", 2, kFeatures, Bytes(InputsOf(2, 1))},
      {"bytes not a multiple of 4", 1, kFeatures, Bytes(InputsOf(2, 1)) + "x"},
      {"empty batch", 0, kFeatures, ""},
      {"negative batch", -3, kFeatures, ""},
      {"batch above the cap", kMaxBatch + 1, kFeatures, Bytes(InputsOf(2, kMaxBatch + 1))},
      {"huge declared batch", int64_t{1} << 60, kFeatures, Bytes(x)},
      {"NaN", 2, kFeatures, Bytes(nan)},
  };
  for (const Case& c : bad) {
    EXPECT_EQ(GrpcPredict(*stub, c.batch, c.features, c.bytes, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.what;
  }
  // A message above the largest valid request is refused by gRPC itself.
  EXPECT_EQ(GrpcPredict(*stub, 1, kFeatures, std::string(1 << 20, '\0'), &resp).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(GrpcPredict(*stub, 2, kFeatures, Bytes(x), &resp).ok());  // still serving
}

// Threads hammer both transports while the main thread swaps models in: no request fails, and
// each response comes whole from one of the swapped-in versions.
TEST_F(ServingTest, HotSwapUnderConcurrentHttpAndGrpcLoadNeverMixesVersions) {
  ASSERT_OK(service_->Swap(FakeSnapshot(1, kFeatures, kClasses)));
  constexpr int kSwaps = 40;
  constexpr int kThreadsPerTransport = 3;
  std::atomic<bool> done{false};
  std::atomic<int> answered{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::set<core::ModelVersion> seen;
  auto check = [&](core::ModelVersion version, const std::vector<float>& x, int64_t batch,
                   const std::vector<float>& logits) {
    std::lock_guard lock(mu);
    seen.insert(version);
    if (version < 1 || version > kSwaps + 1) failures.push_back("unknown version " + std::to_string(version));
    if (logits != Expected(version, x, batch)) failures.push_back("logits not of version " + std::to_string(version));
  };
  auto fail = [&](std::string what) {
    std::lock_guard lock(mu);
    failures.push_back(std::move(what));
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreadsPerTransport; ++t) {
    threads.emplace_back([&, t] {
      auto c = Http();
      for (int i = 0; !done; ++i) {
        const int64_t batch = 1 + (i + t) % 4;
        const std::vector<float> x = InputsOf(i * 10 + t, batch);
        auto r = c.Post("/v1/predict", InstancesJson(x, batch), "application/json");
        if (!r || r->status != 200) {
          fail("HTTP request failed: " + (r ? r->body : httplib::to_string(r.error())));
          continue;
        }
        json p = json::parse(r->body);
        std::vector<float> logits;
        for (const auto& pred : p["predictions"]) {
          auto row = pred["logits"].get<std::vector<float>>();
          logits.insert(logits.end(), row.begin(), row.end());
        }
        check(p["model_version"].get<core::ModelVersion>(), x, batch, logits);
        ++answered;
      }
    });
    threads.emplace_back([&, t] {
      auto stub = Stub();
      for (int i = 0; !done; ++i) {
        const int64_t batch = 1 + (i + t) % 4;
        const std::vector<float> x = InputsOf(i * 10 + t + 5, batch);
        v1::PredictResponse resp;
        grpc::Status s = GrpcPredict(*stub, batch, kFeatures, Bytes(x), &resp);
        if (!s.ok()) {
          fail("gRPC request failed: " + s.error_message());
          continue;
        }
        std::vector<float> logits(resp.logits().size() / sizeof(float));
        std::memcpy(logits.data(), resp.logits().data(), resp.logits().size());
        check(resp.model_version(), x, batch, logits);
        ++answered;
      }
    });
  }
  // Swap after every few answers (so swaps interleave with requests), bounded in time.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (core::ModelVersion v = 2; v <= kSwaps + 1 && std::chrono::steady_clock::now() < give_up; ++v) {
    const int target = answered.load() + 5;
    while (answered.load() < target && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
    ASSERT_OK(service_->Swap(FakeSnapshot(v, kFeatures, kClasses)));
  }
  const int target = answered.load() + 20;
  while (answered.load() < target && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  done = true;
  for (auto& th : threads) th.join();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  EXPECT_EQ(service_->Current()->version, kSwaps + 1u);
  EXPECT_GE(seen.size(), 10u) << "the load should have seen many versions";
  EXPECT_GE(answered.load(), 5 * kSwaps);
}

TEST(ServingStartupTest, RefusesATakenPortAndMalformedAddresses) {
  auto service = PredictionService::Create(Options()).value();
  auto http = HttpServer::Start(service.get(), "127.0.0.1:0").value();
  auto grpc_server = PredictorServer::Start(service.get(), "127.0.0.1:0").value();
  const std::string http_addr = "127.0.0.1:" + std::to_string(http->port());
  const std::string grpc_addr = "127.0.0.1:" + std::to_string(grpc_server->port());
  for (const std::string& taken : {http_addr, grpc_addr}) {
    auto h = HttpServer::Start(service.get(), taken);
    EXPECT_CODE(h, absl::StatusCode::kUnavailable);
    EXPECT_NE(h.status().message().find("cannot listen on " + taken + ": Address already in use"), std::string::npos)
        << h.status();
    auto g = PredictorServer::Start(service.get(), taken);
    EXPECT_CODE(g, absl::StatusCode::kUnavailable);
    EXPECT_NE(g.status().message().find("cannot listen on " + taken + ": Address already in use"), std::string::npos)
        << g.status();
  }
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", ":80"}) {
    SCOPED_TRACE(bad);
    EXPECT_CODE(HttpServer::Start(service.get(), bad), absl::StatusCode::kInvalidArgument);
    EXPECT_CODE(PredictorServer::Start(service.get(), bad), absl::StatusCode::kInvalidArgument);
  }
  HttpServerOptions labels;
  labels.class_labels = {"only one"};
  EXPECT_CODE(HttpServer::Start(service.get(), "127.0.0.1:0", labels), absl::StatusCode::kInvalidArgument);
  grpc_server->Shutdown();
  http->Shutdown();
}

}  // namespace
}  // namespace tessera::client::serving
