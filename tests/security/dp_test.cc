// Tests of security/dp/clipping.h, gaussian.h and adaptive_clipping.h.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "security/dp/adaptive_clipping.h"
#include "security/dp/clipping.h"
#include "security/dp/gaussian.h"
#include "tests/testing/status_macros.h"

namespace tessera::security::dp {
namespace {

using core::DType;
using core::ModelWeights;
using core::NamedTensor;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Float tensors {3, 4} and {12} (L2 norm 13) plus an int64 counter of value 7, which DP ignores.
ModelWeights NormThirteen() {
  ModelWeights m;
  const std::vector<float> a = {3.0f, 4.0f};
  const std::vector<float> b = {12.0f};
  m.tensors.push_back(NamedTensor::FromFloats("a", {2}, a));
  NamedTensor counter("counter", {}, DType::kInt64);
  const int64_t seven = 7;
  std::memcpy(counter.mutable_bytes().data(), &seven, sizeof(seven));
  m.tensors.push_back(std::move(counter));
  m.tensors.push_back(NamedTensor::FromFloats("b", {1, 1}, b));
  return m;
}

ModelWeights RandomModel(uint64_t seed, int n) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ModelWeights m;
  NamedTensor t("w", {n}, DType::kFloat32);
  for (float& v : t.mutable_f32()) v = normal(gen);
  m.tensors.push_back(std::move(t));
  NamedTensor u("bias", {3}, DType::kFloat32);
  for (float& v : u.mutable_f32()) v = normal(gen);
  m.tensors.push_back(std::move(u));
  return m;
}

int64_t Counter(const ModelWeights& m) {
  int64_t v = 0;
  std::memcpy(&v, m.Find("counter")->bytes().data(), sizeof(v));
  return v;
}

std::vector<float> Floats(const ModelWeights& m) {
  std::vector<float> out;
  for (const auto& t : m.tensors) {
    if (t.dtype() == DType::kFloat32) out.insert(out.end(), t.f32().begin(), t.f32().end());
  }
  return out;
}

// ---- Clipping

TEST(L2NormTest, CoversAllFloatTensorsAndIgnoresOtherDtypes) {
  EXPECT_EQ(L2Norm(NormThirteen()), 13.0);
  EXPECT_EQ(L2Norm(ModelWeights{}), 0.0);
}

TEST(ClipToL2NormTest, ScalesAnUpdateAboveTheNormToExactlyTheNorm) {
  ModelWeights m = NormThirteen();
  ASSERT_OK_AND_ASSIGN(double before, ClipToL2Norm(m, 6.5));
  EXPECT_EQ(before, 13.0);
  EXPECT_EQ(Floats(m), (std::vector<float>{1.5f, 2.0f, 6.0f}));  // halved: direction is kept
  EXPECT_EQ(Counter(m), 7);                                      // non-float tensors untouched
}

TEST(ClipToL2NormTest, LeavesAnUpdateWithinTheNormBitForBit) {
  ModelWeights m = NormThirteen();
  ASSERT_OK_AND_ASSIGN(double before, ClipToL2Norm(m, 13.0));
  EXPECT_EQ(before, 13.0);
  EXPECT_EQ(Floats(m), Floats(NormThirteen()));
}

TEST(ClipToL2NormTest, NormAfterClippingNeverExceedsTheBoundDespiteFloatRounding) {
  // The accountant assumes sensitivity S exactly; rounding each scaled element to float must not
  // push the norm above it.
  for (uint64_t seed = 0; seed < 200; ++seed) {
    ModelWeights m = RandomModel(seed, 1000 + static_cast<int>(seed));
    const double max_norm = 0.1 + 0.0137 * static_cast<double>(seed);
    const double norm = L2Norm(m);
    ASSERT_OK_AND_ASSIGN(double before, ClipToL2Norm(m, max_norm));
    EXPECT_EQ(before, norm);
    const double after = L2Norm(m);
    EXPECT_LE(after, max_norm) << "seed " << seed;
    EXPECT_NEAR(after, max_norm, 1e-5 * max_norm) << "seed " << seed;
  }
}

TEST(ClipToL2NormTest, RejectsABadNormWithoutTouchingTheUpdate) {
  for (double bad : {0.0, -1.0, kNaN, kInf}) {
    ModelWeights m = NormThirteen();
    EXPECT_CODE(ClipToL2Norm(m, bad), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Floats(m), Floats(NormThirteen()));
  }
}

TEST(ClipToL2NormTest, RejectsNonFiniteUpdates) {
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    ModelWeights m = NormThirteen();
    m.tensors[2].mutable_f32()[0] = bad;
    EXPECT_CODE(ClipToL2Norm(m, 1.0), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(m.tensors[0].f32()[0], 3.0f);
  }
}

// ---- Gaussian mechanism

TEST(DpFedAvgConfigTest, ValidatesEachField) {
  EXPECT_OK(ValidateDp(DpFedAvgConfig{}));
  EXPECT_OK(ValidateDp(DpFedAvgConfig{.noise_multiplier = 0.0}));
  for (double z : {-0.1, kNaN, kInf}) {
    EXPECT_CODE(ValidateDp(DpFedAvgConfig{.noise_multiplier = z}),
                absl::StatusCode::kInvalidArgument);
  }
  for (double s : {0.0, -1.0, kNaN, kInf}) {
    EXPECT_CODE(ValidateDp(DpFedAvgConfig{.clip_norm = s}), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_CODE(ValidateDp(DpFedAvgConfig{.expected_clients = 0}),
              absl::StatusCode::kInvalidArgument);
}

TEST(NoiseStddevTest, IsNoiseMultiplierTimesClipOverClients) {
  const DpFedAvgConfig config{.noise_multiplier = 1.2, .clip_norm = 0.5, .expected_clients = 30};
  EXPECT_DOUBLE_EQ(NoiseStddev(config, 30), 0.02);  // z S / m, McMahan et al. 2018
  EXPECT_DOUBLE_EQ(NoiseStddev(config, 1), 0.6);
  EXPECT_EQ(NoiseStddev(config, 0), kInf);
}

TEST(AddGaussianNoiseTest, DrawsOneNormalPerFloatElementInTensorOrder) {
  // Differential test against the documented draw order: a plain loop over a same-seeded Rng.
  ModelWeights m = NormThirteen();
  core::Rng rng(42, {1, 2});
  ASSERT_OK(AddGaussianNoise(m, 0.25, rng));
  core::Rng reference(42, {1, 2});
  std::normal_distribution<double> normal(0.0, 0.25);
  std::vector<float> expected;
  for (float v : Floats(NormThirteen()))
    expected.push_back(static_cast<float>(v + normal(reference)));
  EXPECT_EQ(Floats(m), expected);
  EXPECT_EQ(Counter(m), 7);
  EXPECT_EQ(rng(), reference());  // both streams consumed the same number of draws
}

TEST(AddGaussianNoiseTest, NoiseHasTheRequestedMomentsAndIsReproducible) {
  const int n = 200000;
  ModelWeights zeros;
  zeros.tensors.emplace_back("w", std::vector<int64_t>{n});
  ModelWeights a = zeros;
  ModelWeights b = zeros;
  ModelWeights c = zeros;
  core::Rng rng_a(7);
  core::Rng rng_b(7);
  core::Rng rng_c(8);
  const double stddev = 0.1;
  ASSERT_OK(AddGaussianNoise(a, stddev, rng_a));
  ASSERT_OK(AddGaussianNoise(b, stddev, rng_b));
  ASSERT_OK(AddGaussianNoise(c, stddev, rng_c));
  EXPECT_EQ(Floats(a), Floats(b));  // same seed, same noise, bit for bit
  EXPECT_NE(Floats(a), Floats(c));
  double sum = 0, sum_sq = 0;
  for (float v : a.tensors[0].f32()) {
    sum += v;
    sum_sq += static_cast<double>(v) * v;
  }
  const double mean = sum / n;
  const double sd = std::sqrt(sum_sq / n - mean * mean);
  EXPECT_LT(std::abs(mean), 5 * stddev / std::sqrt(n));
  EXPECT_NEAR(sd, stddev, 0.01 * stddev);  // the sample sd's own sd is ~0.16% here
}

TEST(AddGaussianNoiseTest, ZeroStddevChangesNothingAndDrawsNothing) {
  ModelWeights m = NormThirteen();
  core::Rng rng(3);
  ASSERT_OK(AddGaussianNoise(m, 0.0, rng));
  EXPECT_EQ(Floats(m), Floats(NormThirteen()));
  EXPECT_EQ(rng(), core::Rng(3)());
}

TEST(AddGaussianNoiseTest, RejectsBadStddevWithoutTouchingTheModel) {
  for (double bad : {-0.1, kNaN, kInf}) {
    ModelWeights m = NormThirteen();
    core::Rng rng(3);
    EXPECT_CODE(AddGaussianNoise(m, bad, rng), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Floats(m), Floats(NormThirteen()));
  }
}

TEST(SecureSeedTest, TwoSeedsDiffer) {
  // Equal with probability 2^-64 if RAND_bytes works.
  EXPECT_NE(SecureSeed(), SecureSeed());
}

// ---- Adaptive clipping

AdaptiveClippingConfig NoiselessConfig() {
  return {.initial_clip = 1.0,
          .target_quantile = 0.5,
          .learning_rate = 0.2,
          .clipped_count_stddev = 0.0,
          .expected_clients = 10};
}

TEST(AdaptiveClipperTest, RejectsInvalidConfigs) {
  EXPECT_OK(AdaptiveClipper::Create(AdaptiveClippingConfig{}).status());
  const std::vector<AdaptiveClippingConfig> bad = {
      {.initial_clip = 0.0},          {.initial_clip = kInf},         {.target_quantile = -0.1},
      {.target_quantile = 1.1},       {.target_quantile = kNaN},      {.learning_rate = -1.0},
      {.clipped_count_stddev = -1.0}, {.clipped_count_stddev = kNaN}, {.expected_clients = 0},
  };
  for (const auto& config : bad) {
    EXPECT_CODE(AdaptiveClipper::Create(config), absl::StatusCode::kInvalidArgument);
  }
}

TEST(AdaptiveClipperTest, GeometricStepWithoutNoise) {
  ASSERT_OK_AND_ASSIGN(AdaptiveClipper clipper, AdaptiveClipper::Create(NoiselessConfig()));
  core::Rng rng(1);
  // Every client at or below C: b = 1, C <- C exp(-0.2 * 0.5).
  ASSERT_OK(clipper.Update(10, 10, rng));
  EXPECT_EQ(clipper.last_fraction(), 1.0);
  EXPECT_DOUBLE_EQ(clipper.clip_norm(), std::exp(-0.1));
  // None: b = 0, C <- C exp(+0.2 * 0.5), back to 1.
  ASSERT_OK(clipper.Update(0, 10, rng));
  EXPECT_DOUBLE_EQ(clipper.clip_norm(), 1.0);
  // Exactly the target fraction: no move.
  ASSERT_OK(clipper.Update(5, 10, rng));
  EXPECT_DOUBLE_EQ(clipper.clip_norm(), 1.0);
}

TEST(AdaptiveClipperTest, RejectsImpossibleCountsAndKeepsItsState) {
  ASSERT_OK_AND_ASSIGN(AdaptiveClipper clipper, AdaptiveClipper::Create(NoiselessConfig()));
  core::Rng rng(1);
  EXPECT_CODE(clipper.Update(0, 0, rng), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(clipper.Update(-1, 10, rng), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(clipper.Update(11, 10, rng), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(clipper.clip_norm(), 1.0);
}

// Runs `rounds` rounds in which `clients` clients draw update norms from LogNormal(0, 0.5) and
// report whether they were at or below the current clip; returns the clip norms after each round.
std::vector<double> RunAdaptiveClipping(double target_quantile, int rounds) {
  const int clients = 100;
  AdaptiveClipper clipper = AdaptiveClipper::Create({.initial_clip = 0.1,
                                                     .target_quantile = target_quantile,
                                                     .learning_rate = 0.2,
                                                     .clipped_count_stddev = clients / 20.0,
                                                     .expected_clients = clients})
                                .value();
  core::Rng norms_rng(2021, {1});
  core::Rng noise_rng(2021, {2});
  std::lognormal_distribution<double> norm_dist(0.0, 0.5);
  std::vector<double> clips;
  for (int round = 1; round <= rounds; ++round) {
    int at_or_below = 0;
    for (int k = 0; k < clients; ++k) at_or_below += norm_dist(norms_rng) <= clipper.clip_norm();
    EXPECT_OK(clipper.Update(at_or_below, clients, noise_rng));
    clips.push_back(clipper.clip_norm());
  }
  return clips;
}

TEST(AdaptiveClipperTest, ConvergesToTheMedianOfUpdateNorms) {
  // LogNormal(0, 0.5) has median exp(0) = 1. From C0 = 0.1 the geometric step needs ~25 rounds to
  // get there (each moves log C by at most eta/2 = 0.1); the noise (sigma_b = m/20, Andrew et al.'s
  // suggestion) then keeps it within a few percent.
  const std::vector<double> clips = RunAdaptiveClipping(0.5, 300);
  for (int r = 250; r < 300; ++r) EXPECT_NEAR(clips[r], 1.0, 0.2) << "round " << r + 1;
}

TEST(AdaptiveClipperTest, ConvergesToAnUpperQuantile) {
  // The 0.9 quantile of LogNormal(0, 0.5) is exp(0.5 * 1.2815515655446004) = 1.8980.
  const double quantile = std::exp(0.5 * 1.2815515655446004);
  const std::vector<double> clips = RunAdaptiveClipping(0.9, 300);
  for (int r = 250; r < 300; ++r) EXPECT_NEAR(clips[r], quantile, 0.2 * quantile);
}

TEST(UpdateNoiseMultiplierTest, ComposesBackToTheTotalNoiseMultiplier) {
  // Andrew et al. 2021, Sec. 3: z^-2 = z_update^-2 + (2 sigma_b)^-2.
  ASSERT_OK_AND_ASSIGN(double z_update, UpdateNoiseMultiplier(1.0, 5.0));
  EXPECT_DOUBLE_EQ(z_update, 1.0 / std::sqrt(1.0 - 0.01));
  EXPECT_DOUBLE_EQ(1.0 / std::sqrt(1.0 / (z_update * z_update) + 1.0 / 100.0), 1.0);
  EXPECT_CODE(UpdateNoiseMultiplier(1.0, 0.5), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(UpdateNoiseMultiplier(1.0, 0.0), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(UpdateNoiseMultiplier(0.0, 5.0), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::security::dp
