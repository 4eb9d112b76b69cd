// Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning
// with Adaptive Clipping"): instead of fixing the clip norm S, the server moves it toward the
// target quantile gamma of the clients' update norms, privately.
//
// Each round every participating client reports one bit, b_i = [||update_i|| <= C] against the
// clip norm C it was sent (it computes the norm before clipping, security/dp/clipping.h). The
// server sums the bits (under secure aggregation, in a deployment), adds N(0, sigma_b^2) to the
// sum, turns it into a fraction b over the expected number of clients, and takes the geometric
// step
//     C <- C * exp(-eta_C * (b - gamma)),
// which is online gradient descent on the pinball loss of log C. As TF Privacy's
// QuantileEstimatorQuery does, the bits are centred (b_i - 1/2, so one client changes the noised
// sum by at most 1/2) and the noised fraction is clamped to [0, 1] before the step.
//
// Privacy: the clipped-count query is a second Gaussian query on the same clients. Its cost is
// paid by running the update query with a slightly larger noise multiplier; see
// UpdateNoiseMultiplier below.
//
// Not thread-safe; one AdaptiveClipper per federation, driven by the round loop. The state is one
// number: persist clip_norm() and restore with initial_clip set to it.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/rng.h"

namespace tessera::security::dp {

struct AdaptiveClippingConfig {
  double initial_clip = 0.1;     // C_0; Andrew et al. and TFF start at 0.1
  double target_quantile = 0.5;  // gamma in [0, 1]
  double learning_rate = 0.2;    // eta_C; the paper's default
  // sigma_b: standard deviation of the noise on the clipped count (in clients). The paper
  // suggests expected_clients / 20. 0 disables the noise (then the count is not private).
  double clipped_count_stddev = 0.5;
  int expected_clients = 10;  // the fixed denominator of the fraction
};

// OK for initial_clip finite and > 0, target_quantile in [0, 1], learning_rate finite and >= 0,
// clipped_count_stddev finite and >= 0, expected_clients >= 1; INVALID_ARGUMENT naming the field.
absl::Status ValidateAdaptiveClipping(const AdaptiveClippingConfig& config);

class AdaptiveClipper {
 public:
  // INVALID_ARGUMENT as ValidateAdaptiveClipping.
  static absl::StatusOr<AdaptiveClipper> Create(const AdaptiveClippingConfig& config);

  // The clip norm to send to the clients of the next round.
  double clip_norm() const { return clip_norm_; }
  // The clamped, noised fraction b of the last Update (the target quantile before any).
  double last_fraction() const { return last_fraction_; }

  // Folds in one round: `num_clipped_at_or_below` of the `num_clients` clients that reported had
  // an update norm <= clip_norm() (so were not scaled down). Draws one Gaussian from `rng` when
  // clipped_count_stddev > 0.
  // INVALID_ARGUMENT, with the state unchanged, unless num_clients >= 1 and
  // 0 <= num_clipped_at_or_below <= num_clients.
  absl::Status Update(int num_clipped_at_or_below, int num_clients, core::Rng& rng);

 private:
  explicit AdaptiveClipper(const AdaptiveClippingConfig& config)
      : config_(config), clip_norm_(config.initial_clip), last_fraction_(config.target_quantile) {}

  AdaptiveClippingConfig config_;
  double clip_norm_;
  double last_fraction_;
};

// The noise multiplier z_update to use for the (clipped) updates so that, together with the
// clipped-count query of stddev sigma_b (sensitivity 1/2), one round costs as much privacy as a
// single Gaussian query with noise multiplier `total_noise_multiplier` = z (Andrew et al. 2021,
// Section 3): z_update = (z^-2 - (2 sigma_b)^-2)^(-1/2). Feed z (not z_update) to the accountant.
// INVALID_ARGUMENT unless z is finite and > 0 and 2 sigma_b > z (otherwise the count alone
// already spends the whole budget).
absl::StatusOr<double> UpdateNoiseMultiplier(double total_noise_multiplier,
                                             double clipped_count_stddev);

}  // namespace tessera::security::dp
