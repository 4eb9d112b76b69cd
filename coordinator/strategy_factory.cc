#include "coordinator/strategy_factory.h"

#include <algorithm>
#include <cmath>

#include "aggregation/fedavg.h"
#include "aggregation/robust.h"
#include "aggregation/server_optimizer.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::coordinator {
namespace {

using aggregation::RobustRule;
using aggregation::ServerOptimizerKind;
using core::StrCat;

// Bits naming the parameters a strategy takes.
constexpr unsigned kServerLr = 1 << 0;
constexpr unsigned kServerMomentum = 1 << 1;
constexpr unsigned kBeta1 = 1 << 2;
constexpr unsigned kBeta2 = 1 << 3;
constexpr unsigned kTau = 1 << 4;
constexpr unsigned kTrimFraction = 1 << 5;
constexpr unsigned kByzantine = 1 << 6;
constexpr unsigned kMultiKrumM = 1 << 7;
constexpr unsigned kNormBound = 1 << 8;

struct Spec {
  const char* name;
  unsigned params;  // the Params it takes
};

constexpr Spec kSpecs[] = {
    {"fedavg", 0},
    {"fedavgm", kServerLr | kServerMomentum},
    {"fedadam", kServerLr | kBeta1 | kBeta2 | kTau},
    {"fedyogi", kServerLr | kBeta1 | kBeta2 | kTau},
    {"fedadagrad", kServerLr | kBeta1 | kTau},
    {"median", 0},
    {"trimmed-mean", kTrimFraction},
    {"krum", kByzantine},
    {"multi-krum", kByzantine | kMultiKrumM},
    {"bulyan", kByzantine},
    {"norm-bound", kNormBound},
};

std::optional<double> AsDouble(std::optional<int> v) { return v ? std::optional<double>(*v) : std::nullopt; }

struct Param {
  unsigned bit;
  const char* key;  // its TOML key; the flag is the same with dashes
  std::optional<double> value;
};

std::vector<Param> Params(const StrategyOptions& o) {
  return {{kServerLr, "server_lr", o.server_lr},
          {kServerMomentum, "server_momentum", o.server_momentum},
          {kBeta1, "beta1", o.beta1},
          {kBeta2, "beta2", o.beta2},
          {kTau, "tau", o.tau},
          {kTrimFraction, "trim_fraction", o.trim_fraction},
          {kByzantine, "byzantine", AsDouble(o.byzantine)},
          {kMultiKrumM, "multi_krum_m", AsDouble(o.multi_krum_m)},
          {kNormBound, "norm_bound", o.norm_bound}};
}

unsigned SetParams(const StrategyOptions& o) {
  unsigned bits = 0;
  for (const Param& p : Params(o)) bits |= p.value ? p.bit : 0;
  return bits;
}

std::string FlagList(unsigned params) {
  std::string out;
  for (const Param& p : Params(StrategyOptions{})) {
    if (!(params & p.bit)) continue;
    std::string flag = StrCat("--", p.key);
    std::replace(flag.begin(), flag.end(), '_', '-');
    out += StrCat(out.empty() ? "" : ", ", flag);
  }
  return out.empty() ? "none" : out;
}

std::optional<ServerOptimizerKind> OptimizerKind(const std::string& name) {
  for (auto kind : {ServerOptimizerKind::kAvgM, ServerOptimizerKind::kAdam, ServerOptimizerKind::kYogi,
                    ServerOptimizerKind::kAdagrad}) {
    if (aggregation::ServerOptimizerName(kind) == name) return kind;
  }
  return std::nullopt;
}

std::optional<RobustRule> RobustKind(const std::string& name) {
  for (auto rule : {RobustRule::kMedian, RobustRule::kTrimmedMean, RobustRule::kKrum, RobustRule::kMultiKrum,
                    RobustRule::kBulyan}) {
    if (aggregation::RobustRuleName(rule) == name) return rule;
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<Strategy>> MakeServerOptimizer(ServerOptimizerKind kind, const StrategyOptions& o,
                                                              const FedAvgOptions& sampling) {
  aggregation::ServerOptimizerOptions so;
  so.kind = kind;
  so.learning_rate = o.server_lr.value_or(kind == ServerOptimizerKind::kAvgM ? 1.0 : 0.01);
  so.momentum = o.server_momentum.value_or(so.momentum);
  so.beta1 = o.beta1.value_or(so.beta1);
  so.beta2 = o.beta2.value_or(so.beta2);
  so.tau = o.tau.value_or(so.tau);
  TESSERA_ASSIGN_OR_RETURN(auto optimizer, aggregation::ServerOptimizer::Create(so));
  auto fedavg = [](const core::ModelWeights& global) -> std::unique_ptr<aggregation::Aggregator> {
    return std::make_unique<aggregation::FedAvgAggregator>(global);
  };
  return ComposedStrategy::Create(o.name, sampling, fedavg, std::move(optimizer));
}

// Refuses a rule that cannot aggregate the fewest results a round expects.
absl::Status CheckExpectedResults(const SamplingStrategy& strategy, const aggregation::RobustOptions& ro) {
  const int n = strategy.MinTargetResults();
  if (absl::Status s = aggregation::CheckRobustCount(ro, n); !s.ok()) {
    return absl::InvalidArgumentError(StrCat("--strategy ", strategy.name(), ": a round may expect only ", n,
                                             " results (--fraction of the fewest clients a round opens with), but ",
                                             s.message(), "; sample more clients or lower --byzantine",
                                             ro.rule == RobustRule::kMultiKrum ? " or --multi-krum-m" : ""));
  }
  if (ro.rule == RobustRule::kTrimmedMean && ro.trim_fraction > 0 && std::floor(ro.trim_fraction * n) < 1) {
    // Not impossible (rounds with more clients do trim), but a small round is a plain mean.
    core::Logger("coordinator")
        ->warn("--strategy trimmed-mean: --trim-fraction {} trims nothing from a round of {} results", ro.trim_fraction,
               n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Strategy>> MakeRobust(RobustRule rule, const StrategyOptions& o,
                                                     const FedAvgOptions& sampling) {
  aggregation::RobustOptions ro;
  ro.rule = rule;
  ro.trim_fraction = o.trim_fraction.value_or(ro.trim_fraction);
  ro.byzantine = o.byzantine.value_or(1);
  ro.multi_krum_m = o.multi_krum_m.value_or(0);
  if (o.multi_krum_m && *o.multi_krum_m < 1) {
    return absl::InvalidArgumentError(StrCat("--multi-krum-m must be at least 1, got ", *o.multi_krum_m));
  }
  if (absl::Status s = aggregation::ValidateRobustOptions(ro); !s.ok()) {
    return absl::InvalidArgumentError(StrCat("--strategy ", o.name, ": ", s.message()));
  }
  auto make = [ro](const core::ModelWeights& global) -> std::unique_ptr<aggregation::Aggregator> {
    // The options were validated above: Create cannot fail.
    return *aggregation::RobustAggregator::Create(global, ro);
  };
  TESSERA_ASSIGN_OR_RETURN(auto strategy, ComposedStrategy::Create(o.name, sampling, make, nullptr));
  TESSERA_RETURN_IF_ERROR(CheckExpectedResults(*strategy, ro));
  return strategy;
}

absl::StatusOr<std::unique_ptr<Strategy>> MakeNormBound(const StrategyOptions& o, const FedAvgOptions& sampling) {
  if (!o.norm_bound) return absl::InvalidArgumentError("--strategy norm-bound needs --norm-bound");
  const double bound = *o.norm_bound;
  if (!(bound > 0) || !std::isfinite(bound)) {
    return absl::InvalidArgumentError(StrCat("--norm-bound must be positive, got ", bound));
  }
  auto make = [bound](const core::ModelWeights& global) -> std::unique_ptr<aggregation::Aggregator> {
    // The bound was validated above: Create cannot fail.
    return *aggregation::NormBoundAggregator::Create(global, bound);
  };
  return ComposedStrategy::Create(o.name, sampling, make, nullptr);
}

}  // namespace

const std::vector<std::string>& StrategyNames() {
  static const auto* names = [] {
    auto* v = new std::vector<std::string>;
    for (const Spec& s : kSpecs) v->push_back(s.name);
    return v;
  }();
  return *names;
}

std::vector<std::pair<std::string, double>> SetParameters(const StrategyOptions& o) {
  std::vector<std::pair<std::string, double>> out;
  for (const Param& p : Params(o)) {
    if (p.value) out.emplace_back(p.key, *p.value);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyOptions& o, const FedAvgOptions& sampling,
                                                       bool secure_aggregation) {
  const Spec* spec = nullptr;
  for (const Spec& s : kSpecs) {
    if (o.name == s.name) spec = &s;
  }
  if (spec == nullptr) {
    std::string names;
    for (const Spec& s : kSpecs) names += StrCat(names.empty() ? "" : "|", s.name);
    return absl::InvalidArgumentError(StrCat("unknown --strategy '", o.name, "' (", names, ")"));
  }
  if (const unsigned extra = SetParams(o) & ~spec->params; extra != 0) {
    return absl::InvalidArgumentError(
        StrCat(FlagList(extra), " does not apply to --strategy ", o.name, " (it takes: ", FlagList(spec->params), ")"));
  }
  if (spec->name == std::string("fedavg")) {
    TESSERA_ASSIGN_OR_RETURN(auto fedavg, FedAvgStrategy::Create(sampling));
    return std::unique_ptr<Strategy>(std::move(fedavg));
  }
  if (auto kind = OptimizerKind(o.name)) return MakeServerOptimizer(*kind, o, sampling);
  if (secure_aggregation) {
    return absl::InvalidArgumentError(StrCat("--strategy ", o.name,
                                             " needs each client's update, but --secure-aggregation reveals "
                                             "only their "
                                             "sum (fedavg and the server optimizers compose with it)"));
  }
  if (auto rule = RobustKind(o.name)) return MakeRobust(*rule, o, sampling);
  return MakeNormBound(o, sampling);
}

}  // namespace tessera::coordinator
