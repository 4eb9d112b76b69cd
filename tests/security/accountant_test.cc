// Tests of security/dp/accountant.h against published values.
//
// Sources of the numbers (all from github.com/tensorflow/privacy, TF Privacy):
//  [RDP]  tensorflow_privacy/privacy/analysis/rdp_accountant_test.py
//  [CLI]  tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py: the current version
//         (dp_accounting RdpAccountant, improved conversion) and, for the classic conversion, the
//         2019 version of the same test, which ran on rdp_accountant.py before the conversion
//         changed; both with TF Privacy's default orders, i.e. RdpAccountant::DefaultOrders().
//  [TUT]  tutorials/README.md and compute_dp_sgd_privacy.py's docstring: the MNIST DP-SGD tutorial
//         (Abadi et al. 2016 setting), classic conversion.
#include "security/dp/accountant.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"

namespace tessera::security::dp {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

PrivacySpent Spent(const RdpAccountant& accountant, double delta, RdpConversion conversion) {
  absl::StatusOr<PrivacySpent> spent = accountant.GetPrivacySpent(delta, conversion);
  EXPECT_OK(spent);
  return spent.value_or(PrivacySpent{});
}

// ---- RDP of the (sampled) Gaussian mechanism

TEST(SampledGaussianRdpTest, WithoutSubsamplingIsExactlyAlphaOverTwoSigmaSquared) {
  // Mironov 2017, Proposition 7; [RDP] test_compute_rdp_no_sampling.
  EXPECT_EQ(SampledGaussianRdp(1.0, 10.0, 20.0), 0.1);
  const double sigma = 1.3;
  const int steps = 17;
  RdpAccountant accountant;
  ASSERT_OK(accountant.Step(sigma, 1.0, steps));
  for (size_t i = 0; i < accountant.orders().size(); ++i) {
    const double alpha = accountant.orders()[i];
    EXPECT_EQ(accountant.rdp()[i], steps * (alpha / (2 * sigma * sigma))) << "order " << alpha;
  }
}

TEST(SampledGaussianRdpTest, NoDataAndNoNoise) {
  EXPECT_EQ(SampledGaussianRdp(0.0, 10.0, 20.0), 0.0);  // [RDP] test_compute_rdp_no_data
  EXPECT_EQ(SampledGaussianRdp(0.01, 0.0, 20.0), kInf);
}

TEST(SampledGaussianRdpTest, MatchesTfPrivacyAtIntegerAndFractionalOrders) {
  // [RDP] test_compute_rdp_scalar: compute_rdp(q=0.1, noise=2, steps=10, orders=5) = 0.07737.
  EXPECT_NEAR(10 * SampledGaussianRdp(0.1, 2.0, 5.0), 0.07737, 5e-6);
  // [RDP] test_compute_rdp_sequence: compute_rdp(0.01, 2.5, 50, ...), delta=1e-5.
  const std::vector<double> orders = {1.5, 2.5, 5, 50, 100};
  const std::vector<double> expected = {0.00065, 0.001085, 0.00218075, 0.023846, 167.416307};
  RdpAccountant accountant(orders);
  ASSERT_OK(accountant.Step(2.5, 0.01, 50));
  for (size_t i = 0; i < orders.size(); ++i) {
    EXPECT_NEAR(accountant.rdp()[i], expected[i], 1e-5) << "order " << orders[i];
  }
}

TEST(SampledGaussianRdpTest, LogAMatchesNumericalIntegration) {
  // [RDP] test_compute_log_a_equals_mp: log(A_alpha) = (alpha - 1) * RDP against the integral
  // A_alpha = E_{z ~ N(0, sigma^2)} [((1 - q) + q exp((2z - 1) / (2 sigma^2)))^alpha], at rtol
  // 1e-4. The integrals were evaluated for these parameters (TF Privacy's list) with mpmath 1.3.0
  // quad(maxdegree=8) at 30 digits, as that test does.
  struct Case {
    double q, sigma, order, log_a;
  };
  const Case cases[] = {
      {1e-7, 0.1, 1.01, 4.003412327842531e-08}, {1e-6, 0.1, 256, 3260234.5099259755},
      {1e-5, 0.1, 256.1, 3263356.2822869574},   {1e-6, 1, 27, 8.769503540806863e-10},
      {1e-4, 1.0, 1.5, 6.442686970363956e-09},  {1e-3, 1.0, 2, 1.7182803522127806e-06},
      {0.01, 10, 20, 0.00019129699912825616},   {0.1, 100, 20.5, 0.00019991818458125194},
      {0.99, 0.1, 256, 3263768.707742836},      {0.999, 100, 256.1, 3.260108037973113},
  };
  for (const Case& c : cases) {
    const double log_a = (c.order - 1) * SampledGaussianRdp(c.q, c.sigma, c.order);
    EXPECT_NEAR(log_a, c.log_a, 1e-4 * std::abs(c.log_a))
        << "q=" << c.q << " sigma=" << c.sigma << " order=" << c.order;
  }
}

// ---- RDP -> (epsilon, delta)

TEST(RdpAccountantTest, DefaultOrdersAreTfPrivacys) {
  const std::vector<double> orders = RdpAccountant::DefaultOrders();
  ASSERT_EQ(orders.size(), 72u);
  EXPECT_EQ(orders.front(), 1.25);
  EXPECT_EQ(orders[9], 4.5);
  EXPECT_EQ(orders[10], 5.0);
  EXPECT_EQ(orders[68], 63.0);
  EXPECT_EQ(orders.back(), 512.0);
}

TEST(RdpAccountantTest, ConversionOfConstantRdp) {
  // [RDP] test_get_privacy_spent_check_target_delta: RDP 1.1 at orders 2..32 (pure DP) and
  // delta 1e-5 give eps = 1.32783806176 at order 32 (improved conversion). The classic bound is
  // derivable by hand: 1.1 - log(1e-5) / 31 = 1.1 + 11.512925464970229 / 31.
  std::string state = "tessera-rdp-accountant v1\n31\n";
  for (int a = 2; a <= 32; ++a) state += std::to_string(a) + " 1.1\n";
  ASSERT_OK_AND_ASSIGN(RdpAccountant accountant, RdpAccountant::Deserialize(state));
  const PrivacySpent improved = Spent(accountant, 1e-5, RdpConversion::kImproved);
  EXPECT_NEAR(improved.epsilon, 1.32783806176, 5e-8);
  EXPECT_EQ(improved.optimal_order, 32);
  const PrivacySpent classic = Spent(accountant, 1e-5, RdpConversion::kClassic);
  EXPECT_NEAR(classic.epsilon, 1.1 + 11.512925464970229 / 31, 1e-12);
  EXPECT_EQ(classic.optimal_order, 32);
}

TEST(RdpAccountantTest, GaussianMechanismCalibratedToEpsilonOne) {
  // [RDP] test_get_privacy_spent_check_target_delta, second part: the Gaussian mechanism with
  // sigma = 4.530877117 is exactly (1, 1e-6)-DP, and RDP over the fine orders 1.001..99.999 with
  // the improved conversion recovers eps = 1 to 7 places.
  std::vector<double> orders;
  for (int i = 1001; i < 100000; ++i) orders.push_back(0.001 * i);
  RdpAccountant accountant(orders);
  ASSERT_OK(accountant.Step(4.530877117, 1.0));
  ASSERT_OK_AND_ASSIGN(double eps, accountant.Epsilon(1e-6, RdpConversion::kImproved));
  EXPECT_NEAR(eps, 1.0, 5e-8);
}

struct DpSgdCase {
  const char* name;
  double n, batch_size, noise_multiplier, epochs, delta;
  double improved_eps, classic_eps, order;
};

TEST(RdpAccountantTest, MatchesTfPrivacysComputeDpSgdPrivacy) {
  // [CLI] test_compute_dp_sgd_privacy: q = batch/n, steps = ceil(epochs * n / batch).
  // Test2 (sigma = 0.1) has its optimum at the fractional order 1.25.
  const DpSgdCase cases[] = {
      {"Test0", 60000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 0.941870567, 19.0},
      {"Test1", 100000, 100, 1.0, 30, 1e-7, 1.4154988495444845, 1.70928734, 13.0},
      {"Test2", 100000000, 1024, 0.1, 10, 1e-7, 5907982.31138195, 5907984.81339406, 1.25},
  };
  for (const DpSgdCase& c : cases) {
    SCOPED_TRACE(c.name);
    RdpAccountant accountant;
    const int steps = static_cast<int>(std::ceil(c.epochs * c.n / c.batch_size));
    ASSERT_OK(accountant.Step(c.noise_multiplier, c.batch_size / c.n, steps));
    const PrivacySpent improved = Spent(accountant, c.delta, RdpConversion::kImproved);
    const PrivacySpent classic = Spent(accountant, c.delta, RdpConversion::kClassic);
    // TF Privacy asserts 7 places; relative 1e-9 for Test2's seven-digit epsilon.
    EXPECT_NEAR(improved.epsilon, c.improved_eps, std::max(5e-8, 1e-9 * c.improved_eps));
    EXPECT_NEAR(classic.epsilon, c.classic_eps, std::max(5e-8, 1e-9 * c.classic_eps));
    EXPECT_EQ(improved.optimal_order, c.order);
    EXPECT_EQ(classic.optimal_order, c.order);
  }
}

TEST(RdpAccountantTest, MnistTutorialEpsilon) {
  // [TUT] DP-SGD on MNIST (Abadi et al. 2016's setting as in TF Privacy's tutorial): N = 60000,
  // batch 256, 60 epochs, delta = 1e-5, i.e. q = 256/60000 and ceil(60 * 60000 / 256) = 14063
  // steps. Published (classic conversion, printed with 3 significant digits):
  //   noise 1.1  -> "eps = 3.01"  (tutorials/README.md, compute_dp_sgd_privacy.py example)
  //   noise 1.12 -> "(2.92, 1e-5)-DP" (compute_dp_sgd_privacy.py docstring, README table)
  const double q = 256.0 / 60000.0;
  const int steps = 14063;
  RdpAccountant z110;
  ASSERT_OK(z110.Step(1.1, q, steps));
  RdpAccountant z112;
  ASSERT_OK(z112.Step(1.12, q, steps));
  ASSERT_OK_AND_ASSIGN(double classic110, z110.Epsilon(1e-5, RdpConversion::kClassic));
  ASSERT_OK_AND_ASSIGN(double classic112, z112.Epsilon(1e-5, RdpConversion::kClassic));
  EXPECT_NEAR(classic110, 3.01, 0.005);
  EXPECT_NEAR(classic112, 2.92, 0.005);
  // The improved conversion gives 2.597 (optimal order 8; classic: order 9). We know no published
  // figure for this exact setting, so this is a regression pin of our own output; the same code
  // path matches the published [CLI] improved-conversion values to 1e-9 above.
  ASSERT_OK_AND_ASSIGN(double improved110, z110.Epsilon(1e-5, RdpConversion::kImproved));
  EXPECT_LT(improved110, classic110);
  EXPECT_NEAR(improved110, 2.5970795196566199, 1e-6);
}

TEST(RdpAccountantTest, CompositionOfTwoMechanisms) {
  // [RDP] test_check_composition: (q=1e-4, sigma=0.4, 40000 steps) then (q=0.1, sigma=2, 100
  // steps), delta = 1e-5. With the classic conversion TF Privacy got eps = 8.509656 at order 2.5
  // (kept in the test as a comment); the improved conversion must stay below it.
  const std::vector<double> orders = {1.25, 1.5, 1.75, 2.,  2.5, 3.,  4.,  5.,  6.,  7.,  8.,
                                      10.,  12., 14.,  16., 20., 24., 28., 32., 64., 256.};
  RdpAccountant accountant(orders);
  ASSERT_OK(accountant.Step(0.4, 1e-4, 40000));
  ASSERT_OK(accountant.Step(2.0, 0.1, 100));
  const PrivacySpent classic = Spent(accountant, 1e-5, RdpConversion::kClassic);
  EXPECT_NEAR(classic.epsilon, 8.509656, 5e-6);
  EXPECT_EQ(classic.optimal_order, 2.5);
  EXPECT_LE(Spent(accountant, 1e-5, RdpConversion::kImproved).epsilon, 8.509656);
}

TEST(RdpAccountantTest, EpsilonGrowsWithRoundsAndShrinksWithNoise) {
  for (RdpConversion conversion : {RdpConversion::kImproved, RdpConversion::kClassic}) {
    RdpAccountant accountant;
    double previous = 0;
    for (int round = 1; round <= 200; ++round) {
      ASSERT_OK(accountant.Step(1.0, 0.01));
      ASSERT_OK_AND_ASSIGN(double eps, accountant.Epsilon(1e-5, conversion));
      EXPECT_GT(eps, previous) << "round " << round;
      previous = eps;
    }
    previous = kInf;
    for (double z = 0.5; z <= 5.0; z += 0.25) {
      RdpAccountant noisy;
      ASSERT_OK(noisy.Step(z, 0.01, 100));
      ASSERT_OK_AND_ASSIGN(double eps, noisy.Epsilon(1e-5, conversion));
      EXPECT_LT(eps, previous) << "noise " << z;
      previous = eps;
    }
  }
}

TEST(RdpAccountantTest, DegenerateMechanisms) {
  RdpAccountant fresh;
  EXPECT_EQ(fresh.Epsilon(1e-5).value(), 0.0);  // nothing released yet
  RdpAccountant no_sampling;
  ASSERT_OK(no_sampling.Step(1.0, 0.0, 1000));
  EXPECT_EQ(no_sampling.Epsilon(1e-5).value(), 0.0);
  RdpAccountant no_noise;
  ASSERT_OK(no_noise.Step(0.0, 0.01));
  EXPECT_EQ(no_noise.Epsilon(1e-5).value(), kInf);
  EXPECT_EQ(no_noise.Epsilon(1e-5, RdpConversion::kClassic).value(), kInf);
}

TEST(RdpAccountantTest, RejectsInvalidArgumentsAndKeepsItsState) {
  RdpAccountant accountant;
  ASSERT_OK(accountant.Step(1.0, 0.1));
  const std::vector<double> before = accountant.rdp();
  for (double q : {-0.1, 1.5, kNaN}) {
    EXPECT_CODE(accountant.Step(1.0, q), absl::StatusCode::kInvalidArgument);
  }
  for (double z : {-1.0, kNaN, kInf}) {
    EXPECT_CODE(accountant.Step(z, 0.1), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_CODE(accountant.Step(1.0, 0.1, -1), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(accountant.rdp(), before);
  for (double delta : {0.0, 1.0, -1e-5, 2.0, kNaN}) {
    EXPECT_CODE(accountant.Epsilon(delta), absl::StatusCode::kInvalidArgument);
    EXPECT_CODE(accountant.WouldExceed(1.0, 0.1, delta, 1.0), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_CODE(accountant.WouldExceed(1.0, 1.5, 1e-5, 1.0), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(accountant.WouldExceed(-1.0, 0.1, 1e-5, 1.0), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(accountant.WouldExceed(1.0, 0.1, 1e-5, -1.0), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(accountant.WouldExceed(1.0, 0.1, 1e-5, kNaN), absl::StatusCode::kInvalidArgument);
}

// ---- Budget and durable state

TEST(RdpAccountantTest, WouldExceedStopsExactlyAtTheBudget) {
  // A coordinator loop: start a round only while it keeps epsilon within budget.
  const double z = 1.0, q = 0.05, delta = 1e-5, budget = 2.0;
  RdpAccountant accountant;
  int rounds = 0;
  while (true) {
    ASSERT_OK_AND_ASSIGN(bool exceed, accountant.WouldExceed(z, q, delta, budget));
    if (exceed) break;
    ASSERT_OK(accountant.Step(z, q));
    ++rounds;
    ASSERT_LT(rounds, 100000);
  }
  EXPECT_GT(rounds, 1);
  EXPECT_LE(accountant.Epsilon(delta).value(), budget);
  const std::vector<double> before = accountant.rdp();
  ASSERT_OK_AND_ASSIGN(bool exceed, accountant.WouldExceed(z, q, delta, budget));
  EXPECT_TRUE(exceed);
  EXPECT_EQ(accountant.rdp(), before);  // asking does not spend
  ASSERT_OK(accountant.Step(z, q));
  EXPECT_GT(accountant.Epsilon(delta).value(), budget);
  // Under the classic (looser) conversion the same budget allows fewer rounds.
  RdpAccountant classic;
  int classic_rounds = 0;
  while (!classic.WouldExceed(z, q, delta, budget, RdpConversion::kClassic).value()) {
    ASSERT_OK(classic.Step(z, q));
    ++classic_rounds;
  }
  EXPECT_LT(classic_rounds, rounds);
}

TEST(RdpAccountantTest, SerializeRoundTripsExactly) {
  RdpAccountant accountant;
  ASSERT_OK(accountant.Step(1.1, 256.0 / 60000, 1234));
  ASSERT_OK(accountant.Step(0.7, 0.013, 3));
  ASSERT_OK_AND_ASSIGN(RdpAccountant restored, RdpAccountant::Deserialize(accountant.Serialize()));
  EXPECT_EQ(restored.orders(), accountant.orders());
  EXPECT_EQ(restored.rdp(), accountant.rdp());  // bit for bit
  EXPECT_EQ(restored.Epsilon(1e-5).value(), accountant.Epsilon(1e-5).value());
  EXPECT_EQ(restored.Serialize(), accountant.Serialize());
  // Infinite RDP (a round without noise) survives too.
  ASSERT_OK(accountant.Step(0.0, 0.1));
  ASSERT_OK_AND_ASSIGN(RdpAccountant spent, RdpAccountant::Deserialize(accountant.Serialize()));
  EXPECT_EQ(spent.rdp(), accountant.rdp());
  EXPECT_EQ(spent.Epsilon(1e-5).value(), kInf);
}

TEST(RdpAccountantTest, DeserializeRejectsMalformedState) {
  const std::string good = "tessera-rdp-accountant v1\n2\n2 0.5\n3.5 0.25\n";
  ASSERT_OK(RdpAccountant::Deserialize(good).status());
  const std::vector<std::string> bad = {
      "",
      "tessera-rdp-accountant v2\n2\n2 0.5\n3.5 0.25\n",
      "tessera-rdp-accountant v1\n3\n2 0.5\n3.5 0.25\n",    // fewer lines than the count
      "tessera-rdp-accountant v1\n0\n",                     // no orders
      "tessera-rdp-accountant v1\nx\n2 0.5\n",              // count not a number
      "tessera-rdp-accountant v1\n2\n2 0.5\n3.5 0.25\nx",   // trailing bytes
      "tessera-rdp-accountant v1\n2\n2 0.5\n3.5 0.25",      // truncated
      "tessera-rdp-accountant v1\n2\n1 0.5\n3.5 0.25\n",    // order 1
      "tessera-rdp-accountant v1\n2\n2 0.5\ninf 0.25\n",    // infinite order
      "tessera-rdp-accountant v1\n2\n2 -0.5\n3.5 0.25\n",   // negative RDP
      "tessera-rdp-accountant v1\n2\n2 nan\n3.5 0.25\n",    // NaN RDP
      "tessera-rdp-accountant v1\n2\n2 0.5x\n3.5 0.25\n",   // junk in a number
      "tessera-rdp-accountant v1\n2\n2  0.5\n3.5 0.25\n",   // extra space
      "tessera-rdp-accountant v1\n99999999999999999999\n",  // absurd count
  };
  for (const std::string& text : bad) {
    SCOPED_TRACE(text);
    EXPECT_CODE(RdpAccountant::Deserialize(text), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace tessera::security::dp
