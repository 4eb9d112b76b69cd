// Streaming aggregation of client updates (after TFF's aggregation core).
//
// An Aggregator folds updates into a running result as they arrive: memory is O(model size)
// however many clients report. Not thread-safe; shard across threads with MergeWith.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace tessera::aggregation {

struct WeightedUpdate {
  const core::ModelWeights& weights;
  double weight;  // e.g. num_examples; must be > 0 and finite
};

// OK when `update` has `layout`'s tensor names, shapes and dtypes and a positive, finite weight;
// INVALID_ARGUMENT naming the difference otherwise.
absl::Status CheckUpdate(const WeightedUpdate& update, const core::ModelWeights& layout);

class Aggregator {
 public:
  virtual ~Aggregator() = default;
  // INVALID_ARGUMENT when the update's layout differs from the aggregator's or the weight is
  // not positive and finite; the running result is unchanged then.
  virtual absl::Status Accumulate(const WeightedUpdate& update) = 0;
  // Folds another aggregator of the same kind and layout into this one.
  virtual absl::Status MergeWith(Aggregator&& other) = 0;
  virtual bool CanReport() const = 0;
  virtual int64_t num_updates() const = 0;
  // FAILED_PRECONDITION when nothing was accumulated.
  virtual absl::StatusOr<core::ModelWeights> Report() && = 0;
};

}  // namespace tessera::aggregation
