#include "aggregation/fedavg.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::aggregation {
namespace {

using core::DType;
using core::ModelWeights;
using core::NamedTensor;
using ::testing::HasSubstr;

// A small model with several float tensors and an int64 buffer (like BatchNorm's
// num_batches_tracked), filled from `seed`; the int64 value is seed * 1000.
ModelWeights RandomModel(uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ModelWeights m;
  auto add_float = [&](const char* name, std::vector<int64_t> shape) {
    NamedTensor t(name, std::move(shape), DType::kFloat32);
    for (float& v : t.mutable_f32()) v = normal(gen);
    m.tensors.push_back(std::move(t));
  };
  add_float("conv1.weight", {8, 1, 5, 5});
  add_float("conv1.bias", {8});
  NamedTensor counter("bn.num_batches_tracked", {}, DType::kInt64);
  const int64_t value = static_cast<int64_t>(seed) * 1000;
  std::memcpy(counter.mutable_bytes().data(), &value, sizeof(value));
  m.tensors.push_back(std::move(counter));
  add_float("fc.weight", {10, 33});
  add_float("fc.bias", {10});
  return m;
}

int64_t Int64Value(const ModelWeights& m, const char* name) {
  int64_t v = 0;
  std::memcpy(&v, m.Find(name)->bytes().data(), sizeof(v));
  return v;
}

ModelWeights ReportOf(FedAvgAggregator&& agg) {
  auto report = std::move(agg).Report();
  EXPECT_TRUE(report.ok()) << report.status();
  return std::move(report).value_or(ModelWeights{});
}

double MaxDiff(const ModelWeights& a, const ModelWeights& b) {
  auto diff = core::MaxAbsDiff(a, b);
  EXPECT_TRUE(diff.ok()) << diff.status();
  return diff.value_or(std::numeric_limits<double>::infinity());
}

TEST(FedAvgTest, MatchesTheReferenceWeightedMean) {
  std::vector<ModelWeights> updates;
  for (uint64_t k = 1; k <= 7; ++k) updates.push_back(RandomModel(k));
  const std::vector<double> weights = {600, 1, 37.5, 1200, 3, 0.25, 90};

  FedAvgAggregator agg(updates[0]);
  std::vector<const ModelWeights*> pointers;
  for (size_t k = 0; k < updates.size(); ++k) {
    ASSERT_TRUE(agg.Accumulate({updates[k], weights[k]}).ok());
    pointers.push_back(&updates[k]);
  }
  EXPECT_TRUE(agg.CanReport());
  EXPECT_EQ(agg.num_updates(), 7);
  const ModelWeights result = ReportOf(std::move(agg));
  auto reference = ReferenceWeightedMean(pointers, weights);
  ASSERT_TRUE(reference.ok()) << reference.status();

  ASSERT_TRUE(result.CheckSameLayout(updates[0]).ok());
  EXPECT_LT(MaxDiff(result, *reference), 1e-5);
  // The integer buffer is the first update's, not an average.
  EXPECT_EQ(Int64Value(result, "bn.num_batches_tracked"), 1000);
  // Unequal weights matter: the unweighted mean is far from the result.
  auto unweighted = ReferenceWeightedMean(pointers, std::vector<double>(7, 1.0));
  ASSERT_TRUE(unweighted.ok());
  EXPECT_GT(MaxDiff(result, *unweighted), 0.1);
}

TEST(FedAvgTest, SingleUpdateIsReturnedUnchanged) {
  const ModelWeights update = RandomModel(3);
  FedAvgAggregator agg(update);
  ASSERT_TRUE(agg.Accumulate({update, 42.0}).ok());
  EXPECT_LT(MaxDiff(ReportOf(std::move(agg)), update), 1e-6);
}

TEST(FedAvgTest, WrongLayoutIsRejectedAndLeavesTheResultUnchanged) {
  const ModelWeights a = RandomModel(1);
  const ModelWeights b = RandomModel(2);

  ModelWeights renamed = RandomModel(5);
  renamed.tensors[1] = NamedTensor("conv1.bias_renamed", {8});
  ModelWeights reshaped = RandomModel(5);
  reshaped.tensors[3] = NamedTensor("fc.weight", {33, 10});
  ModelWeights retyped = RandomModel(5);
  retyped.tensors[1] = NamedTensor("conv1.bias", {8}, DType::kFloat64);
  ModelWeights missing = RandomModel(5);
  missing.tensors.pop_back();
  ModelWeights reordered = RandomModel(5);
  std::swap(reordered.tensors[0], reordered.tensors[1]);

  FedAvgAggregator agg(a);
  ASSERT_TRUE(agg.Accumulate({a, 2.0}).ok());
  for (const ModelWeights* wrong : {&renamed, &reshaped, &retyped, &missing, &reordered}) {
    absl::Status s = agg.Accumulate({*wrong, 1.0});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
  EXPECT_EQ(agg.num_updates(), 1);
  ASSERT_TRUE(agg.Accumulate({b, 3.0}).ok());

  auto reference = ReferenceWeightedMean({&a, &b}, {2.0, 3.0});
  ASSERT_TRUE(reference.ok());
  EXPECT_LT(MaxDiff(ReportOf(std::move(agg)), *reference), 1e-5);
}

TEST(FedAvgTest, RejectsNonPositiveAndNonFiniteWeights) {
  const ModelWeights a = RandomModel(1);
  const ModelWeights b = RandomModel(2);
  FedAvgAggregator agg(a);
  ASSERT_TRUE(agg.Accumulate({a, 1.0}).ok());
  for (double w : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity(),
                   -std::numeric_limits<double>::infinity()}) {
    absl::Status s = agg.Accumulate({b, w});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << w;
    EXPECT_THAT(s.message(), HasSubstr("weight"));
  }
  EXPECT_EQ(agg.num_updates(), 1);
  EXPECT_LT(MaxDiff(ReportOf(std::move(agg)), a), 1e-6);
}

TEST(FedAvgTest, MergedShardsEqualOneAggregatorOverAllUpdates) {
  std::vector<ModelWeights> updates;
  std::vector<double> weights;
  for (uint64_t k = 1; k <= 6; ++k) {
    updates.push_back(RandomModel(k * 17));
    weights.push_back(static_cast<double>(k * k));
  }
  FedAvgAggregator all(updates[0]);
  FedAvgAggregator first_half(updates[0]);
  FedAvgAggregator second_half(updates[0]);
  for (size_t k = 0; k < updates.size(); ++k) {
    ASSERT_TRUE(all.Accumulate({updates[k], weights[k]}).ok());
    ASSERT_TRUE((k < 3 ? first_half : second_half).Accumulate({updates[k], weights[k]}).ok());
  }
  ASSERT_TRUE(first_half.MergeWith(std::move(second_half)).ok());
  EXPECT_EQ(first_half.num_updates(), 6);
  const ModelWeights merged = ReportOf(std::move(first_half));
  const ModelWeights single = ReportOf(std::move(all));
  EXPECT_LT(MaxDiff(merged, single), 1e-5);
  EXPECT_EQ(Int64Value(merged, "bn.num_batches_tracked"), 17 * 1000);
}

TEST(FedAvgTest, MergeIntoAnEmptyAggregatorTakesTheOthersIntegerBuffers) {
  const ModelWeights a = RandomModel(4);
  FedAvgAggregator empty(a);
  FedAvgAggregator full(a);
  ASSERT_TRUE(full.Accumulate({a, 5.0}).ok());
  ASSERT_TRUE(empty.MergeWith(std::move(full)).ok());
  const ModelWeights result = ReportOf(std::move(empty));
  EXPECT_LT(MaxDiff(result, a), 1e-6);
  EXPECT_EQ(Int64Value(result, "bn.num_batches_tracked"), 4000);
}

TEST(FedAvgTest, MergeWithAnotherLayoutIsRejected) {
  const ModelWeights a = RandomModel(1);
  ModelWeights other = RandomModel(1);
  other.tensors.pop_back();
  FedAvgAggregator agg(a);
  FedAvgAggregator wrong(other);
  ASSERT_TRUE(agg.Accumulate({a, 1.0}).ok());
  ASSERT_TRUE(wrong.Accumulate({other, 1.0}).ok());
  EXPECT_EQ(agg.MergeWith(std::move(wrong)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.num_updates(), 1);
}

TEST(FedAvgTest, ReportWithNothingAccumulatedIsFailedPrecondition) {
  FedAvgAggregator agg(RandomModel(1));
  EXPECT_FALSE(agg.CanReport());
  EXPECT_EQ(std::move(agg).Report().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(WeightedAccumulateTest, MatchesAPlainLoopOnOddLengths) {
  // Lengths around vector widths exercise the kernel's tail handling.
  for (size_t n : {0u, 1u, 7u, 15u, 16u, 17u, 63u, 1000u}) {
    std::vector<float> acc(n), x(n), expected(n);
    for (size_t i = 0; i < n; ++i) {
      acc[i] = static_cast<float>(i) * 0.5f;
      x[i] = 1.0f - static_cast<float>(i);
      expected[i] = acc[i] + 0.25f * x[i];
    }
    WeightedAccumulate(acc, x, 0.25f);
    for (size_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(acc[i], expected[i]) << n << " " << i;
  }
}

}  // namespace
}  // namespace tessera::aggregation
