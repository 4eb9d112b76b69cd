// Fixed-point encoding of client updates for secure aggregation (SECURITY.md, "Fixed point").
//
// A client's update x (d floats) with weight w becomes d + 1 integers mod M = 2^modulus_bits:
// each coordinate is clipped to [-clip, clip], mapped onto the grid {0, ..., 2^bits - 1} with
// unbiased stochastic rounding and multiplied by w; the last element is w itself. The secure sum
// of these vectors therefore holds sum_k w_k q_k and W = sum_k w_k, from which
// DecodeFixedPointMean recovers the weighted (FedAvg) mean of the clipped updates.
//
// No wrap-around: ValidateFixedPoint refuses a configuration unless max_clients clients at the top
// of the grid with the largest weight still sum below M. Every function here validates the
// configuration itself.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/rng.h"

namespace tessera::security {

struct FixedPointConfig {
  double clip = 1.0;              // coordinates are clipped to [-clip, clip]
  int bits = 16;                  // grid of 2^bits points over [-clip, clip]
  int64_t weight_cap = 1 << 16;   // a client's weight (num_examples) is capped here
  int modulus_bits = 64;          // sums are taken mod 2^modulus_bits
  int max_clients = 1 << 14;      // most clients whose inputs one sum may hold
};

// OK, or INVALID_ARGUMENT when clip is not finite and > 0, bits is not in [1, 32], weight_cap < 1,
// modulus_bits is not in [8, 64], max_clients < 1, or the modulus is too small for the sum:
// ceil(log2 max_clients) + bits + ceil(log2 weight_cap) + 1 must be <= modulus_bits (the +1 is
// headroom). The message names the numbers. Refuse such a round; never run it with a warning.
absl::Status ValidateFixedPoint(const FixedPointConfig& config);

// 2^modulus_bits - 1 (all ones for 64): the AND mask that reduces mod 2^modulus_bits.
// modulus_bits in [1, 64].
constexpr uint64_t ModulusMask(int modulus_bits) {
  return modulus_bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << modulus_bits) - 1;
}

// The d + 1 elements for update `x` with weight `weight` (num_examples; values above
// config.weight_cap are capped): min(weight, cap) * q_i for each coordinate, then the weight.
// q_i = floor(u) + Bernoulli(frac(u)), u = (clip(x_i) + clip) / (2 clip) * (2^bits - 1), with one
// 64-bit draw from `rng` per two coordinates (32 bits each; the result is reproducible for a
// seeded Rng). The rounding is unbiased: E[q_i] = u (up to 2^-32 of a grid step). INVALID_ARGUMENT for a NaN or infinite coordinate, weight < 1, or an
// invalid config. Not thread-safe in `rng`.
absl::StatusOr<std::vector<uint64_t>> EncodeFixedPoint(std::span<const float> x, int64_t weight,
                                                       const FixedPointConfig& config,
                                                       core::Rng& rng);

// The same into `out` (x.size() + 1 elements, else INVALID_ARGUMENT), so that a client can reuse
// one buffer for the encoding and its masks across rounds (a fresh 13 MB buffer costs more in
// page faults than the encoding itself). On error `out` holds no meaningful values.
absl::Status EncodeFixedPointInto(std::span<const float> x, int64_t weight,
                                  const FixedPointConfig& config, core::Rng& rng,
                                  std::span<uint64_t> out);

// The weighted mean of the d coordinates from the (unmasked) sum of `num_clients` encodings:
// mean_i = (sum_i / W) / (2^bits - 1) * 2 clip - clip, where W = the last element; elements are
// taken mod 2^modulus_bits. INVALID_ARGUMENT for an empty sum, an invalid config or num_clients
// not in [1, max_clients]; FAILED_PRECONDITION if W == 0 (nothing was summed); DATA_LOSS when the
// sum cannot come from num_clients valid encodings (W outside [num_clients, num_clients *
// weight_cap] or some sum_i > W * (2^bits - 1)): a client sent values off the grid, or the masks
// were not removed correctly.
absl::StatusOr<std::vector<float>> DecodeFixedPointMean(std::span<const uint64_t> sum,
                                                        const FixedPointConfig& config,
                                                        int num_clients);

// acc = (acc + x) mod 2^modulus_bits, element-wise. Preconditions (a violation aborts: validate
// untrusted vectors with ValidateMaskedVector first): acc.size() == x.size(), modulus_bits in
// [1, 64].
void AddMod(std::span<uint64_t> acc, std::span<const uint64_t> x, int modulus_bits);

// OK, or INVALID_ARGUMENT when `v` (e.g. a masked input received from a client) does not have
// `expected_size` elements or has an element >= 2^modulus_bits.
absl::Status ValidateMaskedVector(std::span<const uint64_t> v, size_t expected_size,
                                  int modulus_bits);

}  // namespace tessera::security
