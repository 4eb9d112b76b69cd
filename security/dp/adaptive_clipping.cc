#include "security/dp/adaptive_clipping.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/status.h"
#include "core/strings.h"

namespace tessera::security::dp {

absl::Status ValidateAdaptiveClipping(const AdaptiveClippingConfig& config) {
  if (!std::isfinite(config.initial_clip) || config.initial_clip <= 0.0) {
    return absl::InvalidArgumentError(
        core::StrCat("initial_clip must be finite and > 0, got ", config.initial_clip));
  }
  if (!(config.target_quantile >= 0.0 && config.target_quantile <= 1.0)) {
    return absl::InvalidArgumentError(
        core::StrCat("target_quantile must be in [0, 1], got ", config.target_quantile));
  }
  if (!std::isfinite(config.learning_rate) || config.learning_rate < 0.0) {
    return absl::InvalidArgumentError(
        core::StrCat("learning_rate must be finite and >= 0, got ", config.learning_rate));
  }
  if (!std::isfinite(config.clipped_count_stddev) || config.clipped_count_stddev < 0.0) {
    return absl::InvalidArgumentError(core::StrCat(
        "clipped_count_stddev must be finite and >= 0, got ", config.clipped_count_stddev));
  }
  if (config.expected_clients < 1) {
    return absl::InvalidArgumentError(
        core::StrCat("expected_clients must be >= 1, got ", config.expected_clients));
  }
  return absl::OkStatus();
}

absl::StatusOr<AdaptiveClipper> AdaptiveClipper::Create(const AdaptiveClippingConfig& config) {
  TESSERA_RETURN_IF_ERROR(ValidateAdaptiveClipping(config));
  return AdaptiveClipper(config);
}

absl::Status AdaptiveClipper::Update(int num_clipped_at_or_below, int num_clients, core::Rng& rng) {
  if (num_clients < 1 || num_clipped_at_or_below < 0 || num_clipped_at_or_below > num_clients) {
    return absl::InvalidArgumentError(core::StrCat("clipped count ", num_clipped_at_or_below,
                                                   " of ", num_clients, " clients is impossible"));
  }
  // Centred bits: sum_i (b_i - 1/2). Dividing by the expected (not the realized) number of
  // clients keeps the sensitivity of the fraction fixed, as in TF Privacy's NormalizedQuery.
  double centred = num_clipped_at_or_below - 0.5 * num_clients;
  if (config_.clipped_count_stddev > 0.0) {
    centred += std::normal_distribution<double>(0.0, config_.clipped_count_stddev)(rng);
  }
  const double fraction = std::clamp(centred / config_.expected_clients + 0.5, 0.0, 1.0);
  last_fraction_ = fraction;
  clip_norm_ *= std::exp(-config_.learning_rate * (fraction - config_.target_quantile));
  return absl::OkStatus();
}

absl::StatusOr<double> UpdateNoiseMultiplier(double total_noise_multiplier,
                                             double clipped_count_stddev) {
  if (!std::isfinite(total_noise_multiplier) || total_noise_multiplier <= 0.0) {
    return absl::InvalidArgumentError(
        core::StrCat("noise multiplier must be finite and > 0, got ", total_noise_multiplier));
  }
  if (!std::isfinite(clipped_count_stddev) ||
      2.0 * clipped_count_stddev <= total_noise_multiplier) {
    return absl::InvalidArgumentError(core::StrCat(
        "clipped_count_stddev ", clipped_count_stddev, " must exceed half the noise multiplier ",
        total_noise_multiplier, ", or the clipped count alone spends the budget"));
  }
  const double z = total_noise_multiplier;
  const double count_z = 2.0 * clipped_count_stddev;
  return 1.0 / std::sqrt(1.0 / (z * z) - 1.0 / (count_z * count_z));
}

}  // namespace tessera::security::dp
