#include "security/secagg/fixed_point.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/strings.h"

namespace tessera::security {

namespace {

// ceil(log2(v)) for v >= 1.
int CeilLog2(uint64_t v) { return static_cast<int>(std::bit_width(v - 1)); }

double Levels(const FixedPointConfig& config) {
  return static_cast<double>((uint64_t{1} << config.bits) - 1);
}

}  // namespace

absl::Status ValidateFixedPoint(const FixedPointConfig& config) {
  if (!std::isfinite(config.clip) || config.clip <= 0) {
    return absl::InvalidArgumentError(
        core::StrCat("fixed point: clip must be finite and > 0, got ", config.clip));
  }
  if (config.bits < 1 || config.bits > 32) {
    return absl::InvalidArgumentError(
        core::StrCat("fixed point: bits must be in [1, 32], got ", config.bits));
  }
  if (config.weight_cap < 1) {
    return absl::InvalidArgumentError(
        core::StrCat("fixed point: weight_cap must be >= 1, got ", config.weight_cap));
  }
  if (config.modulus_bits < 8 || config.modulus_bits > 64) {
    return absl::InvalidArgumentError(
        core::StrCat("fixed point: modulus_bits must be in [8, 64], got ", config.modulus_bits));
  }
  if (config.max_clients < 1) {
    return absl::InvalidArgumentError(
        core::StrCat("fixed point: max_clients must be >= 1, got ", config.max_clients));
  }
  const int client_bits = CeilLog2(static_cast<uint64_t>(config.max_clients));
  const int weight_bits = CeilLog2(static_cast<uint64_t>(config.weight_cap));
  const int needed = client_bits + config.bits + weight_bits + 1;
  if (needed > config.modulus_bits) {
    return absl::InvalidArgumentError(core::StrCat(
        "fixed point: the sum of max_clients = ", config.max_clients, " inputs of bits = ",
        config.bits, " with weight_cap = ", config.weight_cap, " needs ", client_bits, " + ",
        config.bits, " + ", weight_bits, " + 1 = ", needed, " bits, more than modulus_bits = ",
        config.modulus_bits, " (it would wrap around)"));
  }
  return absl::OkStatus();
}

absl::Status EncodeFixedPointInto(std::span<const float> x, int64_t weight,
                                  const FixedPointConfig& config, core::Rng& rng,
                                  std::span<uint64_t> out) {
  if (absl::Status s = ValidateFixedPoint(config); !s.ok()) return s;
  if (weight < 1) {
    return absl::InvalidArgumentError(
        core::StrCat("fixed point: weight (num_examples) must be >= 1, got ", weight));
  }
  if (out.size() != x.size() + 1) {
    return absl::InvalidArgumentError(core::StrCat("fixed point: output has ", out.size(),
                                                   " elements for ", x.size(), " coordinates"));
  }
  const uint64_t w = static_cast<uint64_t>(std::min(weight, config.weight_cap));
  const double clip = config.clip;
  const uint64_t max_q = (uint64_t{1} << config.bits) - 1;
  const double scale = Levels(config) / (2 * clip);
  constexpr double kTwo32 = 4294967296.0;

  // Each 64-bit draw serves two coordinates, 32 uniform bits each: the generator dominates the
  // cost, and 32 bits leave a bias below 2^-32 of a grid step.
  uint64_t draw = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          core::StrCat("fixed point: coordinate ", i, " is NaN or infinite"));
    }
    const double u = (std::clamp(v, -clip, clip) + clip) * scale;  // in [0, 2^bits - 1]
    const uint64_t fl = static_cast<uint64_t>(u);                    // floor, since u >= 0
    // Bernoulli(u - fl).
    uint32_t bits32;
    if (i % 2 == 0) {
      draw = rng();
      bits32 = static_cast<uint32_t>(draw);
    } else {
      bits32 = static_cast<uint32_t>(draw >> 32);
    }
    const bool up = static_cast<double>(bits32) < (u - static_cast<double>(fl)) * kTwo32;
    const uint64_t q = std::min(fl + (up ? 1 : 0), max_q);
    out[i] = q * w;
  }
  out.back() = w;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> EncodeFixedPoint(std::span<const float> x, int64_t weight,
                                                       const FixedPointConfig& config,
                                                       core::Rng& rng) {
  std::vector<uint64_t> out(x.size() + 1);
  if (absl::Status s = EncodeFixedPointInto(x, weight, config, rng, out); !s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<float>> DecodeFixedPointMean(std::span<const uint64_t> sum,
                                                        const FixedPointConfig& config,
                                                        int num_clients) {
  if (absl::Status s = ValidateFixedPoint(config); !s.ok()) return s;
  if (sum.empty()) return absl::InvalidArgumentError("fixed point: empty sum (no weight element)");
  if (num_clients < 1 || num_clients > config.max_clients) {
    return absl::InvalidArgumentError(core::StrCat("fixed point: num_clients = ", num_clients,
                                                   " not in [1, ", config.max_clients, "]"));
  }
  const uint64_t mask = ModulusMask(config.modulus_bits);
  const uint64_t total_weight = sum.back() & mask;
  if (total_weight == 0) {
    return absl::FailedPreconditionError("fixed point: total weight is 0, nothing was summed");
  }
  // No overflow: ValidateFixedPoint bounds max_clients * weight_cap * 2^bits by 2^63.
  const uint64_t n = static_cast<uint64_t>(num_clients);
  if (total_weight < n || total_weight > n * static_cast<uint64_t>(config.weight_cap)) {
    return absl::DataLossError(core::StrCat("fixed point: total weight ", total_weight,
                                            " impossible for ", num_clients, " clients"));
  }
  const uint64_t max_q = (uint64_t{1} << config.bits) - 1;
  const uint64_t max_sum = total_weight * max_q;
  const double levels = Levels(config);
  const double w = static_cast<double>(total_weight);
  const double two_clip = 2 * config.clip;

  std::vector<float> mean(sum.size() - 1);
  for (size_t i = 0; i < mean.size(); ++i) {
    const uint64_t s = sum[i] & mask;
    if (s > max_sum) {
      return absl::DataLossError(core::StrCat("fixed point: coordinate ", i,
                                              " of the sum is above the grid for its weight"));
    }
    mean[i] = static_cast<float>(static_cast<double>(s) / w / levels * two_clip - config.clip);
  }
  return mean;
}

void AddMod(std::span<uint64_t> acc, std::span<const uint64_t> x, int modulus_bits) {
  if (acc.size() != x.size() || modulus_bits < 1 || modulus_bits > 64) {
    std::fprintf(stderr, "AddMod: broken precondition (sizes %zu and %zu, modulus_bits %d)\n",
                 acc.size(), x.size(), modulus_bits);
    std::abort();
  }
  const uint64_t mask = ModulusMask(modulus_bits);
  uint64_t* a = acc.data();
  const uint64_t* b = x.data();
  for (size_t i = 0; i < acc.size(); ++i) a[i] = (a[i] + b[i]) & mask;
}

absl::Status ValidateMaskedVector(std::span<const uint64_t> v, size_t expected_size,
                                  int modulus_bits) {
  if (v.size() != expected_size) {
    return absl::InvalidArgumentError(core::StrCat("masked input has ", v.size(),
                                                   " elements, expected ", expected_size));
  }
  if (modulus_bits < 1 || modulus_bits > 64) {
    return absl::InvalidArgumentError(core::StrCat("invalid modulus_bits ", modulus_bits));
  }
  const uint64_t mask = ModulusMask(modulus_bits);
  uint64_t above = 0;
  for (uint64_t e : v) above |= e & ~mask;
  if (above != 0) {
    return absl::InvalidArgumentError(
        core::StrCat("masked input has an element >= 2^", modulus_bits));
  }
  return absl::OkStatus();
}

}  // namespace tessera::security
