// TorchTrainer: the libtorch implementation of client::Trainer, the model zoo of McMahan et al.
// (2017) and TorchScript model loading.
//
// This header does not include libtorch (callers compile fast); torch_trainer.cc is the only
// translation unit that does, and it catches every c10::Error / std::exception and turns it into
// an absl::Status: no exception leaves this module.
//
// Threads: independent TorchTrainer instances may run concurrently in different threads (each
// owns its model; training never touches libtorch's global random generator). One instance is
// not thread-safe: call one method at a time, as client::Trainer requires.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/data/dataset.h"
#include "client/trainer.h"
#include "core/federation.h"
#include "core/tensor.h"

namespace tessera::client::torch {

// Which model to build.
struct ModelSpec {
  // "logreg": flatten -> fc (Linear(D, C)).
  // "mlp":    the "2NN": flatten -> fc1 Linear(D, 200) ReLU -> fc2 Linear(200, 200) ReLU
  //           -> fc3 Linear(200, C); 199,210 parameters for D = 784, C = 10.
  // "cnn":    conv1 5x5x32 (pad 2) ReLU maxpool2 -> conv2 5x5x64 (pad 2) ReLU maxpool2 -> flatten
  //           -> fc1 Linear(64*H/4*W/4, 512) ReLU -> fc2 Linear(512, C); 1,663,370 parameters
  //           for [1,28,28] inputs and C = 10. Needs input_shape [C,H,W] with H, W divisible by 4.
  // Anything else is read as the path of a TorchScript module (a file saved by torch.jit.save)
  // whose forward maps a float tensor [B, ...input_shape] to logits [B, num_classes]; see
  // examples/make_torchscript_model.py. A name that is neither a zoo name nor looks like a path
  // (no '/' and no ".pt" / ".pth" suffix) is INVALID_ARGUMENT.
  std::string architecture;
  // Shape of one example without the batch dimension, e.g. {1, 28, 28} or {784}. For logreg and
  // mlp only its product D matters.
  std::vector<int64_t> input_shape;
  int num_classes = 10;
};

// The initial global model for `spec`, in state order (named parameters, then named buffers;
// names like "fc1.weight"). For zoo models: PyTorch's default initialization (uniform in
// +-1/sqrt(fan_in) for weights and biases) drawn from a generator seeded with `seed`, so the
// result depends on `seed` only (bit for bit, whatever the threads). For TorchScript models: the
// weights stored in the file (`seed` is unused).
// INVALID_ARGUMENT for a malformed spec or an unloadable .pt file; NOT_FOUND for a missing file.
// Thread-safe.
absl::StatusOr<core::ModelWeights> InitialWeights(const ModelSpec& spec, uint64_t seed);

class TorchModel;  // the model behind a trainer (zoo or TorchScript); defined in the .cc

// Trains and evaluates one model on one client's data with plain SGD and the cross-entropy loss.
//
// Train(global, config): loads `global` into the model (INVALID_ARGUMENT naming the first tensor
// whose name, shape or dtype differs from the model's state), then runs config.local_epochs
// epochs of minibatch SGD (lr = config.learning_rate, config.batch_size examples per step, the
// last batch of an epoch may be smaller) over the train view, shuffled each epoch by
// core::Rng(config.seed, {epoch}). The result is bit-reproducible for the same inputs and
// thread count. Returns the trained weights (same layout), num_examples = train size, and
// metrics "train_loss" (mean over the last epoch) and "train_accuracy" (during the last epoch).
// config.max_steps > 0 stops after that many steps (the metrics are then those of the last,
// maybe partial, epoch); config.proximal_mu > 0 adds mu/2 ||w - global||^2 to the loss
// (FedProx). TrainToward(start, anchor, config) is the same from `start` with the proximal term
// toward `anchor` (Ditto's personal model).
// FAILED_PRECONDITION when the train view is empty; INVALID_ARGUMENT for a non-positive
// batch_size or local_epochs, or a non-finite learning rate.
//
// Evaluate(weights): "loss" (mean cross-entropy), "accuracy" and "num_examples" on the eval view,
// in eval mode and batches of 1000. FAILED_PRECONDITION when the eval view is empty.
//
// Both calls overwrite the model's state with their input; INTERNAL if libtorch fails midway.
class TorchTrainer final : public client::Trainer {
 public:
  // Builds the model once (it is reused by every call). Either view may be empty. Errors:
  // NOT_FOUND for a missing .pt file; INVALID_ARGUMENT for an unknown architecture, an
  // unloadable .pt file, a model whose output is not [B, num_classes] for [B, ...input_shape],
  // a non-empty view whose example_shape has a different number of elements than input_shape,
  // or labels outside [0, num_classes).
  static absl::StatusOr<std::unique_ptr<TorchTrainer>> Create(ModelSpec spec, DatasetView train,
                                                              DatasetView eval);

  ~TorchTrainer() override;
  TorchTrainer(const TorchTrainer&) = delete;
  TorchTrainer& operator=(const TorchTrainer&) = delete;

  absl::StatusOr<TrainOutput> Train(const core::ModelWeights& global,
                                    const core::TrainConfig& config) override;
  absl::StatusOr<TrainOutput> TrainToward(const core::ModelWeights& start, const core::ModelWeights& anchor,
                                          const core::TrainConfig& config) override;
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& weights) override;

  // Logits [n, num_classes], row-major, of the model with `weights` for `inputs`: n >= 1
  // examples of spec().input_shape, already preprocessed like the training data. Eval mode, no
  // grad, batches of 1000. INVALID_ARGUMENT for weights of another layout or an input size that
  // is not a positive multiple of the example size; INTERNAL if libtorch fails.
  absl::StatusOr<std::vector<float>> Predict(const core::ModelWeights& weights, std::span<const float> inputs);

  // Predict in two steps, for serving one model many times: LoadForPrediction(weights) puts
  // `weights` into the model (INVALID_ARGUMENT for another layout), then each PredictLoaded(inputs)
  // runs the model as loaded (same results as Predict(weights, inputs), without copying the
  // weights again). Train, TrainToward, Evaluate and Predict overwrite what was loaded.
  absl::Status LoadForPrediction(const core::ModelWeights& weights);
  absl::StatusOr<std::vector<float>> PredictLoaded(std::span<const float> inputs);

  const ModelSpec& spec() const { return spec_; }
  // Number of elements of the model's state (parameters and buffers).
  int64_t num_state_elements() const;

 private:
  TorchTrainer(ModelSpec spec, DatasetView train, DatasetView eval,
               std::unique_ptr<TorchModel> model);

  absl::StatusOr<TrainOutput> TrainImpl(const core::ModelWeights& start, const core::ModelWeights& anchor,
                                        const core::TrainConfig& config);
  absl::StatusOr<core::Metrics> EvaluateImpl(const core::ModelWeights& weights);

  const ModelSpec spec_;
  const DatasetView train_;
  const DatasetView eval_;
  const std::unique_ptr<TorchModel> model_;
};

// Sets the number of threads one libtorch op may use (at::set_num_threads) and, when the process
// has OpenBLAS loaded, OpenBLAS's thread count (looked up with dlsym, so nothing links OpenBLAS
// directly). Process-wide; call it before starting trainers. Threads that were already running
// pick the libtorch setting up on their next Train / Evaluate. n < 1 is treated as 1.
void ConfigureTorchThreads(int intra_op_threads);

// "openblas" when the process has OpenBLAS loaded, "reference" otherwise (for logs and
// benchmarks).
std::string BlasBackendName();

}  // namespace tessera::client::torch
