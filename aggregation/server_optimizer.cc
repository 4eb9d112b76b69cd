#include "aggregation/server_optimizer.h"

#include <cmath>

#include "core/status.h"
#include "core/strings.h"

namespace tessera::aggregation {
namespace {

using core::DType;
using core::ModelWeights;
using core::StrCat;

// `layout`'s tensors, float32 ones filled with `value`.
ModelWeights Filled(const ModelWeights& layout, float value) {
  ModelWeights out;
  for (const auto& t : layout.tensors) {
    out.tensors.emplace_back(t.name(), t.shape(), t.dtype());
    if (t.dtype() == DType::kFloat32)
      std::fill(out.tensors.back().mutable_f32().begin(), out.tensors.back().mutable_f32().end(), value);
  }
  return out;
}

bool InUnitInterval(double x) { return x >= 0 && x < 1; }

}  // namespace

std::string ServerOptimizerName(ServerOptimizerKind kind) {
  switch (kind) {
    case ServerOptimizerKind::kAvgM:
      return "fedavgm";
    case ServerOptimizerKind::kAdam:
      return "fedadam";
    case ServerOptimizerKind::kYogi:
      return "fedyogi";
    case ServerOptimizerKind::kAdagrad:
      return "fedadagrad";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<ServerOptimizer>> ServerOptimizer::Create(const ServerOptimizerOptions& o) {
  const std::string name = ServerOptimizerName(o.kind);
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) {
    return absl::InvalidArgumentError(
        StrCat(name, ": the server learning rate must be positive, got ", o.learning_rate));
  }
  if (!InUnitInterval(o.momentum)) {
    return absl::InvalidArgumentError(StrCat(name, ": the server momentum must be in [0, 1), got ", o.momentum));
  }
  if (!InUnitInterval(o.beta1) || !InUnitInterval(o.beta2)) {
    return absl::InvalidArgumentError(
        StrCat(name, ": beta1 and beta2 must be in [0, 1), got ", o.beta1, " and ", o.beta2));
  }
  if (!(o.tau > 0) || !std::isfinite(o.tau)) {
    return absl::InvalidArgumentError(StrCat(name, ": tau must be positive, got ", o.tau));
  }
  return std::unique_ptr<ServerOptimizer>(new ServerOptimizer(o));
}

absl::StatusOr<ModelWeights> ServerOptimizer::Step(const ModelWeights& global, const ModelWeights& aggregate) {
  TESSERA_RETURN_IF_ERROR(aggregate.CheckSameLayout(global));
  const double tau = options_.tau;
  ModelWeights m = m_.tensors.empty() ? Filled(global, 0.0f) : m_;
  ModelWeights v = v_.tensors.empty() ? Filled(global, static_cast<float>(tau * tau)) : v_;
  TESSERA_RETURN_IF_ERROR(global.CheckSameLayout(m));
  ModelWeights next = aggregate;
  const double lr = options_.learning_rate;
  const double b1 = options_.beta1;
  const double b2 = options_.beta2;
  for (size_t t = 0; t < global.tensors.size(); ++t) {
    if (global.tensors[t].dtype() != DType::kFloat32) continue;
    auto x = global.tensors[t].f32();
    auto mean = aggregate.tensors[t].f32();
    auto mt = m.tensors[t].mutable_f32();
    auto vt = v.tensors[t].mutable_f32();
    auto out = next.tensors[t].mutable_f32();
    for (size_t i = 0; i < x.size(); ++i) {
      const double delta = static_cast<double>(mean[i]) - x[i];
      const double d2 = delta * delta;
      double step;
      if (options_.kind == ServerOptimizerKind::kAvgM) {
        mt[i] = static_cast<float>(options_.momentum * mt[i] + delta);
        step = lr * mt[i];
      } else {
        mt[i] = static_cast<float>(b1 * mt[i] + (1 - b1) * delta);
        double vi = vt[i];
        switch (options_.kind) {
          case ServerOptimizerKind::kAdam:
            vi = b2 * vi + (1 - b2) * d2;
            break;
          case ServerOptimizerKind::kYogi:
            vi = vi - (1 - b2) * d2 * ((vi > d2) - (vi < d2));
            break;
          default:
            vi = vi + d2;
            break;  // Adagrad
        }
        vt[i] = static_cast<float>(vi);
        step = lr * mt[i] / (std::sqrt(static_cast<double>(vt[i])) + tau);
      }
      out[i] = static_cast<float>(x[i] + step);
    }
  }
  for (const ModelWeights* w : {&next, &m, &v}) {
    if (absl::Status s = w->CheckFinite(); !s.ok()) {
      return absl::InvalidArgumentError(
          StrCat(ServerOptimizerName(options_.kind), ": the server step is not finite: ", s.message()));
    }
  }
  m_ = std::move(m);
  v_ = std::move(v);
  ++steps_;
  return next;
}

}  // namespace tessera::aggregation
