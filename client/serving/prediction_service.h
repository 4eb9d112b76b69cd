// PredictionService: a client serves predictions from one model at a time and swaps in a new
// one after each round, without failing or blocking the requests in flight.
//
// The served model is an immutable ModelSnapshot behind a shared_ptr. A request loads the
// current pointer once (an atomic load) and keeps it until it has answered, so every response
// comes from exactly one version even while Swap() installs the next. A replaced snapshot is
// freed when its last request finishes. Transport-free and libtorch-free: inference goes
// through the BatchPredictor interface (client/torch/torch_predictor.h implements it; tests use
// a fake); the HTTP and gRPC adapters (http_server.h, grpc/predictor_service.h) only translate.
//
// Threads: every method of PredictionService is thread-safe; BatchPredictor implementations
// must be too (many requests call one predictor concurrently).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/data/dataset.h"
#include "core/federation.h"
#include "core/ids.h"
#include "core/tensor.h"

namespace tessera::client::serving {

// Runs one model. Thread-safe; holds its weights (it never changes after construction).
class BatchPredictor {
 public:
  virtual ~BatchPredictor() = default;
  // Logits [batch, num_classes()], row-major, for `inputs` = `batch` preprocessed examples of
  // num_features() values each (the service checked the sizes and finiteness). INTERNAL when
  // inference fails.
  virtual absl::StatusOr<std::vector<float>> Predict(std::span<const float> inputs, int64_t batch) const = 0;
  virtual int64_t num_features() const = 0;
  virtual int num_classes() const = 0;
};

// One served model, immutable once made.
struct ModelSnapshot {
  core::ModelVersion version = 0;  // the global model version it derives from
  core::RoundNumber round = 0;     // the round after which it was swapped in
  core::Metrics metrics;           // the client's metrics of that round
  std::shared_ptr<const core::ModelWeights> weights;  // what `predictor` runs (may be null in tests)
  std::shared_ptr<const BatchPredictor> predictor;    // never null in a served snapshot
};

struct ServingOptions {
  int64_t num_features = 0;  // values per example (e.g. 784 for Fashion-MNIST)
  int num_classes = 0;
  // Applied to the raw inputs of a request, as the data readers did to the training data:
  // x' = (x * scale - mean) / stddev in float64, rounded to float32.
  Preprocessing preprocessing;
  int64_t max_batch = 256;  // examples per request; more is INVALID_ARGUMENT
};

// What one request gets back: everything from `model`.
struct Prediction {
  std::shared_ptr<const ModelSnapshot> model;
  int num_classes = 0;
  std::vector<float> logits;    // [batch, num_classes], row-major
  std::vector<int64_t> classes;  // argmax of each row (the first maximum on ties)
};

class PredictionService {
 public:
  // INVALID_ARGUMENT when num_features, num_classes or max_batch is not positive, or stddev is
  // not a positive finite number.
  static absl::StatusOr<std::unique_ptr<PredictionService>> Create(ServingOptions options);

  PredictionService(const PredictionService&) = delete;
  PredictionService& operator=(const PredictionService&) = delete;

  // Installs `snapshot` for every request that starts from now on; requests already running
  // finish with the one they started with. Never blocks on them. INVALID_ARGUMENT (nothing
  // changes) for a null snapshot or predictor, or a predictor whose num_features / num_classes
  // differ from the options'.
  absl::Status Swap(std::shared_ptr<const ModelSnapshot> snapshot);

  // The served snapshot; nullptr before the first Swap.
  std::shared_ptr<const ModelSnapshot> Current() const { return current_.load(); }

  // Predicts `batch` examples of raw inputs (num_features values each, example-major).
  // INVALID_ARGUMENT for batch < 1, batch > max_batch, inputs.size() != batch * num_features,
  // or a value that is NaN / Inf (raw or after preprocessing); UNAVAILABLE before the first
  // Swap; the predictor's error otherwise (INTERNAL, also when it returns the wrong size).
  absl::StatusOr<Prediction> Predict(std::span<const float> inputs, int64_t batch) const;

  const ServingOptions& options() const { return options_; }

 private:
  explicit PredictionService(ServingOptions options) : options_(std::move(options)) {}

  const ServingOptions options_;
  std::atomic<std::shared_ptr<const ModelSnapshot>> current_;
};

// Index of the first maximum of each row of `logits` [rows, num_classes].
std::vector<int64_t> ArgmaxRows(std::span<const float> logits, int num_classes);

}  // namespace tessera::client::serving
