// Fakes for serving tests: a deterministic BatchPredictor whose logits depend on its `offset`
// (one offset per model version), so a response tells which model answered it.
// Thread-safe, as BatchPredictor requires.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "client/serving/prediction_service.h"

namespace tessera::testutil {

class FakeLinearPredictor final : public client::serving::BatchPredictor {
 public:
  FakeLinearPredictor(int64_t features, int classes, float offset) : features_(features), classes_(classes), offset_(offset) {}

  // logits[b][c] = offset + (c + 1) * sum_f x[b][f] * (f % 7 + 1) / 64, in this order.
  absl::StatusOr<std::vector<float>> Predict(std::span<const float> inputs, int64_t batch) const override {
    if (on_predict) on_predict();
    std::vector<float> out(static_cast<size_t>(batch * classes_));
    for (int64_t b = 0; b < batch; ++b) {
      float dot = 0;
      for (int64_t f = 0; f < features_; ++f) dot += inputs[b * features_ + f] * static_cast<float>(f % 7 + 1) / 64.0f;
      for (int c = 0; c < classes_; ++c) out[b * classes_ + c] = offset_ + static_cast<float>(c + 1) * dot;
    }
    return out;
  }
  int64_t num_features() const override { return features_; }
  int num_classes() const override { return classes_; }

  // Called at the start of every Predict (e.g. to hold a request inside the model).
  std::function<void()> on_predict;

 private:
  const int64_t features_;
  const int classes_;
  const float offset_;
};

// A snapshot of version `version` served by a FakeLinearPredictor with offset = version.
inline std::shared_ptr<const client::serving::ModelSnapshot> FakeSnapshot(
    core::ModelVersion version, int64_t features, int classes,
    std::shared_ptr<const client::serving::BatchPredictor> predictor = nullptr) {
  auto s = std::make_shared<client::serving::ModelSnapshot>();
  s->version = version;
  s->round = version;
  s->metrics = {{"eval_accuracy", 0.5 + 0.01 * static_cast<double>(version)}};
  s->predictor = predictor ? std::move(predictor)
                           : std::make_shared<FakeLinearPredictor>(features, classes, static_cast<float>(version));
  return s;
}

}  // namespace tessera::testutil
