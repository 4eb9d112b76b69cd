#include "security/dp/accountant.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numbers>
#include <optional>
#include <system_error>
#include <utility>

#include "core/status.h"
#include "core/strings.h"

namespace tessera::security::dp {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr std::string_view kHeader = "tessera-rdp-accountant v1\n";
constexpr size_t kMaxOrders = 1 << 20;

// ---- Log-space arithmetic, after TF Privacy's rdp_accountant.py (_log_add, _log_sub,
// _log_erfc). Zero is represented as -infinity.

// log(exp(x) + exp(y)).
double LogAdd(double x, double y) {
  const double a = std::min(x, y);
  const double b = std::max(x, y);
  if (a == -kInf) return b;
  return std::log1p(std::exp(a - b)) + b;
}

// log(exp(x) - exp(y)); nullopt when the result would be negative (x < y), which TF Privacy raises
// as ValueError. Written as x + log(-expm1(y - x)), which cannot overflow where TF Privacy's
// log(expm1(x - y)) + y needs its OverflowError fallback.
std::optional<double> LogSub(double x, double y) {
  if (x < y) return std::nullopt;
  if (y == -kInf) return x;
  if (x == y) return -kInf;
  return x + std::log(-std::expm1(y - x));
}

// log(erfc(x)), accurate where erfc(x) itself underflows. TF Privacy uses scipy's log_ndtr and
// falls back to this asymptotic (Laurent) series of erfc at infinity:
//   log(erfc(x)) = -log(pi)/2 - log(x) - x^2 - 1/(2x^2) + 5/(8x^4) - 37/(24x^6) + 353/(64x^8) + ...
// std::erfc is accurate to a few ulp while its result is a normal double (x < ~26.5); from
// x = 25 on the series' truncation error is below 1e-12 relative, so we switch there.
double LogErfc(double x) {
  if (x < 25.0) return std::log(std::erfc(x));
  const double x2 = x * x;
  const double inv2 = 1.0 / x2;
  return -0.5 * std::log(std::numbers::pi) - std::log(x) - x2 +
         inv2 * (-0.5 + inv2 * (0.625 + inv2 * (-37.0 / 24.0 + inv2 * (353.0 / 64.0))));
}

// log(A_alpha) for integer alpha, 0 < q < 1 (TF Privacy's _compute_log_a_int):
//   A_alpha = sum_{i=0}^{alpha} binom(alpha, i) q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 sigma^2)).
double LogAInt(double q, double sigma, int alpha) {
  const double log_q = std::log(q);
  const double log_1mq = std::log1p(-q);
  const double two_var = 2.0 * sigma * sigma;
  double log_a = -kInf;
  double log_binom = 0.0;  // log binom(alpha, i), updated incrementally (lgamma is not reentrant)
  for (int i = 0; i <= alpha; ++i) {
    if (i > 0) log_binom += std::log(static_cast<double>(alpha - i + 1)) - std::log(i);
    const double di = i;
    const double s = log_binom + di * log_q + (alpha - di) * log_1mq + (di * di - di) / two_var;
    log_a = LogAdd(log_a, s);
  }
  return log_a;
}

// log(A_alpha) for fractional alpha, 0 < q < 1 (TF Privacy's _compute_log_a_frac): A_alpha split
// into the integrals over (-inf, z0] and [z0, +inf), each expanded in a binomial series whose
// generalized coefficients binom(alpha, i) change sign once i > alpha. Stops when both terms fall
// below exp(-30), as TF Privacy does. nullopt if the series does not settle (then no finite bound
// is claimed for this order).
std::optional<double> LogAFrac(double q, double sigma, double alpha) {
  const double log_q = std::log(q);
  const double log_1mq = std::log1p(-q);
  const double two_var = 2.0 * sigma * sigma;
  const double erfc_scale = std::numbers::sqrt2 * sigma;
  const double z0 = sigma * sigma * std::log(1.0 / q - 1.0) + 0.5;
  double log_a0 = -kInf;
  double log_a1 = -kInf;
  double log_abs_coef = 0.0;  // log |binom(alpha, i)|
  bool coef_positive = true;
  constexpr int kMaxTerms = 1'000'000;
  for (int i = 0; i < kMaxTerms; ++i) {
    if (i > 0) {
      // binom(alpha, i) = binom(alpha, i-1) * (alpha - i + 1) / i.
      const double factor = alpha - (i - 1);
      log_abs_coef += std::log(std::abs(factor)) - std::log(i);
      if (factor < 0) coef_positive = !coef_positive;
    }
    const double di = i;
    const double j = alpha - di;
    const double log_t0 = log_abs_coef + di * log_q + j * log_1mq;
    const double log_t1 = log_abs_coef + j * log_q + di * log_1mq;
    const double log_e0 = std::log(0.5) + LogErfc((di - z0) / erfc_scale);
    const double log_e1 = std::log(0.5) + LogErfc((z0 - j) / erfc_scale);
    const double log_s0 = log_t0 + (di * di - di) / two_var + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / two_var + log_e1;
    if (coef_positive) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      const std::optional<double> a0 = LogSub(log_a0, log_s0);
      const std::optional<double> a1 = LogSub(log_a1, log_s1);
      if (!a0 || !a1) return std::nullopt;
      log_a0 = *a0;
      log_a1 = *a1;
    }
    if (std::isnan(log_a0) || std::isnan(log_a1)) return std::nullopt;
    if (std::max(log_s0, log_s1) < -30.0) return LogAdd(log_a0, log_a1);
  }
  return std::nullopt;
}

bool ValidOrder(double order) { return std::isfinite(order) && order > 1.0; }

absl::Status ValidateStep(double noise_multiplier, double sampling_rate) {
  if (!(sampling_rate >= 0.0 && sampling_rate <= 1.0)) {
    return absl::InvalidArgumentError(
        core::StrCat("sampling_rate must be in [0, 1], got ", sampling_rate));
  }
  if (!std::isfinite(noise_multiplier) || noise_multiplier < 0.0) {
    return absl::InvalidArgumentError(
        core::StrCat("noise_multiplier must be finite and >= 0, got ", noise_multiplier));
  }
  return absl::OkStatus();
}

// Epsilon at one order, TF Privacy's compute_eps (kImproved) or its pre-2020 form (kClassic).
double EpsilonAtOrder(double order, double rdp, double delta, RdpConversion conversion) {
  if (conversion == RdpConversion::kClassic) return rdp - std::log(delta) / (order - 1.0);
  // kImproved. KL bound: delta <= sqrt(1 - exp(-rdp)) already gives eps = 0.
  if (delta * delta + std::expm1(-rdp) >= 0.0) return 0.0;
  // The bound is numerically unstable as alpha -> 1 and useless there anyway.
  if (order <= 1.01) return kInf;
  return rdp + std::log1p(-1.0 / order) - std::log(delta * order) / (order - 1.0);
}

void AppendDouble(std::string& out, double v) {
  char buf[64];
  // Shortest representation that reads back to the same double; "inf" for infinity.
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) std::abort();  // 64 bytes always suffice for a double
  out.append(buf, end);
}

// Reads a double up to `delim` from the front of `text`, consuming both.
std::optional<double> ReadDouble(std::string_view& text, char delim) {
  const size_t pos = text.find(delim);
  if (pos == std::string_view::npos || pos == 0) return std::nullopt;
  double v = 0;
  const char* first = text.data();
  const char* last = text.data() + pos;
  const auto [end, ec] = std::from_chars(first, last, v);
  if (ec != std::errc() || end != last) return std::nullopt;
  text.remove_prefix(pos + 1);
  return v;
}

}  // namespace

double SampledGaussianRdp(double sampling_rate, double noise_multiplier, double order) {
  const double q = sampling_rate;
  const double sigma = noise_multiplier;
  if (q == 0.0) return 0.0;
  if (sigma == 0.0) return kInf;
  if (q == 1.0) return order / (2.0 * sigma * sigma);
  // Integer orders use the finite sum (exact up to rounding; 513 terms at most for the default
  // orders). Integer orders above 1e6 would need too many terms and go through the series.
  std::optional<double> log_a;
  if (order == std::floor(order) && order <= 1e6) {
    log_a = LogAInt(q, sigma, static_cast<int>(order));
  } else {
    log_a = LogAFrac(q, sigma, order);
  }
  if (!log_a || std::isnan(*log_a)) return kInf;
  // RDP is never negative; rounding in the log-space sums can leave a -1e-17 for tiny q.
  return std::max(0.0, *log_a / (order - 1.0));
}

std::vector<double> RdpAccountant::DefaultOrders() {
  std::vector<double> orders = {1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5};
  for (int a = 5; a < 64; ++a) orders.push_back(a);
  for (double a : {128.0, 256.0, 512.0}) orders.push_back(a);
  return orders;
}

RdpAccountant::RdpAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {
  bool valid = !orders_.empty();
  for (double a : orders_) valid = valid && ValidOrder(a);
  if (!valid) {
    std::fputs("tessera: RdpAccountant needs a non-empty list of finite orders > 1\n", stderr);
    std::abort();
  }
}

absl::Status RdpAccountant::Step(double noise_multiplier, double sampling_rate, int steps) {
  TESSERA_RETURN_IF_ERROR(ValidateStep(noise_multiplier, sampling_rate));
  if (steps < 0) {
    return absl::InvalidArgumentError(core::StrCat("steps must be >= 0, got ", steps));
  }
  if (steps == 0 || sampling_rate == 0.0) return absl::OkStatus();
  for (size_t i = 0; i < orders_.size(); ++i) {
    rdp_[i] += steps * SampledGaussianRdp(sampling_rate, noise_multiplier, orders_[i]);
  }
  return absl::OkStatus();
}

absl::StatusOr<PrivacySpent> RdpAccountant::GetPrivacySpent(double delta,
                                                            RdpConversion conversion) const {
  if (!(delta > 0.0 && delta < 1.0)) {
    return absl::InvalidArgumentError(core::StrCat("delta must be in (0, 1), got ", delta));
  }
  PrivacySpent best{kInf, orders_.front()};
  for (size_t i = 0; i < orders_.size(); ++i) {
    const double eps = EpsilonAtOrder(orders_[i], rdp_[i], delta, conversion);
    if (eps < best.epsilon) best = {eps, orders_[i]};
  }
  best.epsilon = std::max(0.0, best.epsilon);
  return best;
}

absl::StatusOr<double> RdpAccountant::Epsilon(double delta, RdpConversion conversion) const {
  TESSERA_ASSIGN_OR_RETURN(PrivacySpent spent, GetPrivacySpent(delta, conversion));
  return spent.epsilon;
}

absl::StatusOr<bool> RdpAccountant::WouldExceed(double noise_multiplier, double sampling_rate,
                                                double delta, double epsilon_budget,
                                                RdpConversion conversion) const {
  if (!(epsilon_budget >= 0.0)) {
    return absl::InvalidArgumentError(
        core::StrCat("epsilon_budget must be >= 0, got ", epsilon_budget));
  }
  RdpAccountant next = *this;
  TESSERA_RETURN_IF_ERROR(next.Step(noise_multiplier, sampling_rate, 1));
  TESSERA_ASSIGN_OR_RETURN(double eps, next.Epsilon(delta, conversion));
  return eps > epsilon_budget;
}

std::string RdpAccountant::Serialize() const {
  std::string out(kHeader);
  out += std::to_string(orders_.size());
  out += '\n';
  for (size_t i = 0; i < orders_.size(); ++i) {
    AppendDouble(out, orders_[i]);
    out += ' ';
    AppendDouble(out, rdp_[i]);
    out += '\n';
  }
  return out;
}

absl::StatusOr<RdpAccountant> RdpAccountant::Deserialize(std::string_view text) {
  auto malformed = [](std::string_view what) {
    return absl::InvalidArgumentError(core::StrCat("RDP accountant state: ", what));
  };
  if (!text.starts_with(kHeader)) return malformed("missing 'tessera-rdp-accountant v1' header");
  text.remove_prefix(kHeader.size());
  const size_t eol = text.find('\n');
  if (eol == std::string_view::npos) return malformed("missing order count");
  size_t count = 0;
  {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + eol, count);
    if (ec != std::errc() || end != text.data() + eol || count == 0 || count > kMaxOrders) {
      return malformed("bad order count");
    }
  }
  text.remove_prefix(eol + 1);
  std::vector<double> orders;
  std::vector<double> rdp;
  orders.reserve(count);
  rdp.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const std::optional<double> order = ReadDouble(text, ' ');
    const std::optional<double> value = order ? ReadDouble(text, '\n') : std::nullopt;
    if (!order || !value) return malformed(core::StrCat("unreadable line ", i + 1));
    if (!ValidOrder(*order)) return malformed(core::StrCat("order ", *order, " is not > 1"));
    if (std::isnan(*value) || *value < 0.0) {
      return malformed(core::StrCat("RDP ", *value, " at order ", *order, " is not >= 0"));
    }
    orders.push_back(*order);
    rdp.push_back(*value);
  }
  if (!text.empty()) return malformed("trailing bytes");
  RdpAccountant accountant(std::move(orders));
  accountant.rdp_ = std::move(rdp);
  return accountant;
}

}  // namespace tessera::security::dp
