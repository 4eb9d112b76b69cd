#include "security/secagg/fixed_point.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "core/rng.h"
#include "gtest/gtest.h"
#include "security/crypto/prg.h"
#include "tests/testing/status_macros.h"

namespace tessera::security {
namespace {

double Step(const FixedPointConfig& c) { return 2 * c.clip / (std::ldexp(1.0, c.bits) - 1); }

// The sum of `num_clients` copies of one encoding, mod 2^modulus_bits.
std::vector<uint64_t> SumOfCopies(const std::vector<uint64_t>& enc, int num_clients, int k) {
  std::vector<uint64_t> acc(enc.size(), 0);
  for (int i = 0; i < num_clients; ++i) AddMod(acc, enc, k);
  return acc;
}

TEST(FixedPointTest, DefaultConfigIsValid) { EXPECT_OK(ValidateFixedPoint(FixedPointConfig{})); }

TEST(FixedPointTest, RefusesConfigThatWouldWrap) {
  FixedPointConfig c{.clip = 1.0, .bits = 16, .weight_cap = 1 << 16, .modulus_bits = 32,
                     .max_clients = 1 << 10};
  absl::Status s = ValidateFixedPoint(c);
  EXPECT_CODE(s, absl::StatusCode::kInvalidArgument);
  // The message names the numbers: 10 + 16 + 16 + 1 = 43 bits needed, 32 available.
  EXPECT_NE(std::string(s.message()).find("43"), std::string::npos) << s;
  EXPECT_NE(std::string(s.message()).find("32"), std::string::npos) << s;
  c.modulus_bits = 43;
  EXPECT_OK(ValidateFixedPoint(c));
  c.max_clients = (1 << 10) + 1;  // one more client needs one more bit
  EXPECT_CODE(ValidateFixedPoint(c), absl::StatusCode::kInvalidArgument);
}

TEST(FixedPointTest, RefusesInvalidFields) {
  auto refused = [](auto mutate) {
    FixedPointConfig c;
    mutate(c);
    return ValidateFixedPoint(c).code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(refused([](auto& c) { c.clip = 0; }));
  EXPECT_TRUE(refused([](auto& c) { c.clip = -1; }));
  EXPECT_TRUE(refused([](auto& c) { c.clip = std::numeric_limits<double>::infinity(); }));
  EXPECT_TRUE(refused([](auto& c) { c.clip = std::nan(""); }));
  EXPECT_TRUE(refused([](auto& c) { c.bits = 0; }));
  EXPECT_TRUE(refused([](auto& c) { c.bits = 33; }));
  EXPECT_TRUE(refused([](auto& c) { c.weight_cap = 0; }));
  EXPECT_TRUE(refused([](auto& c) { c.modulus_bits = 7; }));
  EXPECT_TRUE(refused([](auto& c) { c.modulus_bits = 65; }));
  EXPECT_TRUE(refused([](auto& c) { c.max_clients = 0; }));
}

// Every client at +clip, then every client at -clip, with the largest weight, for max_clients
// clients, in the smallest modulus the validation allows: the sum must not wrap.
TEST(FixedPointTest, ExtremesDecodeExactlyWithoutWrapping) {
  const FixedPointConfig c{.clip = 0.5, .bits = 16, .weight_cap = 1 << 16, .modulus_bits = 43,
                           .max_clients = 1000};
  ASSERT_OK(ValidateFixedPoint(c));
  core::Rng rng(1);
  const std::vector<float> top(64, 0.5f), above(64, 7.0f), bottom(64, -0.5f), below(64, -1e30f);
  for (const auto& [x, want] : {std::pair{&top, 0.5}, std::pair{&above, 0.5},
                                std::pair{&bottom, -0.5}, std::pair{&below, -0.5}}) {
    ASSERT_OK_AND_ASSIGN(std::vector<uint64_t> enc, EncodeFixedPoint(*x, 1 << 16, c, rng));
    ASSERT_EQ(enc.size(), x->size() + 1);
    const std::vector<uint64_t> sum = SumOfCopies(enc, c.max_clients, c.modulus_bits);
    EXPECT_EQ(sum.back(), uint64_t{1000} << 16);
    ASSERT_OK_AND_ASSIGN(std::vector<float> mean, DecodeFixedPointMean(sum, c, c.max_clients));
    for (float m : mean) ASSERT_NEAR(m, want, Step(c)) << "want " << want;
  }
}

TEST(FixedPointTest, HalfAtEachExtremeAveragesToZero) {
  const FixedPointConfig c{.clip = 1.0, .bits = 16, .weight_cap = 1 << 16, .modulus_bits = 43,
                           .max_clients = 1000};
  core::Rng rng(2);
  ASSERT_OK_AND_ASSIGN(auto hi, EncodeFixedPoint(std::vector<float>(8, 1.0f), 1 << 16, c, rng));
  ASSERT_OK_AND_ASSIGN(auto lo, EncodeFixedPoint(std::vector<float>(8, -1.0f), 1 << 16, c, rng));
  std::vector<uint64_t> acc(9, 0);
  for (int i = 0; i < 500; ++i) {
    AddMod(acc, hi, c.modulus_bits);
    AddMod(acc, lo, c.modulus_bits);
  }
  ASSERT_OK_AND_ASSIGN(std::vector<float> mean, DecodeFixedPointMean(acc, c, 1000));
  for (float m : mean) EXPECT_NEAR(m, 0.0, Step(c));
}

TEST(FixedPointTest, WeightAboveCapIsCappedAndBelowOneRefused) {
  const FixedPointConfig c{.weight_cap = 100};
  core::Rng rng(3);
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeFixedPoint(std::vector<float>{0.25f}, 1'000'000, c, rng));
  EXPECT_EQ(enc.back(), 100u);
  EXPECT_CODE(EncodeFixedPoint(std::vector<float>{0.25f}, 0, c, rng),
              absl::StatusCode::kInvalidArgument);
}

TEST(FixedPointTest, RefusesNanAndInf) {
  const FixedPointConfig c;
  core::Rng rng(4);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    EXPECT_CODE(EncodeFixedPoint(std::vector<float>{0.0f, bad}, 1, c, rng),
                absl::StatusCode::kInvalidArgument);
  }
}

// E[q] = u: the mean of many encodings of a value between two grid points is the value.
TEST(FixedPointTest, StochasticRoundingIsUnbiased) {
  const FixedPointConfig c{.clip = 1.0, .bits = 4};  // a coarse grid: step 2/15
  const double step = Step(c);
  const double value = -1.0 + 5.3 * step;  // 30% of the way from grid point 5 to 6
  core::Rng rng(5);
  constexpr int kN = 100'000;
  std::vector<float> x(kN, static_cast<float>(value));
  ASSERT_OK_AND_ASSIGN(std::vector<uint64_t> enc, EncodeFixedPoint(x, 1, c, rng));
  double sum = 0;
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(enc[i] == 5 || enc[i] == 6) << enc[i];
    sum += -1.0 + enc[i] * step;
  }
  const double frac = 5.3 - 5.0;
  const double std_err = step * std::sqrt(frac * (1 - frac) / kN);
  EXPECT_NEAR(sum / kN, static_cast<double>(static_cast<float>(value)), 3 * std_err);
}

TEST(FixedPointTest, EncodingIsReproducibleForASeed) {
  const FixedPointConfig c;
  std::vector<float> x = {0.1f, -0.7f, 0.333f};
  core::Rng a(9), b(9);
  EXPECT_EQ(EncodeFixedPoint(x, 5, c, a).value(), EncodeFixedPoint(x, 5, c, b).value());
}

TEST(FixedPointTest, DecodedWeightedMeanMatchesPlaintext) {
  const FixedPointConfig c{.clip = 2.0, .bits = 16, .weight_cap = 1000, .modulus_bits = 48,
                           .max_clients = 16};
  const std::vector<std::vector<float>> xs = {
      {0.5f, -1.25f, 1.9f, 0.0f, -3.0f}, {-0.1f, 0.75f, -1.9f, 0.01f, 1.0f},
      {1.5f, 0.3f, 0.2f, -0.02f, 2.5f}};
  const std::vector<int64_t> weights = {600, 17, 250};
  core::Rng rng(6);
  std::vector<uint64_t> acc(6, 0);
  for (size_t k = 0; k < xs.size(); ++k) {
    ASSERT_OK_AND_ASSIGN(auto enc, EncodeFixedPoint(xs[k], weights[k], c, rng));
    AddMod(acc, enc, c.modulus_bits);
  }
  ASSERT_OK_AND_ASSIGN(std::vector<float> mean, DecodeFixedPointMean(acc, c, 3));
  ASSERT_EQ(mean.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    double num = 0, den = 0;
    for (size_t k = 0; k < xs.size(); ++k) {
      num += weights[k] * std::clamp<double>(xs[k][i], -c.clip, c.clip);
      den += weights[k];
    }
    EXPECT_NEAR(mean[i], num / den, Step(c)) << "coordinate " << i;
  }
}

TEST(FixedPointTest, DecodeRefusesImpossibleSums) {
  const FixedPointConfig c{.weight_cap = 100, .modulus_bits = 40, .max_clients = 8};
  ASSERT_OK(ValidateFixedPoint(c));
  const uint64_t top = (uint64_t{1} << 16) - 1;
  EXPECT_CODE(DecodeFixedPointMean(std::vector<uint64_t>{5, 0}, c, 1),
              absl::StatusCode::kFailedPrecondition);
  EXPECT_CODE(DecodeFixedPointMean(std::vector<uint64_t>{}, c, 1),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(DecodeFixedPointMean(std::vector<uint64_t>{0, 10}, c, 0),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(DecodeFixedPointMean(std::vector<uint64_t>{0, 10}, c, 9),
              absl::StatusCode::kInvalidArgument);
  // W = 2 from 3 clients (each weighs >= 1), W = 301 from 3 clients (cap 100).
  EXPECT_CODE(DecodeFixedPointMean(std::vector<uint64_t>{0, 2}, c, 3), absl::StatusCode::kDataLoss);
  EXPECT_CODE(DecodeFixedPointMean(std::vector<uint64_t>{0, 301}, c, 3),
              absl::StatusCode::kDataLoss);
  // A coordinate above W * (2^bits - 1): off the grid.
  EXPECT_CODE(DecodeFixedPointMean(std::vector<uint64_t>{10 * top + 1, 10}, c, 3),
              absl::StatusCode::kDataLoss);
  ASSERT_OK_AND_ASSIGN(auto mean, DecodeFixedPointMean(std::vector<uint64_t>{10 * top, 10}, c, 3));
  EXPECT_FLOAT_EQ(mean[0], 1.0f);
}

TEST(FixedPointTest, AddModWrapsAtTheModulus) {
  std::vector<uint64_t> acc = {(uint64_t{1} << 20) - 1, 5, ~uint64_t{0}};
  AddMod(acc, std::vector<uint64_t>{2, 7, 0}, 20);
  EXPECT_EQ(acc, (std::vector<uint64_t>{1, 12, (uint64_t{1} << 20) - 1}));
  std::vector<uint64_t> full = {~uint64_t{0}};
  AddMod(full, std::vector<uint64_t>{2}, 64);
  EXPECT_EQ(full[0], 1u);
  EXPECT_EQ(ModulusMask(64), ~uint64_t{0});
  EXPECT_EQ(ModulusMask(8), 255u);
}

TEST(FixedPointTest, ValidateMaskedVector) {
  EXPECT_OK(ValidateMaskedVector(std::vector<uint64_t>{0, 255}, 2, 8));
  EXPECT_CODE(ValidateMaskedVector(std::vector<uint64_t>{0, 256}, 2, 8),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(ValidateMaskedVector(std::vector<uint64_t>{0}, 2, 8),
              absl::StatusCode::kInvalidArgument);
  EXPECT_OK(ValidateMaskedVector(std::vector<uint64_t>{~uint64_t{0}}, 1, 64));
}

// Differential test of the masking arithmetic: three clients with pairwise masks (+PRG(s_uv) for
// u > v, -PRG(s_uv) otherwise) and self masks; once the server removes the self masks, the sum of
// the masked vectors equals the plain sum of the encodings bit for bit.
TEST(FixedPointTest, PairwiseMasksCancelInTheSum) {
  const FixedPointConfig c{.modulus_bits = 40, .max_clients = 16};
  ASSERT_OK(ValidateFixedPoint(c));
  const uint64_t mask = ModulusMask(c.modulus_bits);
  constexpr int kClients = 3;
  constexpr size_t kDim = 10'000;
  auto pair_key = [](int u, int v) {
    std::array<uint8_t, 32> key{};
    key[0] = static_cast<uint8_t>(std::min(u, v));
    key[1] = static_cast<uint8_t>(std::max(u, v));
    return key;
  };
  auto self_key = [](int u) {
    std::array<uint8_t, 32> key{};
    key[31] = static_cast<uint8_t>(u + 1);
    return key;
  };
  core::Rng rng(7);
  std::vector<uint64_t> plain(kDim + 1, 0), masked_sum(kDim + 1, 0);
  for (int u = 0; u < kClients; ++u) {
    std::vector<float> x(kDim);
    for (size_t i = 0; i < kDim; ++i) x[i] = static_cast<float>(rng.UniformDouble() * 2 - 1);
    ASSERT_OK_AND_ASSIGN(std::vector<uint64_t> y, EncodeFixedPoint(x, 10 + u, c, rng));
    AddMod(plain, y, c.modulus_bits);
    ASSERT_OK_AND_ASSIGN(MaskPrg self, MaskPrg::Create(self_key(u)));
    self.AddTo(y, mask);
    for (int v = 0; v < kClients; ++v) {
      if (v == u) continue;
      ASSERT_OK_AND_ASSIGN(MaskPrg prg, MaskPrg::Create(pair_key(u, v)));
      if (u > v) {
        prg.AddTo(y, mask);
      } else {
        prg.SubtractFrom(y, mask);
      }
    }
    ASSERT_OK(ValidateMaskedVector(y, kDim + 1, c.modulus_bits));
    AddMod(masked_sum, y, c.modulus_bits);
  }
  EXPECT_NE(masked_sum, plain);
  for (int u = 0; u < kClients; ++u) {
    ASSERT_OK_AND_ASSIGN(MaskPrg self, MaskPrg::Create(self_key(u)));
    self.SubtractFrom(masked_sum, mask);
  }
  EXPECT_EQ(masked_sum, plain);
  EXPECT_OK(DecodeFixedPointMean(masked_sum, c, kClients));
}

}  // namespace
}  // namespace tessera::security
