#include "security/secagg/config.h"

#include <cmath>

#include "core/strings.h"

namespace tessera::security::secagg {

using core::StrCat;

double AbortProbability(int n, int k, int t, double dropout) {
  // P(X < t) for X ~ Binomial(k, 1 - dropout), summed in log space.
  const double q = 1.0 - dropout;
  if (q >= 1.0) return t > k ? 1.0 : 0.0;
  double tail = 0;
  for (int x = 0; x < t && x <= k; ++x) {
    const double log_p = std::lgamma(k + 1.0) - std::lgamma(x + 1.0) - std::lgamma(k - x + 1.0) +
                         x * std::log(q) + (k - x) * std::log1p(-q);
    tail += std::exp(log_p);
  }
  return std::min(1.0, n * tail);
}

namespace {
int MinimalSecureThreshold(int k, double dishonest) {
  return static_cast<int>(std::floor(k / 2.0 + dishonest * k)) + 1;
}
}  // namespace

absl::StatusOr<SecAggConfig> ResolveConfig(const SecAggConfig& requested, int n) {
  SecAggConfig c = requested;
  if (n < 2) return absl::InvalidArgumentError(StrCat("secure aggregation needs at least 2 clients, got ", n));
  if (!(c.expected_dropout >= 0 && c.expected_dropout < 1)) {
    return absl::InvalidArgumentError(StrCat("expected dropout must be in [0, 1), got ", c.expected_dropout));
  }
  if (!(c.dishonest_fraction >= 0 && c.dishonest_fraction < 1)) {
    return absl::InvalidArgumentError(StrCat("dishonest fraction must be in [0, 1), got ", c.dishonest_fraction));
  }
  if (c.stage_deadline <= absl::ZeroDuration()) return absl::InvalidArgumentError("stage deadline must be positive");
  if (c.neighbours < 0 || c.threshold < 0) return absl::InvalidArgumentError("neighbours and threshold must not be negative");
  if (!(c.max_abort_probability > 0 && c.max_abort_probability <= 1)) {
    return absl::InvalidArgumentError("max abort probability must be in (0, 1]");
  }
  if (c.neighbours == 0) {
    // Bell et al. 2020: k = O(log n) suffices for a given dropout and dishonest fraction; take
    // the smallest even k whose minimal secure threshold survives the dropouts with the wanted
    // probability, or the complete graph when no sparser one does.
    // Security needs k = O(log n) whatever the dropouts (Bell et al.: the honest neighbours of
    // each client must stay connected); 2 log2(n) is the floor here.
    int k_min = 2 * static_cast<int>(std::ceil(std::log2(static_cast<double>(n))));
    k_min = std::max(4, k_min + k_min % 2);
    c.neighbours = n - 1;
    for (int k = k_min; k < n - 1; k += 2) {
      const int t = c.threshold > 0 ? c.threshold : MinimalSecureThreshold(k, c.dishonest_fraction);
      if (t <= k && AbortProbability(n, k, t, c.expected_dropout) <= c.max_abort_probability) {
        c.neighbours = k;
        break;
      }
    }
  }
  c.neighbours = std::min(c.neighbours, n - 1);
  const int k = c.neighbours;
  const double security_bound = k / 2.0 + c.dishonest_fraction * k;
  const double liveness_bound = k * (1.0 - c.expected_dropout);
  if (c.threshold == 0) c.threshold = MinimalSecureThreshold(k, c.dishonest_fraction);
  const int t = c.threshold;
  if (t < 1 || t > k) return absl::InvalidArgumentError(StrCat("threshold ", t, " must be in [1, ", k, "] neighbours"));
  if (t <= security_bound) {
    return absl::InvalidArgumentError(StrCat("threshold ", t, " of ", k, " neighbours is not above k/2 + dishonest*k = ",
                                             security_bound, ": a malicious server could rebuild both secrets of a client"));
  }
  if (t > liveness_bound) {
    return absl::InvalidArgumentError(StrCat("threshold ", t, " of ", k, " neighbours cannot be met with ",
                                             c.expected_dropout * 100, "% expected dropout (at most ", liveness_bound,
                                             " neighbours left); raise neighbours or lower the dropout assumption"));
  }
  FixedPointConfig fp = c.fixed_point;
  fp.max_clients = std::max(fp.max_clients, n);
  if (absl::Status s = ValidateFixedPoint(fp); !s.ok()) return s;
  c.fixed_point = fp;
  return c;
}

}  // namespace tessera::security::secagg
