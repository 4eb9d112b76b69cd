// Exporting a global model version as TorchScript, runnable without Tessera (Python's
// torch.jit.load, or libtorch's torch::jit::load).
//
// libtorch 1.13's C++ API cannot script a torch::nn::Module, so zoo models are written as
// torch::jit::Modules compiled from TorchScript source, with the weights registered as their
// parameters; a TorchScript architecture is loaded from its file and given the weights. Either
// way the exported module applies the training data's preprocessing itself, so callers pass raw
// inputs. Functions are thread-safe; no exception leaves them.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/data/dataset.h"
#include "client/torch/torch_trainer.h"
#include "core/tensor.h"

namespace tessera::client::torch {

// Writes `weights` (the state of the model `spec`) to `path` as a TorchScript module, atomically.
//
// The module's forward takes raw inputs, float32 [B, ...spec.input_shape] (for logreg and mlp
// any [B, ...] with the same number of values per example), computes
// ((x.double() * scale - mean) / stddev).float() with `pre` (exactly the data readers'
// arithmetic), and returns logits [B, num_classes] equal to TorchTrainer::Predict on the
// preprocessed inputs. It carries the constants as attributes input_scale, input_mean,
// input_stddev. Zoo models keep their state names ("fc1.weight"); a TorchScript architecture
// sits under "model." ("model.fc1.weight"). The module is saved in eval mode.
//
// INVALID_ARGUMENT for a bad spec, weights of another layout, non-finite or non-positive
// stddev; NOT_FOUND for a missing TorchScript file; INTERNAL when the module cannot be built or
// written (PERMISSION_DENIED / NOT_FOUND from the file system pass through).
absl::Status ExportTorchScript(const ModelSpec& spec, const core::ModelWeights& weights,
                               const Preprocessing& pre, const std::string& path);

// The zoo spec whose state has the layout of `weights`: "logreg" (fc.*), "mlp" (fc1..fc3) or
// "cnn" (conv1, conv2, fc1, fc2), with num_classes from the last bias. The input shape is not
// stored in the weights: logreg and mlp with 784 inputs get [1,28,28] (Fashion-MNIST), other
// sizes [D]; cnn gets [C,H,H] with C from conv1 and the square H that fits fc1.
// INVALID_ARGUMENT when the weights are not of a zoo model (a TorchScript architecture must be
// named by the caller).
absl::StatusOr<ModelSpec> InferZooSpec(const core::ModelWeights& weights);

}  // namespace tessera::client::torch
