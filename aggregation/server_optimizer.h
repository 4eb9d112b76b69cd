// Server optimizers: the next global model from the current one and the round's mean client model,
// treating the mean update as a pseudo-gradient (Reddi et al. 2021, "Adaptive Federated
// Optimization", ICLR, Algorithm 2; Hsu et al. 2019, "Measuring the Effects of Non-Identical Data
// Distribution for Federated Visual Classification", for server momentum).
//
// With x the global model and Delta = aggregate - x (the mean client update), per coordinate:
//   FedAvgM     v = momentum * v + Delta;                     x += lr * v
//   FedAdam     m = b1 * m + (1 - b1) * Delta;
//               v = b2 * v + (1 - b2) * Delta^2;              x += lr * m / (sqrt(v) + tau)
//   FedYogi     m as FedAdam; v = v - (1 - b2) * Delta^2 * sign(v - Delta^2); x as FedAdam
//   FedAdagrad  m as FedAdam; v = v + Delta^2;                x as FedAdam
// m starts at 0 and v at tau^2 (the paper's v_{-1} >= tau^2); there is no bias correction, as in
// the paper. FedAvgM with lr 1 and momentum 0 is FedAvg.
//
// The state (m, v) lives in memory across rounds, O(model size) each: it is not persisted, so a
// restarted coordinator starts it afresh. Tensors of other dtypes than float32 are taken from the
// aggregate. Not thread-safe.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace tessera::aggregation {

enum class ServerOptimizerKind { kAvgM, kAdam, kYogi, kAdagrad };

struct ServerOptimizerOptions {
  ServerOptimizerKind kind = ServerOptimizerKind::kAdam;
  double learning_rate = 0.01;  // eta, the server learning rate
  double momentum = 0.9;        // FedAvgM only
  double beta1 = 0.9;           // FedAdam, FedYogi, FedAdagrad
  double beta2 = 0.99;          // FedAdam, FedYogi
  double tau = 1e-3;            // adaptivity: larger is less adaptive
};

// "fedavgm", "fedadam", "fedyogi", "fedadagrad".
std::string ServerOptimizerName(ServerOptimizerKind kind);

class ServerOptimizer {
 public:
  // INVALID_ARGUMENT unless lr > 0, momentum, beta1 and beta2 in [0, 1) and tau > 0 (all finite).
  static absl::StatusOr<std::unique_ptr<ServerOptimizer>> Create(const ServerOptimizerOptions& options);

  // The next global model. INVALID_ARGUMENT when the layouts of `global` and `aggregate` differ or
  // differ from the first step's, or when the step is not finite; the state then stays as it was,
  // so a refused step can be retried (the round is abandoned).
  absl::StatusOr<core::ModelWeights> Step(const core::ModelWeights& global, const core::ModelWeights& aggregate);

  int steps() const { return steps_; }

 private:
  explicit ServerOptimizer(const ServerOptimizerOptions& options) : options_(options) {}

  struct Moments {
    float m;
    float v;
  };
  // One coordinate's moments after a pseudo-gradient `delta`, and the step they make.
  Moments Advance(Moments old, double delta) const;
  double StepOf(Moments now) const;

  ServerOptimizerOptions options_;
  core::ModelWeights m_;  // first moment (FedAvgM: the momentum buffer); empty
                          // before the first step
  core::ModelWeights v_;  // second moment
  int steps_ = 0;
};

}  // namespace tessera::aggregation
