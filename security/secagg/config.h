// Parameters of a SecAgg+ session, chosen from the number of sampled clients, the expected
// dropout rate and the assumed fraction of dishonest clients, and checked before a round starts:
// impossible parameters are refused, never warned about.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "security/secagg/fixed_point.h"

namespace tessera::security::secagg {

struct SecAggConfig {
  int neighbours = 0;  // k: 0 = choose from n (SecAgg+); n - 1 or more = complete graph (SecAgg)
  int threshold = 0;   // t: 0 = choose; each secret needs t of its k shares to be rebuilt
  double expected_dropout = 0.2;
  double dishonest_fraction = 0.05;
  // When k is chosen (neighbours = 0): the largest acceptable chance that some client keeps
  // fewer than t surviving neighbours when clients drop independently at expected_dropout.
  double max_abort_probability = 0.01;
  FixedPointConfig fixed_point;
  absl::Duration stage_deadline = absl::Minutes(2);
};

// Union bound over the n clients: n * P(Binomial(k, 1 - dropout) < t), the chance that a round
// aborts because some client has fewer than t surviving neighbours (capped at 1).
double AbortProbability(int num_clients, int neighbours, int threshold, double dropout);

// The session parameters for n sampled clients: k and t filled in and validated. A chosen k is
// the smallest even one whose minimal secure t keeps AbortProbability below
// max_abort_probability (Bell et al. 2020 choose k from such a tail bound), or n - 1.
// INVALID_ARGUMENT, naming the numbers, when:
// - n < 2, dropout or dishonest fraction outside [0, 1), or k or t out of range;
// - t <= k / 2 + dishonest * k (a malicious server could rebuild both secrets of a client);
// - t > k * (1 - dropout) (a round with the expected dropouts could not finish);
// - the fixed-point modulus cannot hold the sum of n inputs.
absl::StatusOr<SecAggConfig> ResolveConfig(const SecAggConfig& requested, int num_clients);

}  // namespace tessera::security::secagg
