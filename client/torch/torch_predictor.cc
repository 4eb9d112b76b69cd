#include "client/torch/torch_predictor.h"

#include <utility>
#include <vector>

#include "core/status.h"

namespace tessera::client::torch {
namespace {

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

TorchPredictor::TorchPredictor(std::unique_ptr<TorchTrainer> trainer)
    : num_features_(Numel(trainer->spec().input_shape)),
      num_classes_(trainer->spec().num_classes),
      trainer_(std::move(trainer)) {}

absl::StatusOr<std::unique_ptr<TorchPredictor>> TorchPredictor::Create(const ModelSpec& spec,
                                                                       const core::ModelWeights& weights) {
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<TorchTrainer> trainer, TorchTrainer::Create(spec, {}, {}));
  TESSERA_RETURN_IF_ERROR(trainer->LoadForPrediction(weights));
  return std::unique_ptr<TorchPredictor>(new TorchPredictor(std::move(trainer)));
}

absl::StatusOr<std::vector<float>> TorchPredictor::Predict(std::span<const float> inputs, int64_t batch) const {
  if (static_cast<int64_t>(inputs.size()) != batch * num_features_) {
    return absl::InvalidArgumentError("input size is not batch x num_features");
  }
  std::lock_guard lock(mu_);
  return trainer_->PredictLoaded(inputs);
}

}  // namespace tessera::client::torch
