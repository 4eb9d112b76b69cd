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

TorchPredictor::TorchPredictor(std::unique_ptr<TorchTrainer> trainer, std::shared_ptr<const core::ModelWeights> weights)
    : weights_(std::move(weights)),
      num_features_(Numel(trainer->spec().input_shape)),
      num_classes_(trainer->spec().num_classes),
      trainer_(std::move(trainer)) {}

absl::StatusOr<std::unique_ptr<TorchPredictor>> TorchPredictor::Create(const ModelSpec& spec,
                                                                       std::shared_ptr<const core::ModelWeights> weights) {
  if (weights == nullptr) return absl::InvalidArgumentError("a predictor needs weights");
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<TorchTrainer> trainer, TorchTrainer::Create(spec, {}, {}));
  std::unique_ptr<TorchPredictor> p(new TorchPredictor(std::move(trainer), std::move(weights)));
  // Refuse weights of another layout now rather than on every request.
  std::vector<float> zeros(static_cast<size_t>(p->num_features_), 0.0f);
  TESSERA_RETURN_IF_ERROR(p->Predict(zeros, 1).status());
  return p;
}

absl::StatusOr<std::vector<float>> TorchPredictor::Predict(std::span<const float> inputs, int64_t batch) const {
  if (static_cast<int64_t>(inputs.size()) != batch * num_features_) {
    return absl::InvalidArgumentError("input size is not batch x num_features");
  }
  std::lock_guard lock(mu_);
  return trainer_->Predict(*weights_, inputs);
}

}  // namespace tessera::client::torch
