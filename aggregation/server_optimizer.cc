#include "aggregation/server_optimizer.h"

#include <cmath>
#include <span>

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

ServerOptimizer::Moments ServerOptimizer::Advance(Moments old, double delta) const {
  if (options_.kind == ServerOptimizerKind::kAvgM) {
    return {static_cast<float>(options_.momentum * old.m + delta), old.v};
  }
  const double b2 = options_.beta2;
  const double d2 = delta * delta;
  double v = old.v;
  switch (options_.kind) {
    case ServerOptimizerKind::kAdam:
      v = b2 * v + (1 - b2) * d2;
      break;
    case ServerOptimizerKind::kYogi:
      v = v - (1 - b2) * d2 * ((v > d2) - (v < d2));
      break;
    default:  // Adagrad
      v = v + d2;
      break;
  }
  return {static_cast<float>(options_.beta1 * old.m + (1 - options_.beta1) * delta), static_cast<float>(v)};
}

double ServerOptimizer::StepOf(Moments now) const {
  if (options_.kind == ServerOptimizerKind::kAvgM) return options_.learning_rate * now.m;
  return options_.learning_rate * now.m / (std::sqrt(static_cast<double>(now.v)) + options_.tau);
}

absl::StatusOr<ModelWeights> ServerOptimizer::Step(const ModelWeights& global, const ModelWeights& aggregate) {
  TESSERA_RETURN_IF_ERROR(aggregate.CheckSameLayout(global));
  const bool fresh = m_.tensors.empty();
  if (fresh) {
    m_ = Filled(global, 0.0f);
    v_ = Filled(global, static_cast<float>(options_.tau * options_.tau));
  }
  // Two passes, so that the state is updated in place yet only when the whole step is finite:
  // the first computes the next model (and checks the new moments), the second stores the
  // moments, computed again by the same code.
  auto for_each = [&](auto&& visit) {
    for (size_t t = 0; t < global.tensors.size(); ++t) {
      if (global.tensors[t].dtype() != DType::kFloat32) continue;
      auto x = global.tensors[t].f32();
      auto mean = aggregate.tensors[t].f32();
      auto m = m_.tensors[t].mutable_f32();
      auto v = v_.tensors[t].mutable_f32();
      for (size_t i = 0; i < x.size(); ++i) {
        visit(t, i, x[i], Advance({m[i], v[i]}, static_cast<double>(mean[i]) - x[i]), m[i], v[i]);
      }
    }
  };
  absl::Status status = global.CheckSameLayout(m_);
  ModelWeights next;
  if (status.ok()) {
    next = aggregate;
    bool finite = true;
    std::span<float> out;
    size_t out_tensor = global.tensors.size();
    for_each([&](size_t t, size_t i, float x, Moments now, float&, float&) {
      if (t != out_tensor) out = next.tensors[out_tensor = t].mutable_f32();
      out[i] = static_cast<float>(x + StepOf(now));
      finite = finite && std::isfinite(out[i]) && std::isfinite(now.m) && std::isfinite(now.v);
    });
    if (!finite) {
      status = absl::InvalidArgumentError(StrCat(ServerOptimizerName(options_.kind), ": the server step is not finite"));
    }
  }
  if (!status.ok()) {
    if (fresh) m_ = v_ = ModelWeights{};
    return status;
  }
  for_each([](size_t, size_t, float, Moments now, float& m, float& v) {
    m = now.m;
    v = now.v;
  });
  ++steps_;
  return next;
}

}  // namespace tessera::aggregation
