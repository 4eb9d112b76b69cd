// Strategy (after Flower): configures a round (which clients, what they do) and turns the
// round's aggregate into the next global model.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aggregation/aggregator.h"
#include "aggregation/server_optimizer.h"
#include "core/federation.h"
#include "core/ids.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace tessera::coordinator {

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;

  // The clients to train in `round`, drawn from `available` (sorted) with `rng`.
  // Empty when too few are available.
  virtual std::vector<core::ClientId> SampleClients(const std::vector<core::ClientId>& available,
                                                    core::RoundNumber round, core::Rng& rng) = 0;
  // The least number of available clients a round needs to open.
  virtual int MinAvailableClients() const = 0;
  // How many valid results close a round early, out of `sampled` (over-selection: a strategy
  // samples more clients than it needs and stops waiting once enough have reported).
  virtual int TargetResults(int sampled) const { return sampled; }

  virtual core::TrainConfig ConfigureTrain(core::RoundNumber round) = 0;

  // A fresh streaming aggregator whose layout is the global model's.
  virtual std::unique_ptr<aggregation::Aggregator> MakeAggregator(const core::ModelWeights& global) = 0;

  // The next global model from the current one and the round's aggregate.
  virtual absl::StatusOr<core::ModelWeights> NextGlobalModel(const core::ModelWeights& global,
                                                             core::ModelWeights aggregate) = 0;
};

struct FedAvgOptions {
  double fraction = 0.1;       // of the available clients, sampled per round
  int min_fit_clients = 1;     // sample at least this many
  int min_available_clients = 1;
  // Over-selection (Bonawitz et al. 2019 select 130%): sample this factor more clients than the
  // target count max(min_fit, ceil(fraction * available)); the round closes once the target count
  // has reported. 1 = no over-selection.
  double over_selection = 1.0;
  core::TrainConfig train;
};

// FedAvg's sampling and round configuration, shared by the strategies below: sample
// max(min_fit, ceil(fraction * available)) clients (times the over-selection factor) and give
// each the same TrainConfig. Subclasses choose the aggregator and the server update.
class SamplingStrategy : public Strategy {
 public:
  std::vector<core::ClientId> SampleClients(const std::vector<core::ClientId>& available,
                                            core::RoundNumber round, core::Rng& rng) override;
  int MinAvailableClients() const override;
  int TargetResults(int sampled) const override;
  core::TrainConfig ConfigureTrain(core::RoundNumber round) override { return options_.train; }

  // The number of clients sampled from `available` ones (0 when too few are available).
  int SampleSize(int available) const;
  // The target result count of a round opened with the fewest clients available: a round may
  // close with fewer (at its deadline, with the quorum), never expecting fewer.
  int MinTargetResults() const { return TargetResults(SampleSize(MinAvailableClients())); }

 protected:
  explicit SamplingStrategy(FedAvgOptions options) : options_(std::move(options)) {}
  // INVALID_ARGUMENT for a fraction outside (0, 1] or non-positive counts.
  static absl::Status Validate(const FedAvgOptions& options);

  const FedAvgOptions options_;
};

// FedAvg (McMahan et al. 2017): average the sampled clients' weights weighted by num_examples;
// the average is the next global model.
class FedAvgStrategy final : public SamplingStrategy {
 public:
  // INVALID_ARGUMENT for a fraction outside (0, 1] or non-positive counts.
  static absl::StatusOr<std::unique_ptr<FedAvgStrategy>> Create(const FedAvgOptions& options);

  std::string name() const override { return "fedavg"; }
  std::unique_ptr<aggregation::Aggregator> MakeAggregator(const core::ModelWeights& global) override;
  absl::StatusOr<core::ModelWeights> NextGlobalModel(const core::ModelWeights& global,
                                                     core::ModelWeights aggregate) override {
    return aggregate;
  }

 private:
  using SamplingStrategy::SamplingStrategy;
};

// Makes a round's aggregator; must not fail (its parameters are checked before).
using AggregatorFactory = std::function<std::unique_ptr<aggregation::Aggregator>(const core::ModelWeights& global)>;

// FedAvg's sampling with another aggregation rule (e.g. a robust one, aggregation/robust.h) and
// optionally a server optimizer (aggregation/server_optimizer.h) that turns the aggregate into
// the next model; without one, the aggregate is the next model. coordinator/strategy_factory.h
// makes these by name.
class ComposedStrategy final : public SamplingStrategy {
 public:
  // INVALID_ARGUMENT as FedAvgStrategy::Create, or for an empty factory.
  static absl::StatusOr<std::unique_ptr<ComposedStrategy>> Create(
      std::string name, const FedAvgOptions& options, AggregatorFactory make_aggregator,
      std::unique_ptr<aggregation::ServerOptimizer> optimizer);

  std::string name() const override { return name_; }
  std::unique_ptr<aggregation::Aggregator> MakeAggregator(const core::ModelWeights& global) override {
    return make_aggregator_(global);
  }
  // The optimizer's step: its state moves only when the step succeeds.
  absl::StatusOr<core::ModelWeights> NextGlobalModel(const core::ModelWeights& global,
                                                     core::ModelWeights aggregate) override;

 private:
  ComposedStrategy(std::string name, FedAvgOptions options, AggregatorFactory make_aggregator,
                   std::unique_ptr<aggregation::ServerOptimizer> optimizer)
      : SamplingStrategy(std::move(options)),
        name_(std::move(name)),
        make_aggregator_(std::move(make_aggregator)),
        optimizer_(std::move(optimizer)) {}

  const std::string name_;
  const AggregatorFactory make_aggregator_;
  std::unique_ptr<aggregation::ServerOptimizer> optimizer_;  // may be null
};

}  // namespace tessera::coordinator
