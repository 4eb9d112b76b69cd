// L2 clipping of client updates, the first half of DP-FedAvg (McMahan et al. 2018, "Learning
// Differentially Private Recurrent Language Models"): each client scales its update (a delta from
// the global model) to L2 norm at most S before it leaves the device, so that one client's
// contribution to the sum has sensitivity S. Clipping happens before secure aggregation, which
// only ever sees clipped updates.
//
// Only kFloat32 tensors take part (they are the ones FedAvg averages); tensors of other dtypes are
// neither measured nor changed. Thread-compatible: these are plain functions over their arguments.
#pragma once

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace tessera::security::dp {

// The L2 norm of all float32 elements of `w` taken together, accumulated in double.
// 0 for a model without float32 tensors. NaN or Inf elements propagate into the result.
double L2Norm(const core::ModelWeights& w);

// Scales `update` in place by min(1, max_norm / ||update||) and returns the norm it had before.
// Afterwards L2Norm(update) <= max_norm holds exactly (not just up to float rounding), so the
// sensitivity the accountant assumes is the one the data has.
// INVALID_ARGUMENT, leaving `update` unchanged, if max_norm is not a finite positive number or the
// update holds a NaN or Inf.
absl::StatusOr<double> ClipToL2Norm(core::ModelWeights& update, double max_norm);

}  // namespace tessera::security::dp
