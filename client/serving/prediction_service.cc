#include "client/serving/prediction_service.h"

#include <cmath>
#include <utility>

#include "core/status.h"
#include "core/strings.h"

namespace tessera::client::serving {

using core::StrCat;

absl::StatusOr<std::unique_ptr<PredictionService>> PredictionService::Create(ServingOptions options) {
  if (options.num_features < 1 || options.num_classes < 1 || options.max_batch < 1) {
    return absl::InvalidArgumentError(StrCat("serving needs positive num_features, num_classes and max_batch, got ",
                                             options.num_features, ", ", options.num_classes, ", ",
                                             options.max_batch));
  }
  const Preprocessing& pre = options.preprocessing;
  if (!(std::isfinite(pre.stddev) && pre.stddev > 0) || !std::isfinite(pre.scale) || !std::isfinite(pre.mean)) {
    return absl::InvalidArgumentError("serving preprocessing needs a finite scale and mean and a positive stddev");
  }
  return std::unique_ptr<PredictionService>(new PredictionService(std::move(options)));
}

absl::Status PredictionService::Swap(std::shared_ptr<const ModelSnapshot> snapshot) {
  if (snapshot == nullptr || snapshot->predictor == nullptr) {
    return absl::InvalidArgumentError("a served model needs a predictor");
  }
  const BatchPredictor& p = *snapshot->predictor;
  if (p.num_features() != options_.num_features || p.num_classes() != options_.num_classes) {
    return absl::InvalidArgumentError(StrCat("the new model maps ", p.num_features(), " features to ",
                                             p.num_classes(), " classes; this service serves ",
                                             options_.num_features, " -> ", options_.num_classes));
  }
  current_.store(std::move(snapshot));
  return absl::OkStatus();
}

absl::StatusOr<Prediction> PredictionService::Predict(std::span<const float> inputs, int64_t batch) const {
  if (batch < 1) return absl::InvalidArgumentError("the batch is empty");
  if (batch > options_.max_batch) {
    return absl::InvalidArgumentError(
        StrCat("the batch has ", batch, " examples; at most ", options_.max_batch, " per request"));
  }
  if (static_cast<int64_t>(inputs.size()) != batch * options_.num_features) {
    return absl::InvalidArgumentError(StrCat("expected ", batch, " examples of ", options_.num_features,
                                             " values (", batch * options_.num_features, "), got ", inputs.size(),
                                             " values"));
  }
  // Preprocess as the readers do (float64, rounded to float32), refusing what is not finite.
  const Preprocessing& pre = options_.preprocessing;
  std::vector<float> x(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const float v = static_cast<float>((static_cast<double>(inputs[i]) * pre.scale - pre.mean) / pre.stddev);
    if (!std::isfinite(inputs[i]) || !std::isfinite(v)) {
      const int64_t n = static_cast<int64_t>(i) / options_.num_features;
      return absl::InvalidArgumentError(StrCat("example ", n, ", value ", static_cast<int64_t>(i) % options_.num_features,
                                               " is not a finite number"));
    }
    x[i] = v;
  }
  Prediction out;
  out.model = current_.load();  // pinned until this request answers
  if (out.model == nullptr) return absl::UnavailableError("no model to serve yet (before the first round)");
  TESSERA_ASSIGN_OR_RETURN(out.logits, out.model->predictor->Predict(x, batch));
  out.num_classes = options_.num_classes;
  if (static_cast<int64_t>(out.logits.size()) != batch * options_.num_classes) {
    return absl::InternalError(StrCat("the predictor returned ", out.logits.size(), " logits for ", batch,
                                      " examples of ", options_.num_classes, " classes"));
  }
  out.classes = ArgmaxRows(out.logits, options_.num_classes);
  return out;
}

std::vector<int64_t> ArgmaxRows(std::span<const float> logits, int num_classes) {
  std::vector<int64_t> out(logits.size() / num_classes);
  for (size_t r = 0; r < out.size(); ++r) {
    const float* row = logits.data() + r * num_classes;
    int64_t best = 0;
    for (int c = 1; c < num_classes; ++c) {
      if (row[c] > row[best]) best = c;
    }
    out[r] = best;
  }
  return out;
}

}  // namespace tessera::client::serving
