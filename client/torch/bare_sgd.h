// A bare libtorch training loop: the limit the simulator's overhead is measured against
// (benchmarks/simulation_overhead_benchmark.cc). It runs the zoo's models as functional ops on
// plain tensors (torch::linear, torch::conv2d, ...) with hand-written SGD: no Trainer, no
// ModelWeights conversion, no metrics, no Tessera code between the first and the last step.
//
// This header does not include libtorch. Thread-safe: independent calls may run concurrently
// (each call owns its tensors and its shuffling generator).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace tessera::client::torch {

struct BareSgdOptions {
  int epochs = 1;
  int batch_size = 10;
  double learning_rate = 0.05;
  uint64_t seed = 0;  // the per-epoch shuffle (torch::randperm with a generator of this seed)
};

struct BareSgdResult {
  int64_t steps = 0;
  double last_loss = 0;  // the loss of the last step (a sanity check, read once at the end)
};

// Trains `architecture` ("logreg", "mlp" or "cnn", the zoo of torch_trainer.h) starting from
// `initial` (the zoo's state order: fc1.weight, fc1.bias, ...) on n examples of `input_shape`:
// `features` holds n * prod(input_shape) floats, `labels` n classes. Each epoch shuffles the
// examples (randperm + index_select, the same gather the trainer does) and runs ceil(n /
// batch_size) steps of plain SGD on the cross-entropy loss, the last batch maybe smaller.
// Uses the calling thread's libtorch thread setting (ConfigureTorchThreads).
// INVALID_ARGUMENT for another architecture, a layout that does not fit it, sizes that do not
// match or non-positive epochs / batch size; INTERNAL if libtorch fails.
absl::StatusOr<BareSgdResult> BareSgd(const std::string& architecture, const core::ModelWeights& initial,
                                      const std::vector<int64_t>& input_shape, std::span<const float> features,
                                      std::span<const int64_t> labels, const BareSgdOptions& options);

}  // namespace tessera::client::torch
