// The Gaussian mechanism of DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private
// Recurrent Language Models", Algorithm 1): after each client clipped its update to L2 norm S
// (security/dp/clipping.h), the server averages m updates and adds N(0, (z S / m)^2) to every
// coordinate of the average, z being the noise multiplier. The privacy this buys per round is
// accounted by security/dp/accountant.h with noise_multiplier z and sampling rate m / N.
//
// Randomness is injected (core::Rng), so a simulation is reproducible to the bit. A deployment
// seeds that Rng from SecureSeed(). Two caveats the caller should know:
//  - core::Rng is a Mersenne Twister, not a CSPRNG: whoever sees enough of its output (or the
//    seed) can predict the noise. Keep the seed and the Rng server-side and single-use.
//  - Sampling Gaussians in floating point leaks through the low-order bits (Mironov 2012, "On
//    significance of the least significant bits for differential privacy"); like Opacus and
//    TF Privacy we accept that, it is a known gap between the analysis and any float
//    implementation.
// Thread-compatible: plain functions; the Rng must not be shared between threads.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace tessera::security::dp {

struct DpFedAvgConfig {
  // z: the noise standard deviation in units of the clip norm (before dividing by m).
  double noise_multiplier = 1.0;
  // S: every client update is clipped to this L2 norm.
  double clip_norm = 1.0;
  // The number of clients per round the privacy analysis assumes (sampling rate = this / N).
  int expected_clients = 10;
};

// OK for a finite noise_multiplier >= 0 (0 means no privacy: epsilon is infinite), a finite
// clip_norm > 0 and expected_clients >= 1; INVALID_ARGUMENT naming the field otherwise.
absl::Status ValidateDp(const DpFedAvgConfig& config);

// z * S / m: the per-coordinate noise standard deviation for the average of `num_clients` = m
// clipped updates. Pass the denominator the average is actually divided by (the realized count
// for a plain mean, config.expected_clients for McMahan et al.'s fixed-denominator estimator).
// num_clients < 1 gives +infinity (there is no average to protect), which AddGaussianNoise
// rejects.
double NoiseStddev(const DpFedAvgConfig& config, int num_clients);

// Adds an independent N(0, stddev^2) draw to every float32 element of `average`, in tensor order
// then element order (drawn in double by std::normal_distribution<double> on `rng`). Tensors of
// other dtypes are untouched. stddev == 0 leaves `average` unchanged and draws nothing.
// INVALID_ARGUMENT, with `average` unchanged, if stddev is negative, NaN or infinite.
absl::Status AddGaussianNoise(core::ModelWeights& average, double stddev, core::Rng& rng);

// 64 bits from OpenSSL's CSPRNG (RAND_bytes), to seed the noise Rng in a deployment.
// Aborts if OpenSSL cannot produce random bytes: continuing with a guessable seed would void the
// privacy guarantee silently, and a Linux system with a seeded kernel RNG does not fail here.
uint64_t SecureSeed();

}  // namespace tessera::security::dp
