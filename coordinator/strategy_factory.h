// Strategies by name, for `tessera simulate` and `tessera coordinator` (--strategy) and their TOML
// configs. Every strategy samples like FedAvg (FedAvgOptions); they differ in how a round's results
// become the next global model:
//
//   fedavg                                      weighted mean (McMahan et al. 2017)
//   fedavgm fedadam fedyogi fedadagrad          weighted mean, then a server optimizer step
//                                               (aggregation/server_optimizer.h)
//   median trimmed-mean krum multi-krum bulyan  Byzantine-robust rules (aggregation/robust.h)
//   norm-bound                                  weighted mean of norm-clipped updates
//                                               (Sun et al. 2019)
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/strategy.h"

namespace tessera::coordinator {

// The parameters a strategy may take; unset ones take the strategy's default. Setting one the
// chosen strategy does not take is an error (it would silently do nothing).
struct StrategyOptions {
  std::string name = "fedavg";
  std::optional<double> server_lr;        // eta: fedavgm 1.0; fedadam, fedyogi, fedadagrad 0.01
  std::optional<double> server_momentum;  // fedavgm: 0.9
  std::optional<double> beta1;            // fedadam, fedyogi, fedadagrad: 0.9
  std::optional<double> beta2;            // fedadam, fedyogi: 0.99
  std::optional<double> tau;              // fedadam, fedyogi, fedadagrad: 1e-3
  std::optional<double> trim_fraction;    // trimmed-mean: 0.1
  std::optional<int> byzantine;           // f: krum, multi-krum, bulyan: 1
  std::optional<int> multi_krum_m;        // multi-krum: n - f
  std::optional<double> norm_bound;       // norm-bound: required
};

// Every name MakeStrategy takes, in the order above.
const std::vector<std::string>& StrategyNames();

// The parameters `options` sets, named like their TOML keys ("server_lr", ...), in a fixed order
// (for summary.json).
std::vector<std::pair<std::string, double>> SetParameters(const StrategyOptions& options);

// The named strategy over `sampling`. INVALID_ARGUMENT, in one line naming the flag, for an unknown
// name, a parameter the strategy does not take, a parameter out of range, a robust rule together
// with secure aggregation (which yields only the sum), or a robust rule that cannot aggregate the
// fewest results a round expects (SamplingStrategy::MinTargetResults).
absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyOptions& options, const FedAvgOptions& sampling,
                                                       bool secure_aggregation);

}  // namespace tessera::coordinator
