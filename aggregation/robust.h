// Byzantine-robust aggregation rules: a few clients may send arbitrary updates, and the aggregate
// must stay close to what the honest ones agree on.
//
//   median        coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed
//                 Learning: Towards Optimal Statistical Rates", ICML).
//   trimmed-mean  coordinate-wise beta-trimmed mean (Yin et al. 2018): per coordinate, drop the
//                 floor(beta * n) largest and the floor(beta * n) smallest values, average the rest.
//   krum          the update closest to its n - f - 2 nearest neighbours in squared L2 distance
//                 (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
//                 Gradient Descent", NeurIPS); needs n > 2f + 2.
//   multi-krum    the mean of the m updates with the best Krum scores (Blanchard et al. 2017,
//                 scores computed once over all n); m = n - f unless set; needs n > 2f + 2.
//   bulyan        El Mhamdi et al. 2018 ("The Hidden Vulnerability of Distributed Learning in
//                 Byzantium", ICML): pick theta = n - 2f updates by Krum applied again and again
//                 to those not yet picked, then per coordinate average the beta = theta - 2f
//                 picked values closest to their median; needs n >= 4f + 3.
//
// These rules need every update at once, so the RobustAggregator is NOT streaming: it keeps a copy
// of each accepted update's float32 coordinates, memory O(n * model size) (100 clients of the
// 1.66M-parameter CNN: 665 MB), unlike FedAvg's O(model size). Krum, Multi-Krum and Bulyan compute
// all pairwise distances: O(n^2 * d) time, blocked so that it runs from cache (fine for n ~ 100).
//
// Weights (num_examples) are ignored by all of them: each update counts once, since a Byzantine
// client could otherwise claim many examples to pull the result. Tensors of other dtypes (e.g.
// integer buffers) are taken from the first accepted update, as FedAvg does.
//
// The number of updates is known only when the round closes: Report() returns FAILED_PRECONDITION
// when fewer arrived than the rule needs (the round is then abandoned); strategies also check the
// rule against the fewest results a round may have when they are configured
// (coordinator/strategy_factory.h).
//
// Not thread-safe; MergeWith moves another aggregator's updates into this one.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aggregation/aggregator.h"
#include "aggregation/fedavg.h"

namespace tessera::aggregation {

enum class RobustRule { kMedian, kTrimmedMean, kKrum, kMultiKrum, kBulyan };

// "median", "trimmed-mean", "krum", "multi-krum", "bulyan".
std::string RobustRuleName(RobustRule rule);

struct RobustOptions {
  RobustRule rule = RobustRule::kMedian;
  double trim_fraction = 0.1;  // trimmed mean: beta in [0, 0.5)
  int byzantine = 0;           // f, the number of Byzantine updates tolerated (Krum, Bulyan)
  int multi_krum_m = 0;        // Multi-Krum: how many updates to average; 0 = n - f
};

// INVALID_ARGUMENT for parameters no number of updates can satisfy (beta outside [0, 0.5), f < 0, m
// < 0).
absl::Status ValidateRobustOptions(const RobustOptions& options);

// OK when the rule can aggregate `n` updates with these options; INVALID_ARGUMENT naming the least
// n otherwise (Krum and Multi-Krum: n > 2f + 2, and m <= n; Bulyan: n >= 4f + 3).
absl::Status CheckRobustCount(const RobustOptions& options, int n);

class RobustAggregator final : public Aggregator {
 public:
  // INVALID_ARGUMENT for options that ValidateRobustOptions refuses.
  static absl::StatusOr<std::unique_ptr<RobustAggregator>> Create(const core::ModelWeights& layout,
                                                                  const RobustOptions& options);

  absl::Status Accumulate(const WeightedUpdate& update) override;
  absl::Status MergeWith(Aggregator&& other) override;
  bool CanReport() const override { return CheckRobustCount(options_, num_updates()).ok(); }
  int64_t num_updates() const override { return static_cast<int64_t>(rows_.size()); }
  // FAILED_PRECONDITION when too few updates arrived for the rule (see CheckRobustCount).
  absl::StatusOr<core::ModelWeights> Report() && override;

 private:
  RobustAggregator(const core::ModelWeights& layout, const RobustOptions& options);

  RobustOptions options_;
  core::ModelWeights layout_;             // float tensors zero; others from the first update
  std::vector<std::vector<float>> rows_;  // each update's float32 coordinates, concatenated
};

// The rules over n rows of d floats each (the RobustAggregator's kernels, exposed for tests and
// benchmarks). Each returns d floats. The row counts must satisfy CheckRobustCount.
std::vector<float> CoordinateMedian(const std::vector<std::vector<float>>& rows);
std::vector<float> TrimmedMean(const std::vector<std::vector<float>>& rows, double trim_fraction);
// Row-major n x n squared L2 distances, accumulated in double over float blocks.
std::vector<double> PairwiseSquaredDistances(const std::vector<std::vector<float>>& rows);
// The indices of the `m` rows with the lowest Krum scores among `candidates` (each score: the sum
// of the squared distances to its max(0, |candidates| - f - 2) nearest other candidates), best
// first; ties go to the lower index.
std::vector<int> KrumSelect(const std::vector<double>& distances, int n, const std::vector<int>& candidates,
                            int byzantine, int m);
std::vector<float> MultiKrum(const std::vector<std::vector<float>>& rows, int byzantine, int m);
std::vector<float> Bulyan(const std::vector<std::vector<float>>& rows, int byzantine);

// Norm bounding (Sun et al. 2019, "Can You Really Backdoor Federated Learning?"): each update's
// delta from the global model is scaled down to L2 norm at most `bound` (over all float32 tensors),
// then the clipped deltas are averaged weighted by num_examples, as FedAvg does:
//   global + sum_k w_k * delta_k * min(1, bound / ||delta_k||) / sum_k w_k.
// Streaming: memory O(model size) (the global model, one scratch update and FedAvg's sum).
class NormBoundAggregator final : public Aggregator {
 public:
  // INVALID_ARGUMENT unless `bound` is positive and finite.
  static absl::StatusOr<std::unique_ptr<NormBoundAggregator>> Create(const core::ModelWeights& global, double bound);

  absl::Status Accumulate(const WeightedUpdate& update) override;
  absl::Status MergeWith(Aggregator&& other) override;
  bool CanReport() const override { return inner_.CanReport(); }
  int64_t num_updates() const override { return inner_.num_updates(); }
  absl::StatusOr<core::ModelWeights> Report() && override { return std::move(inner_).Report(); }

 private:
  NormBoundAggregator(const core::ModelWeights& global, double bound);

  core::ModelWeights global_;
  double bound_;
  core::ModelWeights clipped_;  // scratch: global + the clipped delta of the update at hand
  FedAvgAggregator inner_;      // the weighted mean of the clipped models
};

}  // namespace tessera::aggregation
