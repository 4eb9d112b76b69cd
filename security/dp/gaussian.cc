#include "security/dp/gaussian.h"

#include <openssl/rand.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>

#include "core/strings.h"

namespace tessera::security::dp {

absl::Status ValidateDp(const DpFedAvgConfig& config) {
  if (!std::isfinite(config.noise_multiplier) || config.noise_multiplier < 0.0) {
    return absl::InvalidArgumentError(
        core::StrCat("noise_multiplier must be finite and >= 0, got ", config.noise_multiplier));
  }
  if (!std::isfinite(config.clip_norm) || config.clip_norm <= 0.0) {
    return absl::InvalidArgumentError(
        core::StrCat("clip_norm must be finite and > 0, got ", config.clip_norm));
  }
  if (config.expected_clients < 1) {
    return absl::InvalidArgumentError(
        core::StrCat("expected_clients must be >= 1, got ", config.expected_clients));
  }
  return absl::OkStatus();
}

double NoiseStddev(const DpFedAvgConfig& config, int num_clients) {
  if (num_clients < 1) return std::numeric_limits<double>::infinity();
  return config.noise_multiplier * config.clip_norm / static_cast<double>(num_clients);
}

absl::Status AddGaussianNoise(core::ModelWeights& average, double stddev, core::Rng& rng) {
  if (!std::isfinite(stddev) || stddev < 0.0) {
    return absl::InvalidArgumentError(
        core::StrCat("noise stddev must be finite and >= 0, got ", stddev));
  }
  if (stddev == 0.0) return absl::OkStatus();
  std::normal_distribution<double> normal(0.0, stddev);
  for (auto& t : average.tensors) {
    if (t.dtype() != core::DType::kFloat32) continue;
    for (float& v : t.mutable_f32()) v = static_cast<float>(static_cast<double>(v) + normal(rng));
  }
  return absl::OkStatus();
}

uint64_t SecureSeed() {
  uint64_t seed = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&seed), sizeof(seed)) != 1) {
    std::fputs("tessera: OpenSSL RAND_bytes failed; refusing to seed DP noise predictably\n",
               stderr);
    std::abort();
  }
  return seed;
}

}  // namespace tessera::security::dp
