#include "coordinator/strategy.h"

#include <algorithm>
#include <cmath>

#include "aggregation/fedavg.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::coordinator {

absl::Status SamplingStrategy::Validate(const FedAvgOptions& options) {
  if (!(options.fraction > 0.0 && options.fraction <= 1.0)) {
    return absl::InvalidArgumentError(core::StrCat("fraction must be in (0, 1], got ", options.fraction));
  }
  if (!(options.over_selection >= 1.0 && options.over_selection <= 10.0)) {
    return absl::InvalidArgumentError(core::StrCat("over-selection must be in [1, 10], got ", options.over_selection));
  }
  if (options.min_fit_clients < 1 || options.min_available_clients < 1) {
    return absl::InvalidArgumentError("min_fit_clients and min_available_clients must be at least 1");
  }
  if (options.train.local_epochs < 1 || options.train.batch_size < 1 || !(options.train.learning_rate > 0)) {
    return absl::InvalidArgumentError("local_epochs, batch_size and learning rate must be positive");
  }
  return absl::OkStatus();
}

int SamplingStrategy::MinAvailableClients() const {
  return std::max(options_.min_available_clients, options_.min_fit_clients);
}

int SamplingStrategy::SampleSize(int n) const {
  if (n < MinAvailableClients()) return 0;
  int k = static_cast<int>(std::ceil(options_.fraction * n - 1e-9));
  k = std::max(k, options_.min_fit_clients);
  return std::clamp(static_cast<int>(std::ceil(k * options_.over_selection - 1e-9)), 1, n);
}

std::vector<core::ClientId> SamplingStrategy::SampleClients(const std::vector<core::ClientId>& available,
                                                            core::RoundNumber round, core::Rng& rng) {
  const int n = static_cast<int>(available.size());
  const int k = SampleSize(n);
  if (k == 0) return {};
  // Partial Fisher-Yates: the first k of a uniform shuffle.
  std::vector<core::ClientId> pool = available;
  for (int i = 0; i < k; ++i) {
    std::swap(pool[i], pool[i + rng.Uniform(n - i)]);
  }
  pool.resize(k);
  return pool;
}

int SamplingStrategy::TargetResults(int sampled) const {
  return std::clamp(static_cast<int>(std::ceil(sampled / options_.over_selection - 1e-9)), 1, sampled);
}

absl::StatusOr<std::unique_ptr<FedAvgStrategy>> FedAvgStrategy::Create(const FedAvgOptions& options) {
  TESSERA_RETURN_IF_ERROR(Validate(options));
  return std::unique_ptr<FedAvgStrategy>(new FedAvgStrategy(options));
}

std::unique_ptr<aggregation::Aggregator> FedAvgStrategy::MakeAggregator(const core::ModelWeights& global) {
  return std::make_unique<aggregation::FedAvgAggregator>(global);
}

absl::StatusOr<std::unique_ptr<ComposedStrategy>> ComposedStrategy::Create(
    std::string name, const FedAvgOptions& options, AggregatorFactory make_aggregator,
    std::unique_ptr<aggregation::ServerOptimizer> optimizer) {
  TESSERA_RETURN_IF_ERROR(Validate(options));
  if (!make_aggregator) return absl::InvalidArgumentError("a strategy needs an aggregator factory");
  return std::unique_ptr<ComposedStrategy>(
      new ComposedStrategy(std::move(name), options, std::move(make_aggregator), std::move(optimizer)));
}

absl::StatusOr<core::ModelWeights> ComposedStrategy::NextGlobalModel(const core::ModelWeights& global,
                                                                     core::ModelWeights aggregate) {
  if (optimizer_ == nullptr) return aggregate;
  return optimizer_->Step(global, aggregate);
}

}  // namespace tessera::coordinator
