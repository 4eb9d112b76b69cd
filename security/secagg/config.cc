#include "security/secagg/config.h"

#include <cmath>

#include "core/strings.h"

namespace tessera::security::secagg {

using core::StrCat;

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
  if (c.neighbours == 0) {
    // Bell et al. 2020: k = O(log n) suffices; 4 log2(n), even, leaves room for the threshold
    // between the security bound (k/2 + dishonest k) and the liveness bound (k (1 - dropout)).
    int k = 4 * static_cast<int>(std::ceil(std::log2(static_cast<double>(n))));
    k += k % 2;
    c.neighbours = std::min(k, n - 1);
  }
  c.neighbours = std::min(c.neighbours, n - 1);
  const int k = c.neighbours;
  const double security_bound = k / 2.0 + c.dishonest_fraction * k;
  const double liveness_bound = k * (1.0 - c.expected_dropout);
  if (c.threshold == 0) c.threshold = static_cast<int>(std::floor(security_bound)) + 1;
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
