// libtorch lives here (and in torch_export.cc). Every entry point runs its libtorch calls inside
// RunGuarded(), which turns c10::Error / std::exception into absl::Status.
//
// Determinism: training draws no randomness from libtorch (zoo models have no dropout; the
// shuffle comes from core::Rng), and zoo initialization uses its own seeded generator, so
// results do not depend on which other trainers run at the same time.
#include "client/torch/torch_trainer.h"

#include <dlfcn.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <map>
#include <numeric>
#include <string_view>
#include <utility>

#include "client/torch/torch_internal.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::client::torch {

using internal::CheckLayout;
using internal::LoadWeights;
using internal::NamedState;
using internal::RunGuarded;

// A model the trainer can run, whatever built it. The tensors returned by State() and
// Parameters() alias the model's own storage: writing into them (in place) changes the model.
class TorchModel {
 public:
  virtual ~TorchModel() = default;
  // Logits [B, C] for inputs [B, ...input_shape].
  virtual ::torch::Tensor Forward(const ::torch::Tensor& x) = 0;
  virtual void SetTraining(bool on) = 0;
  // Named parameters, then named buffers (recursive names, e.g. "fc1.weight").
  const NamedState& State() const { return state_; }
  // The parameters SGD updates (those that require grad).
  const std::vector<::torch::Tensor>& Parameters() const { return trainable_; }

 protected:
  // Subclasses call this once their module exists.
  void CacheState(NamedState params, NamedState buffers) {
    for (auto& [name, t] : params) {
      if (t.requires_grad()) trainable_.push_back(t);
    }
    state_ = std::move(params);
    for (auto& entry : buffers) state_.push_back(std::move(entry));
  }

 private:
  NamedState state_;
  std::vector<::torch::Tensor> trainable_;
};

namespace {

constexpr int64_t kEvalBatchSize = 1000;

// ---------------------------------------------------------------------------------------------
// The zoo (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
// Decentralized Data"), as torch::nn modules so parameter names are "fc1.weight", ...

struct ZooNet : ::torch::nn::Module {
  virtual ::torch::Tensor forward(::torch::Tensor x) = 0;
};

// torch::nn::Linear and Conv2d (5x5, stride 1, padding 2) with the same parameters and forward,
// minus the default initialization: every trainer loads its weights before it runs and
// InitialWeights draws its own (ZooModel::Reinitialize), so the default draw (~0.3 ms for the
// 2NN) was wasted on every virtual client's trainer. The parameters start uninitialized.
struct LinearLayer final : ::torch::nn::Module {
  LinearLayer(int64_t inputs, int64_t outputs)
      : weight(register_parameter("weight", ::torch::empty({outputs, inputs}))),
        bias(register_parameter("bias", ::torch::empty({outputs}))) {}
  ::torch::Tensor forward(const ::torch::Tensor& x) { return ::torch::linear(x, weight, bias); }
  ::torch::Tensor weight, bias;
};

struct Conv5x5Layer final : ::torch::nn::Module {
  Conv5x5Layer(int64_t in_channels, int64_t out_channels)
      : weight(register_parameter("weight", ::torch::empty({out_channels, in_channels, 5, 5}))),
        bias(register_parameter("bias", ::torch::empty({out_channels}))) {}
  ::torch::Tensor forward(const ::torch::Tensor& x) { return ::torch::conv2d(x, weight, bias, 1, 2); }
  ::torch::Tensor weight, bias;
};

template <typename Layer>
std::shared_ptr<Layer> Add(::torch::nn::Module& parent, const std::string& name, int64_t in, int64_t out) {
  return parent.register_module(name, std::make_shared<Layer>(in, out));
}

struct LogRegNet final : ZooNet {
  LogRegNet(int64_t inputs, int64_t classes) : fc(Add<LinearLayer>(*this, "fc", inputs, classes)) {}
  ::torch::Tensor forward(::torch::Tensor x) override { return fc->forward(x.flatten(1)); }
  std::shared_ptr<LinearLayer> fc;
};

struct MlpNet final : ZooNet {
  MlpNet(int64_t inputs, int64_t classes)
      : fc1(Add<LinearLayer>(*this, "fc1", inputs, 200)),
        fc2(Add<LinearLayer>(*this, "fc2", 200, 200)),
        fc3(Add<LinearLayer>(*this, "fc3", 200, classes)) {}
  ::torch::Tensor forward(::torch::Tensor x) override {
    x = ::torch::relu(fc1->forward(x.flatten(1)));
    x = ::torch::relu(fc2->forward(x));
    return fc3->forward(x);
  }
  std::shared_ptr<LinearLayer> fc1, fc2, fc3;
};

struct CnnNet final : ZooNet {
  CnnNet(int64_t channels, int64_t height, int64_t width, int64_t classes)
      : conv1(Add<Conv5x5Layer>(*this, "conv1", channels, 32)),
        conv2(Add<Conv5x5Layer>(*this, "conv2", 32, 64)),
        fc1(Add<LinearLayer>(*this, "fc1", 64 * (height / 4) * (width / 4), 512)),
        fc2(Add<LinearLayer>(*this, "fc2", 512, classes)) {}
  ::torch::Tensor forward(::torch::Tensor x) override {
    x = ::torch::max_pool2d(::torch::relu(conv1->forward(x)), 2);
    x = ::torch::max_pool2d(::torch::relu(conv2->forward(x)), 2);
    x = ::torch::relu(fc1->forward(x.flatten(1)));
    return fc2->forward(x);
  }
  std::shared_ptr<Conv5x5Layer> conv1, conv2;
  std::shared_ptr<LinearLayer> fc1, fc2;
};

NamedState ToNamedState(const ::torch::OrderedDict<std::string, ::torch::Tensor>& dict) {
  NamedState out;
  out.reserve(dict.size());
  for (const auto& item : dict) out.emplace_back(item.key(), item.value());
  return out;
}

class ZooModel final : public TorchModel {
 public:
  explicit ZooModel(std::shared_ptr<ZooNet> net) : net_(std::move(net)) {
    CacheState(ToNamedState(net_->named_parameters()), ToNamedState(net_->named_buffers()));
  }
  ::torch::Tensor Forward(const ::torch::Tensor& x) override { return net_->forward(x); }
  void SetTraining(bool on) override { net_->train(on); }

  // PyTorch's default Linear / Conv2d initialization (kaiming_uniform with a = sqrt(5) for the
  // weight, uniform in +-1/sqrt(fan_in) for the bias; both reduce to +-1/sqrt(fan_in)), drawn
  // from a generator of our own so the result depends on `seed` only.
  void Reinitialize(uint64_t seed) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    ::torch::NoGradGuard no_grad;
    std::map<std::string, double> bounds;  // module prefix -> 1/sqrt(fan_in)
    for (const auto& [name, t] : State()) {
      const size_t dot = name.rfind('.');
      const std::string prefix = dot == std::string::npos ? "" : name.substr(0, dot);
      if (t.dim() >= 2) {
        const int64_t fan_in = t.numel() / t.size(0);
        bounds[prefix] = 1.0 / std::sqrt(static_cast<double>(fan_in));
      }
      const auto it = bounds.find(prefix);
      const double bound = it == bounds.end() ? 1.0 : it->second;
      ::torch::Tensor param = t;
      param.uniform_(-bound, bound, gen);
    }
  }

 private:
  std::shared_ptr<ZooNet> net_;
};

class ScriptModel final : public TorchModel {
 public:
  explicit ScriptModel(::torch::jit::Module module) : module_(std::move(module)) {
    CacheState(internal::ScriptState(module_), {});
  }
  ::torch::Tensor Forward(const ::torch::Tensor& x) override {
    return module_.forward({x}).toTensor();
  }
  void SetTraining(bool on) override { module_.train(on); }

 private:
  ::torch::jit::Module module_;
};

// ---------------------------------------------------------------------------------------------
// Building and checking models.

bool IsZooName(const std::string& a) { return a == "logreg" || a == "mlp" || a == "cnn"; }

bool LooksLikePath(const std::string& a) {
  auto ends_with = [&](std::string_view suffix) {
    return a.size() >= suffix.size() && a.compare(a.size() - suffix.size(), suffix.size(),
                                                  suffix.data(), suffix.size()) == 0;
  };
  return a.find('/') != std::string::npos || ends_with(".pt") || ends_with(".pth");
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::Status ValidateSpec(const ModelSpec& spec) {
  if (spec.num_classes < 1) {
    return absl::InvalidArgumentError(
        core::StrCat("num_classes must be positive, got ", spec.num_classes));
  }
  if (spec.input_shape.empty()) return absl::InvalidArgumentError("input_shape is empty");
  for (int64_t d : spec.input_shape) {
    if (d < 1 || d > (int64_t{1} << 24)) {
      return absl::InvalidArgumentError(core::StrCat(
          "input_shape ", core::ShapeString(spec.input_shape), " has a dimension out of range"));
    }
  }
  if (Numel(spec.input_shape) > (int64_t{1} << 28)) {
    return absl::InvalidArgumentError(
        core::StrCat("input_shape ", core::ShapeString(spec.input_shape), " is too large"));
  }
  if (spec.architecture == "cnn") {
    const auto& s = spec.input_shape;
    if (s.size() != 3 || s[1] % 4 != 0 || s[2] % 4 != 0) {
      return absl::InvalidArgumentError(
          core::StrCat("cnn needs input_shape [C,H,W] with H and W divisible by 4, got ",
                       core::ShapeString(s)));
    }
  }
  if (!IsZooName(spec.architecture) && !LooksLikePath(spec.architecture)) {
    return absl::InvalidArgumentError(core::StrCat(
        "unknown architecture '", spec.architecture,
        "' (expected logreg, mlp, cnn or the path of a TorchScript .pt file)"));
  }
  return absl::OkStatus();
}

std::unique_ptr<ZooModel> BuildZoo(const ModelSpec& spec) {
  const int64_t d = Numel(spec.input_shape);
  const int64_t c = spec.num_classes;
  std::shared_ptr<ZooNet> net;
  if (spec.architecture == "logreg") {
    net = std::make_shared<LogRegNet>(d, c);
  } else if (spec.architecture == "mlp") {
    net = std::make_shared<MlpNet>(d, c);
  } else {
    const auto& s = spec.input_shape;
    net = std::make_shared<CnnNet>(s[0], s[1], s[2], c);
  }
  return std::make_unique<ZooModel>(std::move(net));
}

absl::StatusOr<std::unique_ptr<TorchModel>> LoadScript(const std::string& path) {
  TESSERA_ASSIGN_OR_RETURN(::torch::jit::Module module, internal::LoadScriptModule(path));
  return RunGuarded(absl::StatusCode::kInvalidArgument,
                    core::StrCat("cannot read the state of TorchScript model '", path, "'"),
                    [&]() -> absl::StatusOr<std::unique_ptr<TorchModel>> {
                      return std::make_unique<ScriptModel>(std::move(module));
                    });
}

// Runs one zero example through the model (eval mode, no grad): the output must be float
// logits of shape [1, num_classes]. Catches TorchScript models that do not fit the spec.
absl::Status CheckOutputShape(TorchModel& model, const ModelSpec& spec) {
  return RunGuarded(
      absl::StatusCode::kInvalidArgument,
      core::StrCat("model '", spec.architecture, "' fails on an input of shape [1,",
                   core::ShapeString(spec.input_shape).substr(1)),
      [&]() -> absl::Status {
        ::torch::NoGradGuard no_grad;
        std::vector<int64_t> shape = {1};
        shape.insert(shape.end(), spec.input_shape.begin(), spec.input_shape.end());
        model.SetTraining(false);
        ::torch::Tensor out = model.Forward(::torch::zeros(shape, ::torch::kFloat32));
        if (out.scalar_type() != ::torch::kFloat32 || out.dim() != 2 || out.size(0) != 1 ||
            out.size(1) != spec.num_classes) {
          return absl::InvalidArgumentError(core::StrCat(
              "model '", spec.architecture, "' maps an input of shape [1,",
              core::ShapeString(spec.input_shape).substr(1), " to a ",
              c10::toString(out.scalar_type()), " tensor of shape ",
              core::ShapeString(out.sizes().vec()), ", expected Float [1,", spec.num_classes,
              "]"));
        }
        return absl::OkStatus();
      });
}

absl::StatusOr<std::unique_ptr<TorchModel>> BuildModel(const ModelSpec& spec) {
  TESSERA_RETURN_IF_ERROR(ValidateSpec(spec));
  std::unique_ptr<TorchModel> model;
  if (IsZooName(spec.architecture)) {
    TESSERA_ASSIGN_OR_RETURN(
        model, RunGuarded(absl::StatusCode::kInternal, "cannot build the zoo model",
                          [&]() -> absl::StatusOr<std::unique_ptr<TorchModel>> {
                            return BuildZoo(spec);
                          }));
  } else {
    TESSERA_ASSIGN_OR_RETURN(model, LoadScript(spec.architecture));
  }
  TESSERA_RETURN_IF_ERROR(CheckOutputShape(*model, spec));
  return model;
}

// ---------------------------------------------------------------------------------------------
// torch <-> core conversion.

absl::StatusOr<core::DType> ToCoreDType(c10::ScalarType type, const std::string& name) {
  switch (type) {
    case ::torch::kFloat32: return core::DType::kFloat32;
    case ::torch::kFloat64: return core::DType::kFloat64;
    case ::torch::kInt64: return core::DType::kInt64;
    case ::torch::kInt32: return core::DType::kInt32;
    case ::torch::kUInt8: return core::DType::kUInt8;
    default:
      return absl::InvalidArgumentError(core::StrCat(
          "tensor '", name, "' has unsupported dtype ", c10::toString(type)));
  }
}

c10::ScalarType ToTorchDType(core::DType type) {
  switch (type) {
    case core::DType::kFloat32: return ::torch::kFloat32;
    case core::DType::kFloat64: return ::torch::kFloat64;
    case core::DType::kInt64: return ::torch::kInt64;
    case core::DType::kInt32: return ::torch::kInt32;
    case core::DType::kUInt8: return ::torch::kUInt8;
  }
  return ::torch::kFloat32;
}

// May throw (callers run it guarded).
absl::StatusOr<core::ModelWeights> StateToWeights(const NamedState& state) {
  core::ModelWeights weights;
  weights.tensors.reserve(state.size());
  for (const auto& [name, t] : state) {
    TESSERA_ASSIGN_OR_RETURN(core::DType dtype, ToCoreDType(t.scalar_type(), name));
    const ::torch::Tensor c = t.detach().to(::torch::kCPU).contiguous();
    const std::string_view bytes(static_cast<const char*>(c.data_ptr()), c.nbytes());
    TESSERA_ASSIGN_OR_RETURN(core::NamedTensor nt,
                             core::NamedTensor::FromBytes(name, c.sizes().vec(), dtype, bytes));
    weights.tensors.push_back(std::move(nt));
  }
  return weights;
}



absl::Status CheckView(const DatasetView& view, std::string_view which, const ModelSpec& spec) {
  if (view.empty()) return absl::OkStatus();
  if (view.base == nullptr) {
    return absl::InvalidArgumentError(core::StrCat("the ", which, " view has no dataset"));
  }
  const Dataset& data = *view.base;
  const int64_t numel = data.example_numel();
  if (numel != Numel(spec.input_shape)) {
    return absl::InvalidArgumentError(core::StrCat(
        "the ", which, " examples have shape ", core::ShapeString(data.example_shape), " (",
        numel, " values), the model takes ", core::ShapeString(spec.input_shape), " (",
        Numel(spec.input_shape), " values)"));
  }
  if (static_cast<int64_t>(data.features.size()) != data.size() * numel) {
    return absl::InvalidArgumentError(core::StrCat(
        "the ", which, " dataset has ", data.features.size(), " feature values for ",
        data.size(), " examples of ", numel, " values"));
  }
  for (int64_t i = 0; i < view.size(); ++i) {
    const int64_t index = view.indices[i];
    if (index < 0 || index >= data.size()) {
      return absl::InvalidArgumentError(core::StrCat("the ", which, " view has index ", index,
                                                     " outside [0, ", data.size(), ")"));
    }
    const int64_t label = data.labels[index];
    if (label < 0 || label >= spec.num_classes) {
      return absl::InvalidArgumentError(core::StrCat("the ", which, " example ", index,
                                                     " has label ", label, " outside [0, ",
                                                     spec.num_classes, ")"));
    }
  }
  return absl::OkStatus();
}

std::vector<int64_t> BatchShape(int64_t batch, const std::vector<int64_t>& input_shape) {
  std::vector<int64_t> shape = {batch};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  return shape;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Shared with torch_export.cc (torch_internal.h).

namespace internal {

std::string Summarize(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  const size_t first_end = s.find('\n');
  if (first_end == std::string_view::npos) return std::string(s);
  const size_t last_start = s.rfind('\n') + 1;
  return core::StrCat(s.substr(0, first_end), " ... ", s.substr(last_start));
}

NamedState ScriptState(const ::torch::jit::Module& module) {
  NamedState state;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) state.emplace_back(p.name, p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) state.emplace_back(b.name, b.value);
  return state;
}

absl::StatusOr<::torch::jit::Module> LoadScriptModule(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    return absl::NotFoundError(core::StrCat("TorchScript model '", path, "' does not exist"));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(
        core::StrCat("TorchScript model '", path, "' is not a regular file"));
  }
  return RunGuarded(absl::StatusCode::kInvalidArgument,
                    core::StrCat("cannot load TorchScript model '", path, "'"),
                    [&]() -> absl::StatusOr<::torch::jit::Module> {
                      return ::torch::jit::load(path, ::torch::kCPU);
                    });
}

absl::Status CheckLayout(const core::ModelWeights& weights, const NamedState& state) {
  if (weights.tensors.size() != state.size()) {
    return absl::InvalidArgumentError(
        core::StrCat("expected ", state.size(), " tensors, got ", weights.tensors.size()));
  }
  for (size_t i = 0; i < state.size(); ++i) {
    const core::NamedTensor& a = weights.tensors[i];
    const auto& [name, t] = state[i];
    if (a.name() != name) {
      return absl::InvalidArgumentError(
          core::StrCat("tensor ", i, " is '", a.name(), "', expected '", name, "'"));
    }
    TESSERA_ASSIGN_OR_RETURN(core::DType dtype, ToCoreDType(t.scalar_type(), name));
    if (a.dtype() != dtype) {
      return absl::InvalidArgumentError(
          core::StrCat("tensor '", a.name(), "' has dtype ", core::DTypeName(a.dtype()),
                       ", expected ", core::DTypeName(dtype)));
    }
    const std::vector<int64_t> shape = t.sizes().vec();
    if (a.shape() != shape) {
      return absl::InvalidArgumentError(
          core::StrCat("tensor '", a.name(), "' has shape ", core::ShapeString(a.shape()),
                       ", expected ", core::ShapeString(shape)));
    }
  }
  return absl::OkStatus();
}

absl::Status LoadWeights(const core::ModelWeights& weights, const NamedState& state) {
  TESSERA_RETURN_IF_ERROR(CheckLayout(weights, state));
  ::torch::NoGradGuard no_grad;
  for (size_t i = 0; i < state.size(); ++i) {
    const core::NamedTensor& src = weights.tensors[i];
    ::torch::Tensor dst = state[i].second;
    const ::torch::Tensor view = ::torch::from_blob(
        const_cast<uint8_t*>(src.bytes().data()), src.shape(),
        ::torch::TensorOptions().dtype(ToTorchDType(src.dtype())));
    dst.copy_(view);
  }
  return absl::OkStatus();
}

}  // namespace internal

// ---------------------------------------------------------------------------------------------
// Public API.

absl::StatusOr<core::ModelWeights> InitialWeights(const ModelSpec& spec, uint64_t seed) {
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<TorchModel> model, BuildModel(spec));
  return RunGuarded(absl::StatusCode::kInternal, "cannot read the initial weights",
                    [&]() -> absl::StatusOr<core::ModelWeights> {
                      if (auto* zoo = dynamic_cast<ZooModel*>(model.get())) {
                        zoo->Reinitialize(seed);
                      }
                      return StateToWeights(model->State());
                    });
}

absl::StatusOr<std::unique_ptr<TorchTrainer>> TorchTrainer::Create(ModelSpec spec,
                                                                   DatasetView train,
                                                                   DatasetView eval) {
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<TorchModel> model, BuildModel(spec));
  TESSERA_RETURN_IF_ERROR(CheckView(train, "train", spec));
  TESSERA_RETURN_IF_ERROR(CheckView(eval, "eval", spec));
  return std::unique_ptr<TorchTrainer>(
      new TorchTrainer(std::move(spec), std::move(train), std::move(eval), std::move(model)));
}

TorchTrainer::TorchTrainer(ModelSpec spec, DatasetView train, DatasetView eval,
                           std::unique_ptr<TorchModel> model)
    : spec_(std::move(spec)),
      train_(std::move(train)),
      eval_(std::move(eval)),
      model_(std::move(model)) {}

TorchTrainer::~TorchTrainer() = default;

int64_t TorchTrainer::num_state_elements() const {
  int64_t n = 0;
  for (const auto& [name, t] : model_->State()) n += t.numel();
  return n;
}

absl::StatusOr<TrainOutput> TorchTrainer::Train(const core::ModelWeights& global,
                                                const core::TrainConfig& config) {
  return TrainToward(global, global, config);
}

absl::StatusOr<TrainOutput> TorchTrainer::TrainToward(const core::ModelWeights& start,
                                                      const core::ModelWeights& anchor,
                                                      const core::TrainConfig& config) {
  if (train_.empty()) return absl::FailedPreconditionError("no local training data");
  if (config.local_epochs < 1 || config.batch_size < 1) {
    return absl::InvalidArgumentError(
        core::StrCat("local_epochs (", config.local_epochs, ") and batch_size (",
                     config.batch_size, ") must be positive"));
  }
  if (!std::isfinite(config.learning_rate)) {
    return absl::InvalidArgumentError("learning_rate is not finite");
  }
  if (!(config.proximal_mu >= 0) || !std::isfinite(config.proximal_mu)) {
    return absl::InvalidArgumentError("proximal_mu must be finite and not negative");
  }
  if (config.proximal_mu > 0) TESSERA_RETURN_IF_ERROR(CheckLayout(anchor, model_->State()));
  return RunGuarded(absl::StatusCode::kInternal, "training failed",
                    [&] { return TrainImpl(start, anchor, config); });
}

absl::StatusOr<core::Metrics> TorchTrainer::Evaluate(const core::ModelWeights& weights) {
  if (eval_.empty()) return absl::FailedPreconditionError("no local evaluation data");
  return RunGuarded(absl::StatusCode::kInternal, "evaluation failed",
                    [&] { return EvaluateImpl(weights); });
}

absl::StatusOr<TrainOutput> TorchTrainer::TrainImpl(const core::ModelWeights& start,
                                                    const core::ModelWeights& anchor,
                                                    const core::TrainConfig& config) {
  // Picks up ConfigureTorchThreads() in this (possibly pool) thread.
  at::init_num_threads();
  TESSERA_RETURN_IF_ERROR(LoadWeights(start, model_->State()));
  model_->SetTraining(true);
  // The proximal term's anchor, one tensor per trainable parameter (state order).
  const double mu = config.proximal_mu;
  std::vector<::torch::Tensor> anchors;
  if (mu > 0) {
    const NamedState& state = model_->State();
    for (size_t i = 0; i < state.size(); ++i) {
      if (!state[i].second.requires_grad()) continue;
      const core::NamedTensor& a = anchor.tensors[i];
      anchors.push_back(::torch::from_blob(const_cast<uint8_t*>(a.bytes().data()), a.shape(),
                                           ::torch::TensorOptions().dtype(ToTorchDType(a.dtype())))
                            .clone());
    }
  }
  int64_t steps = 0;
  const int64_t max_steps = config.max_steps > 0 ? config.max_steps : std::numeric_limits<int64_t>::max();

  const int64_t n = train_.size();
  const int64_t numel = Numel(spec_.input_shape);
  const int64_t batch_size = config.batch_size;
  const double lr = config.learning_rate;
  const std::vector<::torch::Tensor>& params = model_->Parameters();

  // One contiguous copy of the shuffled epoch; batches are views into it.
  ::torch::Tensor x = ::torch::empty({n, numel}, ::torch::kFloat32);
  ::torch::Tensor y = ::torch::empty({n}, ::torch::kInt64);
  float* x_data = x.data_ptr<float>();
  int64_t* y_data = y.data_ptr<int64_t>();
  std::vector<int64_t> order(n);
  std::vector<int64_t> batch_shape = BatchShape(0, spec_.input_shape);

  // The last epoch's metrics: each step parks its loss and logits here (two small copies) and
  // the epoch reads them once at the end; reading them per step (item(), argmax) cost ~10 us a
  // step, 4% of an MLP step at batch 10.
  const int64_t max_epoch_steps = (n + batch_size - 1) / batch_size;
  ::torch::Tensor step_losses = ::torch::empty({max_epoch_steps}, ::torch::kFloat32);
  ::torch::Tensor epoch_logits = ::torch::empty({n, spec_.num_classes}, ::torch::kFloat32);
  int64_t metric_steps = 0;
  int64_t seen = 0;  // examples of the last epoch that ran (maybe cut short by max_steps)
  for (int epoch = 0; epoch < config.local_epochs && steps < max_steps; ++epoch) {
    std::iota(order.begin(), order.end(), int64_t{0});
    core::Rng rng(config.seed, {static_cast<uint64_t>(epoch)});
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(x_data + i * numel, train_.example(order[i]), numel * sizeof(float));
      y_data[i] = train_.label(order[i]);
    }
    // Metrics come from the last epoch that runs (the step budget may end it early).
    const int64_t epoch_steps = (n + batch_size - 1) / batch_size;
    const bool last_epoch = epoch == config.local_epochs - 1 || max_steps - steps <= epoch_steps;
    for (int64_t start = 0; start < n && steps < max_steps; start += batch_size, ++steps) {
      const int64_t len = std::min(batch_size, n - start);
      batch_shape[0] = len;
      const ::torch::Tensor xb = x.narrow(0, start, len).view(batch_shape);
      const ::torch::Tensor yb = y.narrow(0, start, len);
      for (const ::torch::Tensor& p : params) {
        if (p.grad().defined()) p.grad().zero_();
      }
      const ::torch::Tensor logits = model_->Forward(xb);
      const ::torch::Tensor loss = ::torch::nn::functional::cross_entropy(logits, yb);
      loss.backward();
      {
        ::torch::NoGradGuard no_grad;
        for (size_t k = 0; k < params.size(); ++k) {
          const ::torch::Tensor& p = params[k];
          if (!p.grad().defined()) continue;
          ::torch::Tensor param = p;
          if (mu > 0) {
            // d/dw mu/2 ||w - a||^2 = mu (w - a), taken at the weights before this step.
            param.add_(p.grad() + mu * (p - anchors[k]), -lr);
          } else {
            param.add_(p.grad(), -lr);
          }
        }
        if (last_epoch) {
          step_losses.select(0, metric_steps++).copy_(loss);
          epoch_logits.narrow(0, start, len).copy_(logits);
          seen = start + len;
        }
      }
    }
  }
  // Examples [0, seen) of the last epoch's order ran, in steps of batch_size.
  double loss_sum = 0;
  const float* losses = step_losses.data_ptr<float>();
  for (int64_t k = 0; k < metric_steps; ++k) {
    loss_sum += static_cast<double>(losses[k]) * static_cast<double>(std::min(batch_size, seen - k * batch_size));
  }
  const int64_t correct =
      seen == 0 ? 0 : epoch_logits.narrow(0, 0, seen).argmax(1).eq(y.narrow(0, 0, seen)).sum().item<int64_t>();

  TrainOutput out;
  TESSERA_ASSIGN_OR_RETURN(out.weights, StateToWeights(model_->State()));
  out.num_examples = n;
  out.metrics["train_loss"] = loss_sum / static_cast<double>(std::max<int64_t>(seen, 1));
  out.metrics["train_accuracy"] = static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(seen, 1));
  return out;
}

absl::StatusOr<core::Metrics> TorchTrainer::EvaluateImpl(const core::ModelWeights& weights) {
  at::init_num_threads();
  TESSERA_RETURN_IF_ERROR(LoadWeights(weights, model_->State()));
  model_->SetTraining(false);
  ::torch::NoGradGuard no_grad;

  const int64_t n = eval_.size();
  const int64_t numel = Numel(spec_.input_shape);
  const int64_t capacity = std::min(n, kEvalBatchSize);
  ::torch::Tensor x = ::torch::empty({capacity, numel}, ::torch::kFloat32);
  ::torch::Tensor y = ::torch::empty({capacity}, ::torch::kInt64);
  float* x_data = x.data_ptr<float>();
  int64_t* y_data = y.data_ptr<int64_t>();
  std::vector<int64_t> batch_shape = BatchShape(0, spec_.input_shape);
  const auto sum = ::torch::nn::functional::CrossEntropyFuncOptions().reduction(::torch::kSum);

  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t start = 0; start < n; start += kEvalBatchSize) {
    const int64_t len = std::min(kEvalBatchSize, n - start);
    for (int64_t i = 0; i < len; ++i) {
      std::memcpy(x_data + i * numel, eval_.example(start + i), numel * sizeof(float));
      y_data[i] = eval_.label(start + i);
    }
    batch_shape[0] = len;
    const ::torch::Tensor yb = y.narrow(0, 0, len);
    const ::torch::Tensor logits = model_->Forward(x.narrow(0, 0, len).view(batch_shape));
    loss_sum += ::torch::nn::functional::cross_entropy(logits, yb, sum).item<double>();
    correct += logits.argmax(1).eq(yb).sum().item<int64_t>();
  }
  return core::Metrics{
      {"loss", loss_sum / static_cast<double>(n)},
      {"accuracy", static_cast<double>(correct) / static_cast<double>(n)},
      {"num_examples", static_cast<double>(n)},
  };
}

absl::StatusOr<std::vector<float>> TorchTrainer::Predict(const core::ModelWeights& weights,
                                                         std::span<const float> inputs) {
  TESSERA_RETURN_IF_ERROR(LoadForPrediction(weights));
  return PredictLoaded(inputs);
}

absl::Status TorchTrainer::LoadForPrediction(const core::ModelWeights& weights) {
  return RunGuarded(absl::StatusCode::kInternal, "prediction failed", [&]() -> absl::Status {
    TESSERA_RETURN_IF_ERROR(LoadWeights(weights, model_->State()));
    model_->SetTraining(false);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<float>> TorchTrainer::PredictLoaded(std::span<const float> inputs) {
  const int64_t numel = Numel(spec_.input_shape);
  const int64_t n = static_cast<int64_t>(inputs.size()) / numel;
  if (n < 1 || static_cast<int64_t>(inputs.size()) != n * numel) {
    return absl::InvalidArgumentError(core::StrCat("Predict takes a positive multiple of ", numel,
                                                   " input values, got ", inputs.size()));
  }
  return RunGuarded(absl::StatusCode::kInternal, "prediction failed",
                    [&]() -> absl::StatusOr<std::vector<float>> {
                      at::init_num_threads();
                      model_->SetTraining(false);
                      ::torch::NoGradGuard no_grad;
                      std::vector<float> out(static_cast<size_t>(n * spec_.num_classes));
                      for (int64_t start = 0; start < n; start += kEvalBatchSize) {
                        const int64_t len = std::min(kEvalBatchSize, n - start);
                        const ::torch::Tensor x = ::torch::from_blob(
                            const_cast<float*>(inputs.data() + start * numel),
                            BatchShape(len, spec_.input_shape), ::torch::kFloat32);
                        const ::torch::Tensor logits = model_->Forward(x).contiguous();
                        std::memcpy(out.data() + start * spec_.num_classes, logits.data_ptr<float>(),
                                    static_cast<size_t>(logits.numel()) * sizeof(float));
                      }
                      return out;
                    });
}

void ConfigureTorchThreads(int intra_op_threads) {
  const int n = std::max(1, intra_op_threads);
  try {
    at::set_num_threads(n);
  } catch (const std::exception&) {
    // Only fails for n < 1, excluded above.
  }
  using SetThreadsFn = void (*)(int);
  if (void* sym = dlsym(RTLD_DEFAULT, "openblas_set_num_threads")) {
    reinterpret_cast<SetThreadsFn>(sym)(n);
  }
}

std::string BlasBackendName() {
  return dlsym(RTLD_DEFAULT, "openblas_set_num_threads") != nullptr ? "openblas" : "reference";
}

}  // namespace tessera::client::torch
