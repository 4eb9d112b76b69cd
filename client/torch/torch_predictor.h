// TorchPredictor: serving::BatchPredictor over a TorchTrainer's model (zoo or TorchScript).
//
// It owns a trainer without data whose model holds the served weights, loaded once
// (TorchTrainer::LoadForPrediction). A TorchTrainer runs one call at a time, so calls are
// serialized by a mutex: with 2 cores and one intra-op thread per call, concurrent forwards
// would not buy throughput anyway. This header does not include libtorch.
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
  // `weights` do not have the model's layout. The weights are copied into the model.
  static absl::StatusOr<std::unique_ptr<TorchPredictor>> Create(const ModelSpec& spec,
                                                                const core::ModelWeights& weights);

  absl::StatusOr<std::vector<float>> Predict(std::span<const float> inputs, int64_t batch) const override;
  int64_t num_features() const override { return num_features_; }
  int num_classes() const override { return num_classes_; }

 private:
  explicit TorchPredictor(std::unique_ptr<TorchTrainer> trainer);

  const int64_t num_features_;
  const int num_classes_;
  mutable std::mutex mu_;
  const std::unique_ptr<TorchTrainer> trainer_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace tessera::client::torch
