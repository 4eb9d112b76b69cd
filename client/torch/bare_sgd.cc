// The loop in BareSgd() is what a user would write in plain libtorch; everything Tessera-specific
// (argument checks, copying the initial weights in) happens before it.
#include "client/torch/bare_sgd.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>

#include "client/torch/torch_internal.h"
#include "core/strings.h"

namespace tessera::client::torch {
namespace {

// The zoo's forward passes (torch_trainer.h) as functional ops over w = [weight, bias, ...].
::torch::Tensor Forward(const std::string& architecture, const std::vector<::torch::Tensor>& w,
                        const ::torch::Tensor& x) {
  if (architecture == "logreg") return ::torch::linear(x.flatten(1), w[0], w[1]);
  if (architecture == "mlp") {
    ::torch::Tensor h = ::torch::relu(::torch::linear(x.flatten(1), w[0], w[1]));
    h = ::torch::relu(::torch::linear(h, w[2], w[3]));
    return ::torch::linear(h, w[4], w[5]);
  }
  ::torch::Tensor h = ::torch::max_pool2d(::torch::relu(::torch::conv2d(x, w[0], w[1], 1, 2)), 2);
  h = ::torch::max_pool2d(::torch::relu(::torch::conv2d(h, w[2], w[3], 1, 2)), 2);
  h = ::torch::relu(::torch::linear(h.flatten(1), w[4], w[5]));
  return ::torch::linear(h, w[6], w[7]);
}

size_t NumTensors(const std::string& architecture) {
  if (architecture == "logreg") return 2;
  if (architecture == "mlp") return 6;
  if (architecture == "cnn") return 8;
  return 0;
}

}  // namespace

absl::StatusOr<BareSgdResult> BareSgd(const std::string& architecture, const core::ModelWeights& initial,
                                      const std::vector<int64_t>& input_shape, std::span<const float> features,
                                      std::span<const int64_t> labels, const BareSgdOptions& options) {
  const size_t num_tensors = NumTensors(architecture);
  if (num_tensors == 0) {
    return absl::InvalidArgumentError(core::StrCat("BareSgd runs logreg, mlp or cnn, not '", architecture, "'"));
  }
  if (initial.tensors.size() != num_tensors) {
    return absl::InvalidArgumentError(core::StrCat(architecture, " has ", num_tensors, " tensors, got ",
                                                   initial.tensors.size()));
  }
  int64_t numel = 1;
  for (int64_t d : input_shape) numel *= d;
  const int64_t n = static_cast<int64_t>(labels.size());
  if (n < 1 || numel < 1 || static_cast<int64_t>(features.size()) != n * numel) {
    return absl::InvalidArgumentError(core::StrCat("BareSgd: ", features.size(), " feature values for ", n,
                                                   " examples of ", numel, " values"));
  }
  if (options.epochs < 1 || options.batch_size < 1) {
    return absl::InvalidArgumentError("BareSgd: epochs and batch_size must be positive");
  }
  return internal::RunGuarded(absl::StatusCode::kInternal, "bare SGD failed", [&]() -> absl::StatusOr<BareSgdResult> {
    at::init_num_threads();
    std::vector<::torch::Tensor> w;
    for (const core::NamedTensor& t : initial.tensors) {
      if (t.dtype() != core::DType::kFloat32) return absl::InvalidArgumentError("BareSgd takes float32 weights");
      w.push_back(::torch::from_blob(const_cast<float*>(t.f32().data()), t.shape(), ::torch::kFloat32)
                      .clone()
                      .requires_grad_(true));
    }
    std::vector<int64_t> shape = {n};
    shape.insert(shape.end(), input_shape.begin(), input_shape.end());
    const ::torch::Tensor x = ::torch::from_blob(const_cast<float*>(features.data()), shape, ::torch::kFloat32);
    const ::torch::Tensor y = ::torch::from_blob(const_cast<int64_t*>(labels.data()), {n}, ::torch::kInt64);
    at::Generator gen = at::detail::createCPUGenerator(options.seed);

    BareSgdResult result;
    ::torch::Tensor loss;
    for (int epoch = 0; epoch < options.epochs; ++epoch) {
      const ::torch::Tensor order = ::torch::randperm(n, gen, ::torch::kInt64);
      const ::torch::Tensor xs = x.index_select(0, order);
      const ::torch::Tensor ys = y.index_select(0, order);
      for (int64_t start = 0; start < n; start += options.batch_size) {
        const int64_t len = std::min<int64_t>(options.batch_size, n - start);
        for (::torch::Tensor& p : w) {
          if (p.grad().defined()) p.grad().zero_();
        }
        loss = ::torch::nn::functional::cross_entropy(Forward(architecture, w, xs.narrow(0, start, len)),
                                                      ys.narrow(0, start, len));
        loss.backward();
        ::torch::NoGradGuard no_grad;
        for (::torch::Tensor& p : w) p.add_(p.grad(), -options.learning_rate);
        ++result.steps;
      }
    }
    result.last_loss = loss.item<double>();
    return result;
  });
}

}  // namespace tessera::client::torch
