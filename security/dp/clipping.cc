#include "security/dp/clipping.h"

#include <cmath>

#include "absl/status/status.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::security::dp {
namespace {

void Scale(core::ModelWeights& w, double factor) {
  for (auto& t : w.tensors) {
    if (t.dtype() != core::DType::kFloat32) continue;
    for (float& v : t.mutable_f32()) v = static_cast<float>(static_cast<double>(v) * factor);
  }
}

}  // namespace

double L2Norm(const core::ModelWeights& w) {
  double sum_sq = 0.0;
  for (const auto& t : w.tensors) {
    if (t.dtype() != core::DType::kFloat32) continue;
    for (float v : t.f32()) {
      const double d = v;
      sum_sq += d * d;
    }
  }
  return std::sqrt(sum_sq);
}

absl::StatusOr<double> ClipToL2Norm(core::ModelWeights& update, double max_norm) {
  if (!std::isfinite(max_norm) || max_norm <= 0.0) {
    return absl::InvalidArgumentError(
        core::StrCat("clip norm must be finite and positive, got ", max_norm));
  }
  TESSERA_RETURN_IF_ERROR(update.CheckFinite());
  const double norm = L2Norm(update);
  if (norm <= max_norm) return norm;
  Scale(update, max_norm / norm);
  // Rounding each product to float can leave the norm a few ulps above max_norm. Shrinking by a
  // further relative 2^-20 per pass (far above float rounding) restores the bound; one pass is
  // enough in practice and the loop only guards the theory.
  for (double after = L2Norm(update); after > max_norm; after = L2Norm(update)) {
    Scale(update, (max_norm / after) * (1.0 - std::ldexp(1.0, -20)));
  }
  return norm;
}

}  // namespace tessera::security::dp
