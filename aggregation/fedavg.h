// Weighted federated averaging (McMahan et al. 2017): sum_k w_k u_k / sum_k w_k, streamed.
//
// Float32 tensors are averaged; tensors of other dtypes (e.g. integer counters in buffers) are
// taken from the first update, since averaging them has no meaning.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "aggregation/aggregator.h"

namespace tessera::aggregation {

class FedAvgAggregator final : public Aggregator {
 public:
  // `layout` fixes the tensor names, shapes and dtypes every update must have.
  explicit FedAvgAggregator(const core::ModelWeights& layout);

  absl::Status Accumulate(const WeightedUpdate& update) override;
  absl::Status MergeWith(Aggregator&& other) override;
  bool CanReport() const override { return num_updates_ > 0; }
  int64_t num_updates() const override { return num_updates_; }
  absl::StatusOr<core::ModelWeights> Report() && override;

 private:
  core::ModelWeights sum_;  // sum of w_k * u_k for float tensors; first update's otherwise
  double total_weight_ = 0;
  int64_t num_updates_ = 0;
};

// acc[i] += w * x[i]: the kernel of streaming FedAvg (exposed for the benchmark).
void WeightedAccumulate(std::span<float> acc, std::span<const float> x, float w);

// The plain-loop reference: the weighted mean of `updates`, computed in double.
absl::StatusOr<core::ModelWeights> ReferenceWeightedMean(
    const std::vector<const core::ModelWeights*>& updates, const std::vector<double>& weights);

}  // namespace tessera::aggregation
