// TorchScript export. The zoo's modules are rebuilt from TorchScript source (torch::jit::Module
// + define()), one submodule per layer so the parameter names match the trainer's state; the
// source below must compute what the torch::nn modules of torch_trainer.cc compute (the export
// test checks the logits against TorchTrainer::Predict through Python).
#include "client/torch/torch_export.h"

#include <torch/script.h>

#include <cmath>
#include <initializer_list>
#include <sstream>

#include "client/torch/torch_internal.h"
#include "core/file_io.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::client::torch {
namespace {

using core::StrCat;
using internal::RunGuarded;

// The data readers' arithmetic (client/data): float64, then rounded to float32.
constexpr char kNormalize[] = R"(
def normalize(self, x):
    return ((x.double() * self.input_scale - self.input_mean) / self.input_stddev).float()
)";

constexpr char kLinearForward[] = R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)";

// torch::nn::Conv2d(Conv2dOptions(in, out, 5).padding(2)): stride 1, padding 2.
constexpr char kConvForward[] = R"(
def forward(self, x):
    return torch.conv2d(x, self.weight, self.bias, [1, 1], [2, 2])
)";

// One layer named `name` with zero parameters of the layout in `layout` (name.weight, name.bias).
absl::StatusOr<::torch::jit::Module> Layer(const core::ModelWeights& layout, const std::string& name,
                                           const char* forward) {
  ::torch::jit::Module layer(StrCat("__torch__.tessera_export.", name));
  for (const char* part : {"weight", "bias"}) {
    const core::NamedTensor* t = layout.Find(StrCat(name, ".", part));
    if (t == nullptr) return absl::InvalidArgumentError(StrCat("the model has no tensor '", name, ".", part, "'"));
    layer.register_parameter(part, ::torch::zeros(t->shape(), ::torch::kFloat32), /*is_buffer=*/false);
  }
  layer.define(forward);
  return layer;
}

std::string ZooForward(const ModelSpec& spec) {
  if (spec.architecture == "logreg") {
    return R"(
def forward(self, x):
    return self.fc.forward(self.normalize(x).flatten(1))
)";
  }
  if (spec.architecture == "mlp") {
    return R"(
def forward(self, x):
    x = torch.relu(self.fc1.forward(self.normalize(x).flatten(1)))
    x = torch.relu(self.fc2.forward(x))
    return self.fc3.forward(x)
)";
  }
  const auto& s = spec.input_shape;
  return StrCat(R"(
def forward(self, x):
    x = self.normalize(x).reshape([-1, )",
                s[0], ", ", s[1], ", ", s[2], R"(])
    x = torch.max_pool2d(torch.relu(self.conv1.forward(x)), [2, 2])
    x = torch.max_pool2d(torch.relu(self.conv2.forward(x)), [2, 2])
    x = torch.relu(self.fc1.forward(x.flatten(1)))
    return self.fc2.forward(x)
)");
}

// The zoo model of `spec` as a scripted module with zero weights. May throw.
absl::StatusOr<::torch::jit::Module> ZooModule(const ModelSpec& spec) {
  TESSERA_ASSIGN_OR_RETURN(const core::ModelWeights layout, InitialWeights(spec, 0));
  ::torch::jit::Module root("__torch__.tessera_export.Exported");
  std::vector<std::pair<std::string, const char*>> layers;
  if (spec.architecture == "logreg") {
    layers = {{"fc", kLinearForward}};
  } else if (spec.architecture == "mlp") {
    layers = {{"fc1", kLinearForward}, {"fc2", kLinearForward}, {"fc3", kLinearForward}};
  } else {
    layers = {{"conv1", kConvForward}, {"conv2", kConvForward}, {"fc1", kLinearForward}, {"fc2", kLinearForward}};
  }
  for (const auto& [name, forward] : layers) {
    TESSERA_ASSIGN_OR_RETURN(::torch::jit::Module layer, Layer(layout, name, forward));
    root.register_module(name, layer);
  }
  return root;
}

absl::Status BuildAndSave(const ModelSpec& spec, const core::ModelWeights& weights, const Preprocessing& pre,
                          const std::string& path) {
  ::torch::jit::Module root("__torch__.tessera_export.Exported");
  std::string forward;
  if (spec.architecture == "logreg" || spec.architecture == "mlp" || spec.architecture == "cnn") {
    TESSERA_ASSIGN_OR_RETURN(root, ZooModule(spec));
    TESSERA_RETURN_IF_ERROR(internal::LoadWeights(weights, internal::ScriptState(root)));
    forward = ZooForward(spec);
  } else {
    TESSERA_ASSIGN_OR_RETURN(::torch::jit::Module model, internal::LoadScriptModule(spec.architecture));
    TESSERA_RETURN_IF_ERROR(internal::LoadWeights(weights, internal::ScriptState(model)));
    root.register_module("model", model);
    forward = R"(
def forward(self, x):
    return self.model.forward(self.normalize(x))
)";
  }
  root.register_attribute("input_scale", c10::FloatType::get(), pre.scale);
  root.register_attribute("input_mean", c10::FloatType::get(), pre.mean);
  root.register_attribute("input_stddev", c10::FloatType::get(), pre.stddev);
  root.define(StrCat(kNormalize, forward));
  root.eval();

  // The module must map one raw example to [1, num_classes] float logits.
  {
    ::torch::NoGradGuard no_grad;
    std::vector<int64_t> shape = {1};
    shape.insert(shape.end(), spec.input_shape.begin(), spec.input_shape.end());
    const ::torch::Tensor out = root.forward({::torch::zeros(shape, ::torch::kFloat32)}).toTensor();
    if (out.scalar_type() != ::torch::kFloat32 || out.dim() != 2 || out.size(0) != 1 ||
        out.size(1) != spec.num_classes) {
      return absl::InvalidArgumentError(StrCat("the exported module maps an input of shape ", core::ShapeString(shape),
                                               " to shape ", core::ShapeString(out.sizes().vec()), ", expected [1,",
                                               spec.num_classes, "]"));
    }
  }
  std::ostringstream bytes;
  root.save(bytes);
  return core::WriteFileAtomic(path, bytes.str());
}

}  // namespace

absl::Status ExportTorchScript(const ModelSpec& spec, const core::ModelWeights& weights, const Preprocessing& pre,
                               const std::string& path) {
  if (!(pre.stddev > 0) || !std::isfinite(pre.stddev) || !std::isfinite(pre.scale) || !std::isfinite(pre.mean)) {
    return absl::InvalidArgumentError(StrCat("preprocessing needs finite scale and mean and a positive stddev, got scale ",
                                             pre.scale, " mean ", pre.mean, " stddev ", pre.stddev));
  }
  return RunGuarded(absl::StatusCode::kInternal, StrCat("cannot export the model as TorchScript to ", path),
                    [&] { return BuildAndSave(spec, weights, pre, path); });
}

absl::StatusOr<ModelSpec> InferZooSpec(const core::ModelWeights& w) {
  auto shape_of = [&](const std::string& name) -> std::vector<int64_t> {
    const core::NamedTensor* t = w.Find(name);
    return t == nullptr ? std::vector<int64_t>{} : t->shape();
  };
  auto names_are = [&](std::initializer_list<const char*> names) {
    if (w.tensors.size() != names.size()) return false;
    size_t i = 0;
    for (const char* n : names) {
      if (w.tensors[i++].name() != n) return false;
    }
    return true;
  };
  auto flat_input = [](int64_t d) { return d == 784 ? std::vector<int64_t>{1, 28, 28} : std::vector<int64_t>{d}; };
  ModelSpec spec;
  if (names_are({"fc.weight", "fc.bias"}) && shape_of("fc.weight").size() == 2) {
    spec.architecture = "logreg";
    spec.input_shape = flat_input(shape_of("fc.weight")[1]);
    spec.num_classes = static_cast<int>(shape_of("fc.weight")[0]);
  } else if (names_are({"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}) &&
             shape_of("fc1.weight").size() == 2 && shape_of("fc3.weight").size() == 2) {
    spec.architecture = "mlp";
    spec.input_shape = flat_input(shape_of("fc1.weight")[1]);
    spec.num_classes = static_cast<int>(shape_of("fc3.weight")[0]);
  } else if (names_are({"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
                        "fc2.weight", "fc2.bias"}) &&
             shape_of("conv1.weight").size() == 4 && shape_of("fc1.weight").size() == 2 &&
             shape_of("fc2.weight").size() == 2) {
    spec.architecture = "cnn";
    const int64_t cells = shape_of("fc1.weight")[1] / 64;  // 64 channels of (H/4) x (W/4)
    const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(cells))));
    if (side < 1 || side * side * 64 != shape_of("fc1.weight")[1]) {
      return absl::InvalidArgumentError(
          StrCat("cannot infer the cnn's input size from fc1.weight ", core::ShapeString(shape_of("fc1.weight")),
                 ": give the input shape"));
    }
    spec.input_shape = {shape_of("conv1.weight")[1], side * 4, side * 4};
    spec.num_classes = static_cast<int>(shape_of("fc2.weight")[0]);
  } else {
    return absl::InvalidArgumentError(
        "the weights are not those of a zoo model (logreg, mlp, cnn): give the architecture (a TorchScript .pt file)");
  }
  return spec;
}

}  // namespace tessera::client::torch
