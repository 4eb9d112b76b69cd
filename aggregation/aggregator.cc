#include "aggregation/aggregator.h"

#include <cmath>

#include "core/status.h"
#include "core/strings.h"

namespace tessera::aggregation {

absl::Status CheckUpdate(const WeightedUpdate& update, const core::ModelWeights& layout) {
  if (!(update.weight > 0) || !std::isfinite(update.weight)) {
    return absl::InvalidArgumentError(core::StrCat("update weight must be positive and finite, got ", update.weight));
  }
  return update.weights.CheckSameLayout(layout);
}

}  // namespace tessera::aggregation
