// Privacy accounting for DP-FedAvg with a Renyi-DP (RDP) accountant of the sampled Gaussian
// mechanism (Mironov 2017, "Renyi Differential Privacy"; Mironov, Talwar, Zhang 2019, "Renyi
// Differential Privacy of the Sampled Gaussian Mechanism"). It is a port of TF Privacy's
// tensorflow_privacy/privacy/analysis/rdp_accountant.py (compute_rdp, _compute_log_a for integer
// and fractional orders, get_privacy_spent), the same analysis Opacus's RDPAccountant and Google's
// dp_accounting RdpAccountant implement.
//
// One round of DP-FedAvg that samples each of N clients with probability q and adds Gaussian noise
// of noise multiplier z (security/dp/gaussian.h) is one step of the sampled Gaussian mechanism
// with (q, z). RDP composes by addition, order by order, so the state is one number per order;
// epsilon for a delta is read off the best order.
//
// The coordinator keeps the accountant in its durable state (Serialize / Deserialize) and refuses
// to start a round for which WouldExceed(...) says the budget would be overrun.
//
// Thread-compatible: const methods may run concurrently; Step needs exclusive access.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::security::dp {

// How RDP at order alpha becomes (epsilon, delta)-DP.
enum class RdpConversion {
  // eps = rdp - (log(delta) + log(alpha)) / (alpha - 1) + log((alpha - 1) / alpha), with eps = 0
  // when delta^2 + expm1(-rdp) >= 0 and no bound for alpha <= 1.01. Canonne, Kamath, Steinke 2020
  // ("The Discrete Gaussian for Differential Privacy", Proposition 12); also Asoodeh et al. 2020.
  // This is TF Privacy's get_privacy_spent since 2020, dp_accounting's RdpAccountant and Opacus
  // >= 1.0's privacy_analysis.get_privacy_spent. Always <= kClassic.
  kImproved,
  // eps = rdp - log(delta) / (alpha - 1): Mironov 2017, Proposition 3. TF Privacy's
  // get_privacy_spent before 2020, i.e. the numbers in the older TF Privacy READMEs and papers.
  kClassic,
};

struct PrivacySpent {
  double epsilon = 0;        // +infinity when no order gives a finite bound
  double optimal_order = 0;  // the order that attains it (the first one on ties)
};

// RDP at `order` of one step of the sampled Gaussian mechanism: each record is included with
// probability `sampling_rate` = q and Gaussian noise of stddev `noise_multiplier` = sigma times the
// L2 sensitivity is added. q = 0 gives 0, sigma = 0 (with q > 0) gives +infinity, q = 1 gives
// exactly order / (2 sigma^2); otherwise log(A_order) / (order - 1) (Mironov et al. 2019,
// Sec. 3.3). Where the series cannot be evaluated reliably it returns +infinity (a valid, useless
// bound). Preconditions (checked by the callers below): q in [0, 1], sigma >= 0 finite, order > 1
// finite.
double SampledGaussianRdp(double sampling_rate, double noise_multiplier, double order);

class RdpAccountant {
 public:
  // TF Privacy's compute_dp_sgd_privacy orders: 1.25, 1.5, ..., 4.5 (step 0.25 then 0.5), 5 to 63
  // by 1, 128, 256, 512 (72 orders). (Opacus's RDPAccountant defaults to 1.1, 1.2, ..., 10.9 and
  // 12..63 instead; the values differ in the third digit at most for typical parameters.)
  static std::vector<double> DefaultOrders();

  // `orders` must be non-empty and each finite and > 1 (aborts otherwise: orders are code, not
  // input; Deserialize validates the ones it reads). Starts with zero privacy spent.
  explicit RdpAccountant(std::vector<double> orders = DefaultOrders());

  // Composes `steps` rounds of the sampled Gaussian mechanism with (noise_multiplier,
  // sampling_rate). INVALID_ARGUMENT, with the state unchanged, unless sampling_rate is in [0, 1],
  // noise_multiplier is finite and >= 0 and steps >= 0.
  absl::Status Step(double noise_multiplier, double sampling_rate, int steps = 1);

  // The smallest epsilon over the orders such that everything composed so far is
  // (epsilon, delta)-DP; +infinity if none is finite (e.g. after a step without noise).
  // INVALID_ARGUMENT unless 0 < delta < 1.
  absl::StatusOr<double> Epsilon(double delta,
                                 RdpConversion conversion = RdpConversion::kImproved) const;
  absl::StatusOr<PrivacySpent> GetPrivacySpent(
      double delta, RdpConversion conversion = RdpConversion::kImproved) const;

  const std::vector<double>& orders() const { return orders_; }
  // Accumulated RDP, one value per order (same indexing as orders()); may hold +infinity.
  const std::vector<double>& rdp() const { return rdp_; }

  // A text form that round-trips every double exactly:
  //   "tessera-rdp-accountant v1\n<count>\n" then "<order> <rdp>\n" per order.
  std::string Serialize() const;
  // INVALID_ARGUMENT for anything Serialize would not produce: a wrong header or count, orders not
  // finite and > 1, RDP values negative or NaN, trailing bytes.
  static absl::StatusOr<RdpAccountant> Deserialize(std::string_view text);

  // Whether one more step with (noise_multiplier, sampling_rate) would take epsilon at `delta`
  // above `epsilon_budget`. INVALID_ARGUMENT as Step and Epsilon, or if epsilon_budget is negative
  // or NaN.
  absl::StatusOr<bool> WouldExceed(double noise_multiplier, double sampling_rate, double delta,
                                   double epsilon_budget,
                                   RdpConversion conversion = RdpConversion::kImproved) const;

 private:
  std::vector<double> orders_;
  std::vector<double> rdp_;
};

}  // namespace tessera::security::dp
