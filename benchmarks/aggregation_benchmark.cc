// Streaming FedAvg against the machine's memory bandwidth, measured in the same run.
//
// Prints (a) a STREAM-style triad a[i] = b[i] + s * c[i] over float32 arrays (12 bytes counted
// per element) with 1 and 2 threads, (b) FedAvgAggregator throughput over 10 and 100 distinct
// updates of the McMahan CNN's 1,663,370 floats (bytes of updates consumed per second), with
// 1 thread and with 2 threads that each fill their own aggregator and merge at the end, and
// (c) the ratio of each FedAvg figure to the triad with the same number of threads. The goal is
// FedAvg >= 0.5 x triad. Every figure is the best of several repetitions, which interleave the
// triad and FedAvg; all buffers are touched before timing so page faults are not measured.
//
// Threads: the timed regions spawn std::threads that share nothing but read-only updates.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "benchmarks/bench_util.h"
#include "aggregation/fedavg.h"
#include "core/tensor.h"

namespace tessera::aggregation {
namespace {

using Clock = std::chrono::steady_clock;
using core::DType;
using core::ModelWeights;
using core::NamedTensor;

constexpr int64_t kCnnParameters = 1'663'370;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

using bench::LoadAverage;

// Runs fn(0), ..., fn(threads - 1) on `threads` threads (the caller's thread runs fn(0)).
void RunOnThreads(int threads, const std::function<void(int)>& fn) {
  std::vector<std::thread> workers;
  for (int t = 1; t < threads; ++t) workers.emplace_back(fn, t);
  fn(0);
  for (auto& w : workers) w.join();
}

// The McMahan et al. CNN's state-dict layout (conv 5x5x32, conv 5x5x64, fc 3136->512, fc 512->10).
ModelWeights CnnLayout() {
  ModelWeights m;
  m.tensors.emplace_back("conv1.weight", std::vector<int64_t>{32, 1, 5, 5});
  m.tensors.emplace_back("conv1.bias", std::vector<int64_t>{32});
  m.tensors.emplace_back("conv2.weight", std::vector<int64_t>{64, 32, 5, 5});
  m.tensors.emplace_back("conv2.bias", std::vector<int64_t>{64});
  m.tensors.emplace_back("fc1.weight", std::vector<int64_t>{512, 3136});
  m.tensors.emplace_back("fc1.bias", std::vector<int64_t>{512});
  m.tensors.emplace_back("fc2.weight", std::vector<int64_t>{10, 512});
  m.tensors.emplace_back("fc2.bias", std::vector<int64_t>{10});
  return m;
}

// A CNN-shaped update with distinct, cheap-to-make values; writing every element pre-faults it.
ModelWeights MakeUpdate(int k) {
  ModelWeights m = CnnLayout();
  bench::FillDistinct(m, k);
  return m;
}

double Weight(int k) { return 600.0 + 7.0 * k; }

// Seconds of one triad pass over the arrays with `threads` threads, each taking a contiguous
// part.
double TriadSeconds(std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& c,
                    int threads) {
  const size_t n = a.size();
  const float s = 3.0f;
  const auto start = Clock::now();
  RunOnThreads(threads, [&](int t) {
    const size_t begin = n * t / threads;
    const size_t end = n * (t + 1) / threads;
    float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    const float* __restrict pc = c.data();
    for (size_t i = begin; i < end; ++i) pa[i] = pb[i] + s * pc[i];
  });
  const double seconds = Seconds(start);
  volatile float sink = a[n / 2];  // keeps the stores observable
  (void)sink;
  return seconds;
}

// Seconds to fold updates[0, count) into FedAvg with `threads` threads: each thread accumulates
// a contiguous share into its own aggregator; the timed region includes the merge and Report.
// The aggregators are built (their accumulators zero-filled, so faulted in) before timing.
double FedAvgSeconds(const std::vector<ModelWeights>& updates, int count, int threads,
                     ModelWeights* result) {
  std::vector<FedAvgAggregator> aggs;
  aggs.reserve(threads);
  for (int t = 0; t < threads; ++t) aggs.emplace_back(updates[0]);
  std::atomic<bool> ok = true;
  const auto start = Clock::now();
  RunOnThreads(threads, [&](int t) {
    for (int k = count * t / threads; k < count * (t + 1) / threads; ++k) {
      if (!aggs[t].Accumulate({updates[k], Weight(k)}).ok()) ok = false;
    }
  });
  for (int t = 1; t < threads; ++t) {
    if (!aggs[0].MergeWith(std::move(aggs[t])).ok()) ok = false;
  }
  auto report = std::move(aggs[0]).Report();
  const double seconds = Seconds(start);
  if (!ok || !report.ok()) {
    std::fprintf(stderr, "aggregation failed\n");
    std::exit(1);
  }
  *result = std::move(report).value();
  return seconds;
}

int Main() {
  constexpr int kReps = 15;
  constexpr size_t kTriadBytes = size_t{128} << 20;  // per array
  constexpr int kCounts[] = {10, 100};
  std::printf("# Streaming FedAvg vs memory triad (best of %d; GB/s = 1e9 bytes/s)\n", kReps);
  std::printf("# hardware threads: %u, load average at start: %s\n",
              std::thread::hardware_concurrency(), LoadAverage().c_str());

  // Filling every buffer faults its pages in before anything is timed.
  const size_t n = kTriadBytes / sizeof(float);
  std::vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
  std::vector<ModelWeights> updates;
  updates.reserve(100);
  for (int k = 0; k < 100; ++k) updates.push_back(MakeUpdate(k));
  if (updates[0].num_elements() != kCnnParameters) {
    std::fprintf(stderr, "CNN layout has %lld parameters\n",
                 static_cast<long long>(updates[0].num_elements()));
    return 1;
  }
  std::printf("# triad: a = b + s*c over 3 x %zu MiB float32 arrays, 12 bytes per element\n",
              kTriadBytes >> 20);
  std::printf(
      "# fedavg: 100 distinct updates of %lld floats (%.2f MB, %zu tensors), "
      "bytes of updates consumed per second\n",
      static_cast<long long>(kCnnParameters), updates[0].byte_size() / 1e6,
      updates[0].tensors.size());

  // Repetitions interleave the triad and FedAvg, so that load from other processes on this
  // shared machine falls on both sides of each ratio alike.
  double best_triad[3] = {1e30, 1e30, 1e30};
  double best_fedavg[2][3] = {{1e30, 1e30, 1e30}, {1e30, 1e30, 1e30}};
  ModelWeights ten_update_result;
  ModelWeights scratch;
  for (int r = 0; r < kReps; ++r) {
    for (int threads : {1, 2}) {
      best_triad[threads] = std::min(best_triad[threads], TriadSeconds(a, b, c, threads));
      for (int i = 0; i < 2; ++i) {
        ModelWeights* out = (i == 0 && threads == 1) ? &ten_update_result : &scratch;
        best_fedavg[i][threads] =
            std::min(best_fedavg[i][threads], FedAvgSeconds(updates, kCounts[i], threads, out));
      }
    }
  }

  double triad_gbps[3] = {0, 0, 0};
  for (int threads : {1, 2}) {
    triad_gbps[threads] = 12.0 * static_cast<double>(n) / best_triad[threads] / 1e9;
    std::printf("triad_%dthread: %.1f GB/s\n", threads, triad_gbps[threads]);
  }
  bool goal_met = true;
  for (int i = 0; i < 2; ++i) {
    for (int threads : {1, 2}) {
      const double seconds = best_fedavg[i][threads];
      const double gbps = 4.0 * static_cast<double>(kCnnParameters) * kCounts[i] / seconds / 1e9;
      const double ratio = gbps / triad_gbps[threads];
      goal_met = goal_met && ratio >= 0.5;
      std::printf(
          "fedavg_%dx%lld_%dthread: %.1f GB/s  triad_%dthread: %.1f GB/s  ratio: %.2f"
          "  (%.2f ms)\n",
          kCounts[i], static_cast<long long>(kCnnParameters), threads, gbps, threads,
          triad_gbps[threads], ratio, seconds * 1e3);
    }
  }

  std::vector<const ModelWeights*> pointers;
  std::vector<double> weights;
  for (int k = 0; k < 10; ++k) {
    pointers.push_back(&updates[k]);
    weights.push_back(Weight(k));
  }
  auto reference = ReferenceWeightedMean(pointers, weights);
  auto diff = reference.ok() ? core::MaxAbsDiff(ten_update_result, *reference)
                             : absl::StatusOr<double>(reference.status());
  if (!diff.ok()) {
    std::fprintf(stderr, "reference check failed: %s\n",
                 std::string(diff.status().message()).c_str());
    return 1;
  }
  const bool reference_ok = *diff <= 1e-5;
  std::printf("reference_check_10_updates: max_abs_diff %.3g (limit 1e-5): %s\n", *diff,
              reference_ok ? "OK" : "FAIL");
  std::printf("goal fedavg >= 0.5 x triad: %s\n", goal_met ? "met" : "NOT met");
  return reference_ok ? 0 : 1;
}

}  // namespace
}  // namespace tessera::aggregation

int main() { return tessera::aggregation::Main(); }
