// The Trainer interface: how a client trains and evaluates a model on its private data.
// ClientRuntime uses it; client/torch/ implements it with libtorch; tests use fakes.
#pragma once

#include "absl/status/statusor.h"
#include "core/federation.h"
#include "core/tensor.h"

namespace tessera::client {

struct TrainOutput {
  core::ModelWeights weights;  // the locally trained weights (same layout as the input)
  int64_t num_examples = 0;    // examples seen per epoch (FedAvg's weight)
  core::Metrics metrics;       // e.g. train_loss, train_accuracy
};

// Implementations need not be thread-safe: a runtime calls one method at a time.
class Trainer {
 public:
  virtual ~Trainer() = default;

  // Trains from `global` for config.local_epochs epochs over the local training data, shuffled
  // by a stream seeded from config.seed (the runtime has already made it specific to the
  // client and round). INVALID_ARGUMENT when `global` does not fit the model;
  // FAILED_PRECONDITION when there is no local training data.
  virtual absl::StatusOr<TrainOutput> Train(const core::ModelWeights& global,
                                            const core::TrainConfig& config) = 0;

  // Trains from `start` with mu/2 ||w - anchor||^2 added to the loss (mu = config.proximal_mu):
  // Ditto's personal model, pulled toward the global `anchor`. Train() with a proximal_mu is
  // FedProx, the case anchor == start. UNIMPLEMENTED for trainers without it.
  virtual absl::StatusOr<TrainOutput> TrainToward(const core::ModelWeights& start, const core::ModelWeights& anchor,
                                                  const core::TrainConfig& config) {
    (void)start, (void)anchor, (void)config;
    return absl::UnimplementedError("this trainer cannot train toward an anchor model");
  }

  // Metrics of `weights` on the local held-out data: "loss", "accuracy", "num_examples".
  virtual absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& weights) = 0;
};

}  // namespace tessera::client
