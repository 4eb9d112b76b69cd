// TorchPredictor: serving::BatchPredictor over a TorchTrainer's model (zoo or TorchScript).
//
// It owns a trainer without data and the weights it serves. A TorchTrainer runs one call at a
// time and loads the weights into its model on each Predict, so calls are serialized by a mutex:
// with 2 cores and one intra-op thread per call, concurrency would not buy throughput anyway.
// This header does not include libtorch.
#pragma once

#include <memory>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "client/serving/prediction_service.h"
#include "client/torch/torch_trainer.h"

namespace tessera::client::torch {

class TorchPredictor final : public serving::BatchPredictor {
 public:
  // INVALID_ARGUMENT / NOT_FOUND as TorchTrainer::Create for `spec`, and INVALID_ARGUMENT when
  // `weights` do not have the model's layout (checked by one prediction on zeros).
  static absl::StatusOr<std::unique_ptr<TorchPredictor>> Create(const ModelSpec& spec,
                                                                std::shared_ptr<const core::ModelWeights> weights);

  absl::StatusOr<std::vector<float>> Predict(std::span<const float> inputs, int64_t batch) const override;
  int64_t num_features() const override { return num_features_; }
  int num_classes() const override { return num_classes_; }

 private:
  TorchPredictor(std::unique_ptr<TorchTrainer> trainer, std::shared_ptr<const core::ModelWeights> weights);

  const std::shared_ptr<const core::ModelWeights> weights_;
  const int64_t num_features_;
  const int num_classes_;
  mutable std::mutex mu_;
  const std::unique_ptr<TorchTrainer> trainer_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace tessera::client::torch
