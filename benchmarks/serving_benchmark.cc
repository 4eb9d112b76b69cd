// Prediction latency of a client's serving stack over loopback, next to the bare predictor's
// latency measured in the same run: the McMahan et al. 2NN (MLP 784-200-200-10) on libtorch,
// Fashion-MNIST-shaped raw inputs.
//
//   bare        TorchPredictor::Predict (libtorch, weights loaded once, 1 intra-op thread)
//   service     PredictionService::Predict (validation + preprocessing + the above)
//   http        POST /v1/predict, one keep-alive connection, JSON both ways
//   grpc        Predictor.Predict, one channel, raw float32 bytes both ways
//
// Each latency figure: sequential requests for kSeconds (at most kMaxRequests); throughput: 2
// client threads for kSeconds. Bounded: about 30 s in all.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "benchmarks/bench_util.h"
#include "client/data/idx_reader.h"
#include "client/serving/grpc/predictor_server.h"
#include "client/serving/http_server.h"
#include "client/serving/prediction_service.h"
#include "client/torch/torch_predictor.h"
#include "nlohmann/json.hpp"
#include "tessera/v1/tessera.grpc.pb.h"

namespace tessera {
namespace {

namespace serving = client::serving;
using Clock = std::chrono::steady_clock;

constexpr double kSeconds = 1.5;
constexpr int kMaxRequests = 20000;
constexpr int64_t kFeatures = 784;

struct Figures {
  double p50_us = 0, p99_us = 0;
  int n = 0;
};

// Latency percentiles of `call` repeated sequentially; `call` returns false on failure.
Figures Measure(const std::function<bool()>& call) {
  for (int i = 0; i < 20; ++i) call();  // warm-up
  std::vector<double> us;
  const auto end = Clock::now() + std::chrono::duration<double>(kSeconds);
  while (Clock::now() < end && static_cast<int>(us.size()) < kMaxRequests) {
    const auto t0 = Clock::now();
    if (!call()) {
      std::fprintf(stderr, "request failed\n");
      std::exit(1);
    }
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)], static_cast<int>(us.size())};
}

// Requests per second of `threads` threads, each with its own `make_call()`.
double Throughput(int threads, const std::function<std::function<bool()>()>& make_call) {
  std::atomic<int64_t> count{0};
  std::atomic<bool> failed{false};
  const auto end = Clock::now() + std::chrono::duration<double>(kSeconds);
  std::vector<std::thread> pool;
  const auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      auto call = make_call();
      while (Clock::now() < end) {
        if (!call()) failed = true;
        ++count;
      }
    });
  }
  for (auto& th : pool) th.join();
  if (failed) {
    std::fprintf(stderr, "request failed\n");
    std::exit(1);
  }
  return static_cast<double>(count) / std::chrono::duration<double>(Clock::now() - t0).count();
}

void Print(const char* name, int64_t batch, const Figures& f, const Figures& bare, double rps) {
  std::printf("%-8s batch %3lld: p50 %8.1f us  p99 %8.1f us  (%5d requests)  p50/bare %5.2fx", name,
              static_cast<long long>(batch), f.p50_us, f.p99_us, f.n, f.p50_us / bare.p50_us);
  if (rps > 0) std::printf("  throughput (2 threads) %7.0f req/s = %8.0f examples/s", rps, rps * batch);
  std::printf("\n");
}

int Main() {
  client::torch::ConfigureTorchThreads(1);
  const client::torch::ModelSpec spec{"mlp", {1, 28, 28}, 10};
  auto weights = std::make_shared<const core::ModelWeights>(client::torch::InitialWeights(spec, 1).value());
  auto predictor = std::shared_ptr<const serving::BatchPredictor>(client::torch::TorchPredictor::Create(spec, *weights).value());

  serving::ServingOptions options;
  options.num_features = kFeatures;
  options.num_classes = 10;
  options.preprocessing = client::FashionMnistPreprocessing();
  options.max_batch = 256;
  auto service = serving::PredictionService::Create(options).value();
  auto snapshot = std::make_shared<serving::ModelSnapshot>();
  snapshot->version = 1;
  snapshot->round = 1;
  snapshot->weights = weights;
  snapshot->predictor = predictor;
  if (!service->Swap(snapshot).ok()) return 1;
  auto http = serving::HttpServer::Start(service.get(), "127.0.0.1:0").value();
  auto grpc_server = serving::PredictorServer::Start(service.get(), "127.0.0.1:0").value();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_server->port()), grpc::InsecureChannelCredentials());

  std::printf("serving_benchmark: mlp 784-200-200-10 (199,210 parameters), BLAS %s, 1 intra-op thread, load %s\n",
              client::torch::BlasBackendName().c_str(), bench::LoadAverage().c_str());
  for (int64_t batch : {int64_t{1}, int64_t{32}}) {
    std::vector<float> raw(static_cast<size_t>(batch * kFeatures));
    for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<float>((i * 37) % 256);
    std::vector<float> pre(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      const auto& p = options.preprocessing;
      pre[i] = static_cast<float>((raw[i] * p.scale - p.mean) / p.stddev);
    }
    nlohmann::json instances = nlohmann::json::array();
    for (int64_t b = 0; b < batch; ++b) {
      instances.push_back(std::vector<float>(raw.begin() + b * kFeatures, raw.begin() + (b + 1) * kFeatures));
    }
    const std::string body = nlohmann::json{{"instances", instances}}.dump();
    v1::PredictRequest req;
    req.set_batch(batch);
    req.set_features(kFeatures);
    req.set_inputs(std::string(reinterpret_cast<const char*>(raw.data()), raw.size() * sizeof(float)));

    auto bare_call = [&] { return predictor->Predict(pre, batch).ok(); };
    auto service_call = [&] { return service->Predict(raw, batch).ok(); };
    auto make_http = [&]() -> std::function<bool()> {
      auto c = std::make_shared<httplib::Client>("127.0.0.1", http->port());
      c->set_keep_alive(true);
      c->set_tcp_nodelay(true);
      return [c, &body] {
        auto r = c->Post("/v1/predict", body, "application/json");
        return r && r->status == 200;
      };
    };
    auto make_grpc = [&]() -> std::function<bool()> {
      std::shared_ptr<v1::Predictor::Stub> stub = v1::Predictor::NewStub(channel);
      return [stub, &req] {
        grpc::ClientContext ctx;
        v1::PredictResponse resp;
        return stub->Predict(&ctx, req, &resp).ok();
      };
    };
    const Figures bare = Measure(bare_call);
    Print("bare", batch, bare, bare, Throughput(2, [&] { return std::function<bool()>(bare_call); }));
    Print("service", batch, Measure(service_call), bare, 0);
    Print("http", batch, Measure(make_http()), bare, Throughput(2, make_http));
    Print("grpc", batch, Measure(make_grpc()), bare, Throughput(2, make_grpc));
  }
  grpc_server->Shutdown();
  http->Shutdown();
  return 0;
}

}  // namespace
}  // namespace tessera

int main() { return tessera::Main(); }
