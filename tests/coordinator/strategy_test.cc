#include "coordinator/strategy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"

namespace tessera::coordinator {
namespace {

using core::ClientId;
using ::testing::FloatNear;
using ::testing::Pointwise;

std::vector<ClientId> Available(int n) {
  std::vector<ClientId> ids;
  for (int i = 0; i < n; ++i) ids.push_back(ClientId{core::StrCat("client-", 1000 + i)});
  return ids;  // sorted, as ClientRegistry::Available returns them
}

std::unique_ptr<FedAvgStrategy> Make(double fraction, int min_fit = 1, int min_available = 1) {
  FedAvgOptions o;
  o.fraction = fraction;
  o.min_fit_clients = min_fit;
  o.min_available_clients = min_available;
  return FedAvgStrategy::Create(o).value();
}

// Distinct members of `available`.
void ExpectValidSample(const std::vector<ClientId>& sample, const std::vector<ClientId>& available) {
  std::set<ClientId> distinct(sample.begin(), sample.end());
  EXPECT_EQ(distinct.size(), sample.size()) << "a client was sampled twice";
  for (const ClientId& id : sample) {
    EXPECT_TRUE(std::binary_search(available.begin(), available.end(), id)) << id << " is not available";
  }
}

TEST(FedAvgStrategyTest, CreateRefusesBadFractions) {
  for (double f : {0.0, -0.1, 1.5, 1.0000001, std::numeric_limits<double>::quiet_NaN(),
                   std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE(f);
    FedAvgOptions o;
    o.fraction = f;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
  }
  FedAvgOptions ok;
  ok.fraction = 1.0;
  EXPECT_OK(FedAvgStrategy::Create(ok));
  ok.fraction = 1e-6;
  EXPECT_OK(FedAvgStrategy::Create(ok));
}

TEST(FedAvgStrategyTest, CreateRefusesNonPositiveCounts) {
  for (int bad : {0, -1, -100}) {
    SCOPED_TRACE(bad);
    FedAvgOptions o;
    o.min_fit_clients = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
    o = FedAvgOptions{};
    o.min_available_clients = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
    o = FedAvgOptions{};
    o.train.local_epochs = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
    o = FedAvgOptions{};
    o.train.batch_size = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
    o = FedAvgOptions{};
    o.train.learning_rate = bad;
    EXPECT_CODE(FedAvgStrategy::Create(o), absl::StatusCode::kInvalidArgument);
  }
  FedAvgOptions nan_lr;
  nan_lr.train.learning_rate = std::numeric_limits<double>::quiet_NaN();
  EXPECT_CODE(FedAvgStrategy::Create(nan_lr), absl::StatusCode::kInvalidArgument);
}

TEST(FedAvgStrategyTest, SamplesCeilOfFractionOfTheAvailableClients) {
  struct Case {
    double fraction;
    int n;
    size_t want;
  };
  for (const Case& c : {Case{0.1, 100, 10}, Case{0.1, 95, 10}, Case{0.1, 91, 10}, Case{0.1, 90, 9},
                        Case{0.3, 10, 3}, Case{0.25, 10, 3}, Case{0.5, 3, 2}, Case{1.0, 7, 7},
                        Case{0.01, 5, 1}}) {
    SCOPED_TRACE(core::StrCat("fraction ", c.fraction, " of ", c.n));
    auto s = Make(c.fraction);
    core::Rng rng(42);
    const auto available = Available(c.n);
    const auto sample = s->SampleClients(available, 1, rng);
    EXPECT_EQ(sample.size(), c.want);
    ExpectValidSample(sample, available);
  }
}

TEST(FedAvgStrategyTest, MinFitClientsIsRespected) {
  auto s = Make(0.1, /*min_fit=*/5, /*min_available=*/1);
  EXPECT_EQ(s->MinAvailableClients(), 5);
  core::Rng rng(1);
  const auto available = Available(20);
  const auto sample = s->SampleClients(available, 1, rng);
  EXPECT_EQ(sample.size(), 5u);  // ceil(0.1 * 20) = 2 < 5
  ExpectValidSample(sample, available);
  // Fewer available than min_fit: no round.
  EXPECT_TRUE(s->SampleClients(Available(4), 1, rng).empty());
  EXPECT_EQ(s->SampleClients(Available(5), 1, rng).size(), 5u);
}

TEST(FedAvgStrategyTest, MinAvailableClientsIsRespected) {
  auto s = Make(0.5, /*min_fit=*/1, /*min_available=*/10);
  EXPECT_EQ(s->MinAvailableClients(), 10);
  core::Rng rng(1);
  EXPECT_TRUE(s->SampleClients(Available(9), 1, rng).empty());
  EXPECT_TRUE(s->SampleClients({}, 1, rng).empty());
  EXPECT_EQ(s->SampleClients(Available(10), 1, rng).size(), 5u);
}

TEST(FedAvgStrategyTest, SamplesAreDistinctFromTheAvailableSetAndCoverIt) {
  auto s = Make(0.1);
  const auto available = Available(100);
  std::set<ClientId> seen;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    core::Rng rng(seed);
    const auto sample = s->SampleClients(available, 1, rng);
    ASSERT_EQ(sample.size(), 10u);
    ExpectValidSample(sample, available);
    seen.insert(sample.begin(), sample.end());
  }
  // 2000 draws of 10 out of 100: a uniform sampler reaches every client.
  EXPECT_EQ(seen.size(), 100u);
}

TEST(FedAvgStrategyTest, SamplingIsDeterministicForAGivenRngState) {
  auto s = Make(0.3);
  const auto available = Available(30);
  core::Rng a(7, {1, 2});
  core::Rng b(7, {1, 2});
  EXPECT_EQ(s->SampleClients(available, 1, a), s->SampleClients(available, 1, b));
  core::Rng c(8, {1, 2});
  core::Rng d(7, {1, 2});
  EXPECT_NE(s->SampleClients(available, 1, c), s->SampleClients(available, 1, d));
}

TEST(FedAvgStrategyTest, FullFractionSamplesEveryone) {
  auto s = Make(1.0);
  const auto available = Available(12);
  core::Rng rng(3);
  auto sample = s->SampleClients(available, 1, rng);
  std::sort(sample.begin(), sample.end());
  EXPECT_EQ(sample, available);
}

TEST(FedAvgStrategyTest, ConfigureTrainAndNextModel) {
  FedAvgOptions o;
  o.fraction = 0.5;
  o.train = {3, 16, 0.2, 77};
  auto s = FedAvgStrategy::Create(o).value();
  EXPECT_EQ(s->name(), "fedavg");
  const core::TrainConfig c = s->ConfigureTrain(4);
  EXPECT_EQ(c.local_epochs, 3);
  EXPECT_EQ(c.batch_size, 16);
  EXPECT_EQ(c.learning_rate, 0.2);
  EXPECT_EQ(c.seed, 77u);

  // The aggregator averages by weight, and the average is the next model.
  const core::ModelWeights global = testutil::FloatModel({0, 0});
  auto agg = s->MakeAggregator(global);
  const core::ModelWeights u1 = testutil::FloatModel({1, 2});
  const core::ModelWeights u2 = testutil::FloatModel({4, 8});
  ASSERT_OK(agg->Accumulate({u1, 2.0}));
  ASSERT_OK(agg->Accumulate({u2, 1.0}));
  ASSERT_OK_AND_ASSIGN(core::ModelWeights avg, std::move(*agg).Report());
  ASSERT_OK_AND_ASSIGN(core::ModelWeights next, s->NextGlobalModel(global, avg));
  EXPECT_THAT(testutil::Values(next), Pointwise(FloatNear(1e-6f), std::vector<float>{2, 4}));
}

}  // namespace
}  // namespace tessera::coordinator
