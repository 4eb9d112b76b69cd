// The robust aggregation rules (aggregation/robust.h) against streaming FedAvg, measured in the
// same run: milliseconds to Accumulate n updates and Report, for the 2NN of McMahan et al. (199,210
// floats) with n = 20 and 100, f = n / 10 Byzantine clients tolerated. The robust rules copy every
// update (O(n * model) memory) and Krum / Bulyan compare every pair (O(n^2 * d)); the ratio to
// FedAvg says what that costs. Each figure is the best of 3 repetitions.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aggregation/fedavg.h"
#include "aggregation/robust.h"
#include "benchmarks/bench_util.h"
#include "core/tensor.h"

namespace tessera::aggregation {
namespace {

using Clock = std::chrono::steady_clock;
using core::ModelWeights;

ModelWeights MlpUpdate(int k) {
  ModelWeights m;
  m.tensors.emplace_back("fc1.weight", std::vector<int64_t>{200, 784});
  m.tensors.emplace_back("fc1.bias", std::vector<int64_t>{200});
  m.tensors.emplace_back("fc2.weight", std::vector<int64_t>{200, 200});
  m.tensors.emplace_back("fc2.bias", std::vector<int64_t>{200});
  m.tensors.emplace_back("fc3.weight", std::vector<int64_t>{10, 200});
  m.tensors.emplace_back("fc3.bias", std::vector<int64_t>{10});
  bench::FillDistinct(m, k);
  return m;
}

// Best-of-3 milliseconds to fold updates[0, n) into a fresh aggregator and report.
double Millis(const std::function<std::unique_ptr<Aggregator>()>& make, const std::vector<ModelWeights>& updates,
              int n) {
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto agg = make();
    const auto start = Clock::now();
    for (int k = 0; k < n; ++k) {
      if (!agg->Accumulate({updates[k], 1.0 + k}).ok()) std::abort();
    }
    if (!std::move(*agg).Report().ok()) std::abort();
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  return best;
}

int Main() {
  std::printf(
      "# robust aggregation vs streaming FedAvg, 2NN updates (199,210 "
      "floats), best of 3\n");
  std::printf("# load average at start: %s\n", bench::LoadAverage().c_str());
  std::vector<ModelWeights> updates;
  for (int k = 0; k < 100; ++k) updates.push_back(MlpUpdate(k));
  const ModelWeights& layout = updates[0];
  for (int n : {20, 100}) {
    const int f = n / 10;
    const double fedavg = Millis([&] { return std::make_unique<FedAvgAggregator>(layout); }, updates, n);
    std::printf("fedavg n=%d: %.1f ms\n", n, fedavg);
    for (RobustRule rule : {RobustRule::kMedian, RobustRule::kTrimmedMean, RobustRule::kKrum, RobustRule::kMultiKrum,
                            RobustRule::kBulyan}) {
      RobustOptions o{rule, 0.1, f, 0};
      const double ms =
          Millis([&] { return std::unique_ptr<Aggregator>(*RobustAggregator::Create(layout, o)); }, updates, n);
      std::printf("%s n=%d f=%d: %.1f ms  ratio to fedavg: %.1f\n", RobustRuleName(rule).c_str(), n, f, ms,
                  ms / fedavg);
    }
    const double bound =
        Millis([&] { return std::unique_ptr<Aggregator>(*NormBoundAggregator::Create(layout, 1.0)); }, updates, n);
    std::printf("norm-bound n=%d: %.1f ms  ratio to fedavg: %.1f\n", n, bound, bound / fedavg);
  }
  return 0;
}

}  // namespace
}  // namespace tessera::aggregation

int main() { return tessera::aggregation::Main(); }
