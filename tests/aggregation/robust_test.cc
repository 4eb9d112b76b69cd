#include "aggregation/robust.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "aggregation/fedavg.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"

namespace tessera::aggregation {
namespace {

using core::DType;
using core::ModelWeights;
using core::NamedTensor;
using ::testing::HasSubstr;

// Two float tensors and an int64 buffer (value `seed`), floats center + spread * N(0, 1).
ModelWeights Model(uint64_t seed, float center = 0.0f, float spread = 1.0f) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ModelWeights m;
  for (auto [name, shape] : {std::pair<const char*, std::vector<int64_t>>{"fc.weight", {7, 45}}, {"fc.bias", {7}}}) {
    NamedTensor t(name, shape, DType::kFloat32);
    for (float& v : t.mutable_f32()) v = center + spread * normal(gen);
    m.tensors.push_back(std::move(t));
    if (m.tensors.size() == 1) {
      NamedTensor counter("bn.num_batches_tracked", {}, DType::kInt64);
      const int64_t value = static_cast<int64_t>(seed);
      std::memcpy(counter.mutable_bytes().data(), &value, sizeof(value));
      m.tensors.push_back(std::move(counter));
    }
  }
  return m;
}

std::vector<ModelWeights> Models(int n, uint64_t first_seed) {
  std::vector<ModelWeights> out;
  for (int k = 0; k < n; ++k) out.push_back(Model(first_seed + k));
  return out;
}

// The float coordinates of `m`, in order, as doubles.
std::vector<double> Flat(const ModelWeights& m) {
  std::vector<double> out;
  for (const auto& t : m.tensors) {
    if (t.dtype() == DType::kFloat32) out.insert(out.end(), t.f32().begin(), t.f32().end());
  }
  return out;
}

int64_t Counter(const ModelWeights& m) {
  int64_t v = 0;
  std::memcpy(&v, m.Find("bn.num_batches_tracked")->bytes().data(), sizeof(v));
  return v;
}

// Feeds `models` (weights 1, 2, 3, ...) to a fresh aggregator of `options` and reports.
absl::StatusOr<ModelWeights> Aggregate(const RobustOptions& options, const std::vector<ModelWeights>& models) {
  auto agg = RobustAggregator::Create(models[0], options);
  if (!agg.ok()) return agg.status();
  for (size_t k = 0; k < models.size(); ++k) {
    if (absl::Status s = (*agg)->Accumulate({models[k], static_cast<double>(k + 1)}); !s.ok()) return s;
  }
  return std::move(**agg).Report();
}

void ExpectNear(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  EXPECT_LE(worst, tol);
}

// ------------------------------------------------------------------ plain references

// Each coordinate's values across `models`, sorted.
std::vector<double> Column(const std::vector<std::vector<double>>& rows, size_t j) {
  std::vector<double> c;
  for (const auto& r : rows) c.push_back(r[j]);
  std::sort(c.begin(), c.end());
  return c;
}

std::vector<std::vector<double>> FlatAll(const std::vector<ModelWeights>& models) {
  std::vector<std::vector<double>> rows;
  for (const auto& m : models) rows.push_back(Flat(m));
  return rows;
}

std::vector<double> RefMedian(const std::vector<std::vector<double>>& rows) {
  std::vector<double> out;
  for (size_t j = 0; j < rows[0].size(); ++j) {
    std::vector<double> c = Column(rows, j);
    const size_t n = c.size();
    out.push_back(n % 2 == 1 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2);
  }
  return out;
}

std::vector<double> RefTrimmedMean(const std::vector<std::vector<double>>& rows, double beta) {
  const size_t k = static_cast<size_t>(std::floor(beta * rows.size()));
  std::vector<double> out;
  for (size_t j = 0; j < rows[0].size(); ++j) {
    std::vector<double> c = Column(rows, j);
    double s = 0;
    for (size_t i = k; i < c.size() - k; ++i) s += c[i];
    out.push_back(s / (c.size() - 2 * k));
  }
  return out;
}

double SquaredDistance(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t j = 0; j < a.size(); ++j) s += (a[j] - b[j]) * (a[j] - b[j]);
  return s;
}

// Krum scores of the rows at `candidates`: the sum of the |candidates| - f - 2 smallest squared
// distances to the other candidates. Returns (score, index) sorted best first.
std::vector<std::pair<double, int>> RefKrumScores(const std::vector<std::vector<double>>& rows,
                                                  const std::vector<int>& candidates, int f) {
  std::vector<std::pair<double, int>> scores;
  const int neighbours = std::max(0, static_cast<int>(candidates.size()) - f - 2);
  for (int i : candidates) {
    std::vector<double> d;
    for (int j : candidates) {
      if (j != i) d.push_back(SquaredDistance(rows[i], rows[j]));
    }
    std::sort(d.begin(), d.end());
    double score = 0;
    for (int k = 0; k < neighbours; ++k) score += d[k];
    scores.emplace_back(score, i);
  }
  std::sort(scores.begin(), scores.end());
  return scores;
}

std::vector<double> RefMultiKrum(const std::vector<std::vector<double>>& rows, int f, int m) {
  std::vector<int> all(rows.size());
  std::iota(all.begin(), all.end(), 0);
  auto scores = RefKrumScores(rows, all, f);
  std::vector<double> out(rows[0].size(), 0.0);
  for (int k = 0; k < m; ++k) {
    for (size_t j = 0; j < out.size(); ++j) out[j] += rows[scores[k].second][j] / m;
  }
  return out;
}

std::vector<double> RefBulyan(const std::vector<std::vector<double>>& rows, int f) {
  const int n = static_cast<int>(rows.size());
  const int theta = n - 2 * f;
  const int beta = theta - 2 * f;
  std::vector<int> remaining(n);
  std::iota(remaining.begin(), remaining.end(), 0);
  std::vector<std::vector<double>> picked;
  for (int k = 0; k < theta; ++k) {
    const int best = RefKrumScores(rows, remaining, f)[0].second;
    picked.push_back(rows[best]);
    remaining.erase(std::find(remaining.begin(), remaining.end(), best));
  }
  const std::vector<double> median = RefMedian(picked);
  std::vector<double> out;
  for (size_t j = 0; j < rows[0].size(); ++j) {
    std::vector<double> c = Column(picked, j);
    std::sort(c.begin(), c.end(),
              [&](double a, double b) { return std::abs(a - median[j]) < std::abs(b - median[j]); });
    double s = 0;
    for (int k = 0; k < beta; ++k) s += c[k];
    out.push_back(s / beta);
  }
  return out;
}

// ------------------------------------------------------------------ each rule against its
// reference

TEST(RobustAggregatorTest, MedianMatchesReferenceForOddAndEvenCounts) {
  for (int n : {7, 8}) {
    SCOPED_TRACE(n);
    auto models = Models(n, 100);
    ASSERT_OK_AND_ASSIGN(ModelWeights got, Aggregate({RobustRule::kMedian}, models));
    ExpectNear(Flat(got), RefMedian(FlatAll(models)), 1e-6);
    EXPECT_EQ(Counter(got), 100) << "non-float tensors come from the first update";
  }
}

TEST(RobustAggregatorTest, TrimmedMeanMatchesReference) {
  auto models = Models(10, 200);
  RobustOptions o{RobustRule::kTrimmedMean};
  o.trim_fraction = 0.25;  // floor(2.5) = 2 dropped at each end
  ASSERT_OK_AND_ASSIGN(ModelWeights got, Aggregate(o, models));
  ExpectNear(Flat(got), RefTrimmedMean(FlatAll(models), 0.25), 1e-6);
}

TEST(RobustAggregatorTest, TrimmedMeanWithoutTrimmingIsTheUnweightedMean) {
  auto models = Models(5, 300);
  RobustOptions o{RobustRule::kTrimmedMean};
  o.trim_fraction = 0.1;  // floor(0.5) = 0: nothing dropped
  ASSERT_OK_AND_ASSIGN(ModelWeights got, Aggregate(o, models));
  std::vector<const ModelWeights*> ptrs;
  for (const auto& m : models) ptrs.push_back(&m);
  ASSERT_OK_AND_ASSIGN(ModelWeights mean, ReferenceWeightedMean(ptrs, std::vector<double>(5, 1.0)));
  ExpectNear(Flat(got), Flat(mean), 1e-6);
}

TEST(RobustAggregatorTest, KrumReturnsExactlyTheUpdateTheReferenceChooses) {
  auto models = Models(9, 400);
  RobustOptions o{RobustRule::kKrum};
  o.byzantine = 2;
  ASSERT_OK_AND_ASSIGN(ModelWeights got, Aggregate(o, models));
  std::vector<int> all(9);
  std::iota(all.begin(), all.end(), 0);
  const int chosen = RefKrumScores(FlatAll(models), all, 2)[0].second;
  EXPECT_EQ(Flat(got), Flat(models[chosen])) << "Krum chose another update than #" << chosen;
}

TEST(RobustAggregatorTest, MultiKrumMatchesReferenceWithDefaultAndExplicitM) {
  auto models = Models(9, 500);
  for (int m : {0, 3}) {
    SCOPED_TRACE(m);
    RobustOptions o{RobustRule::kMultiKrum};
    o.byzantine = 2;
    o.multi_krum_m = m;
    ASSERT_OK_AND_ASSIGN(ModelWeights got, Aggregate(o, models));
    ExpectNear(Flat(got), RefMultiKrum(FlatAll(models), 2, m == 0 ? 9 - 2 : m), 1e-6);
  }
}

TEST(RobustAggregatorTest, BulyanMatchesReference) {
  for (int f : {1, 2}) {
    SCOPED_TRACE(f);
    auto models = Models(4 * f + 4, 600 + f);
    RobustOptions o{RobustRule::kBulyan};
    o.byzantine = f;
    ASSERT_OK_AND_ASSIGN(ModelWeights got, Aggregate(o, models));
    ExpectNear(Flat(got), RefBulyan(FlatAll(models), f), 1e-6);
  }
}

TEST(RobustAggregatorTest, WeightsAreIgnored) {
  auto models = Models(6, 700);
  for (RobustRule rule : {RobustRule::kMedian, RobustRule::kTrimmedMean, RobustRule::kMultiKrum}) {
    SCOPED_TRACE(RobustRuleName(rule));
    RobustOptions o{rule};
    o.trim_fraction = 0.2;
    o.byzantine = 1;
    auto equal = RobustAggregator::Create(models[0], o).value();
    auto skewed = RobustAggregator::Create(models[0], o).value();
    for (size_t k = 0; k < models.size(); ++k) {
      ASSERT_OK(equal->Accumulate({models[k], 1.0}));
      ASSERT_OK(skewed->Accumulate({models[k], k == 0 ? 1e6 : 1.0}));
    }
    EXPECT_EQ(Flat(std::move(*equal).Report().value()), Flat(std::move(*skewed).Report().value()));
  }
}

TEST(RobustAggregatorTest, MergedShardsGiveTheSameResultAsOne) {
  auto models = Models(7, 800);
  RobustOptions o{RobustRule::kKrum};
  o.byzantine = 2;
  auto a = RobustAggregator::Create(models[0], o).value();
  auto b = RobustAggregator::Create(models[0], o).value();
  for (size_t k = 0; k < models.size(); ++k) ASSERT_OK((k < 3 ? a : b)->Accumulate({models[k], 1.0}));
  ASSERT_OK(a->MergeWith(std::move(*b)));
  EXPECT_EQ(a->num_updates(), 7);
  EXPECT_EQ(b->num_updates(), 0);
  ASSERT_OK_AND_ASSIGN(ModelWeights merged, std::move(*a).Report());
  ASSERT_OK_AND_ASSIGN(ModelWeights whole, Aggregate(o, models));
  EXPECT_EQ(Flat(merged), Flat(whole));

  auto median = RobustAggregator::Create(models[0], {RobustRule::kMedian}).value();
  EXPECT_CODE(median->MergeWith(std::move(*RobustAggregator::Create(models[0], o).value())),
              absl::StatusCode::kInvalidArgument);
}

TEST(RobustAggregatorTest, PairwiseDistancesMatchPlainLoops) {
  // Long rows, so that the blocked kernel crosses several blocks.
  std::mt19937_64 gen(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> rows(5, std::vector<float>(20011));
  for (auto& r : rows) {
    for (float& v : r) v = normal(gen);
  }
  const std::vector<double> dist = PairwiseSquaredDistances(rows);
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 5; ++j) {
      double want = 0;
      for (size_t k = 0; k < rows[i].size(); ++k)
        want += (double(rows[i][k]) - rows[j][k]) * (double(rows[i][k]) - rows[j][k]);
      EXPECT_NEAR(dist[i * 5 + j], want, 1e-5 * want + 1e-9) << i << ", " << j;
    }
  }
}

// ------------------------------------------------------------------ norm bounding

TEST(NormBoundAggregatorTest, MatchesTheWeightedMeanOfClippedDeltas) {
  const ModelWeights global = Model(900, 0.0f, 0.01f);
  std::vector<ModelWeights> models;
  for (int k = 0; k < 5; ++k) models.push_back(Model(910 + k, 0.0f, k < 2 ? 0.01f : 1.0f));  // 2 within the bound
  const double bound = 3.0;
  const std::vector<double> weights = {1, 3, 2, 5, 4};
  auto agg = NormBoundAggregator::Create(global, bound).value();
  for (int k = 0; k < 5; ++k) ASSERT_OK(agg->Accumulate({models[k], weights[k]}));
  ASSERT_OK_AND_ASSIGN(ModelWeights got, std::move(*agg).Report());

  const std::vector<double> g = Flat(global);
  std::vector<double> want = g;
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  int clipped = 0;
  for (int k = 0; k < 5; ++k) {
    const std::vector<double> u = Flat(models[k]);
    const double norm = std::sqrt(SquaredDistance(u, g));
    const double scale = std::min(1.0, bound / norm);
    clipped += scale < 1.0;
    for (size_t j = 0; j < g.size(); ++j) want[j] += weights[k] * scale * (u[j] - g[j]) / total;
  }
  EXPECT_EQ(clipped, 3) << "the test should clip some updates and not others";
  ExpectNear(Flat(got), want, 1e-5);
  EXPECT_EQ(Counter(got), 910);
}

TEST(NormBoundAggregatorTest, RefusesNonPositiveOrInfiniteBounds) {
  for (double bound : {0.0, -1.0, std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    SCOPED_TRACE(bound);
    EXPECT_CODE(NormBoundAggregator::Create(Model(1), bound), absl::StatusCode::kInvalidArgument);
  }
}

// ------------------------------------------------------------------ refusals

TEST(RobustAggregatorTest, RefusesImpossibleParameters) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (double beta : {-0.1, 0.5, 0.7, nan}) {
    SCOPED_TRACE(beta);
    RobustOptions o{RobustRule::kTrimmedMean};
    o.trim_fraction = beta;
    EXPECT_CODE(RobustAggregator::Create(Model(1), o), absl::StatusCode::kInvalidArgument);
  }
  RobustOptions negative_f{RobustRule::kKrum};
  negative_f.byzantine = -1;
  EXPECT_CODE(RobustAggregator::Create(Model(1), negative_f), absl::StatusCode::kInvalidArgument);
  RobustOptions negative_m{RobustRule::kMultiKrum};
  negative_m.multi_krum_m = -2;
  EXPECT_CODE(RobustAggregator::Create(Model(1), negative_m), absl::StatusCode::kInvalidArgument);
}

TEST(RobustAggregatorTest, CountChecksFollowThePapersBounds) {
  for (int f : {0, 1, 3}) {
    SCOPED_TRACE(f);
    RobustOptions krum{RobustRule::kKrum};
    krum.byzantine = f;
    EXPECT_CODE(CheckRobustCount(krum, 2 * f + 2), absl::StatusCode::kInvalidArgument);
    EXPECT_OK(CheckRobustCount(krum, 2 * f + 3));
    RobustOptions bulyan{RobustRule::kBulyan};
    bulyan.byzantine = f;
    EXPECT_CODE(CheckRobustCount(bulyan, 4 * f + 2), absl::StatusCode::kInvalidArgument);
    EXPECT_OK(CheckRobustCount(bulyan, 4 * f + 3));
  }
  RobustOptions multi{RobustRule::kMultiKrum};
  multi.byzantine = 1;
  multi.multi_krum_m = 6;
  EXPECT_CODE(CheckRobustCount(multi, 5),
              absl::StatusCode::kInvalidArgument);  // m > n
  EXPECT_OK(CheckRobustCount(multi, 6));
  EXPECT_THAT(CheckRobustCount({RobustRule::kBulyan, 0.1, 2}, 10).message(), HasSubstr("4f + 3 = 11"));
}

TEST(RobustAggregatorTest, ReportWithTooFewUpdatesIsFailedPrecondition) {
  RobustOptions o{RobustRule::kKrum};
  o.byzantine = 1;
  auto agg = RobustAggregator::Create(Model(1), o).value();
  for (int k = 0; k < 4; ++k) ASSERT_OK(agg->Accumulate({Model(10 + k), 1.0}));
  EXPECT_FALSE(agg->CanReport());
  auto report = std::move(*agg).Report();
  EXPECT_CODE(report, absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(report.status().message(), HasSubstr("got 4"));

  auto empty = RobustAggregator::Create(Model(1), {RobustRule::kMedian}).value();
  EXPECT_CODE(std::move(*empty).Report(), absl::StatusCode::kFailedPrecondition);
}

TEST(RobustAggregatorTest, RefusesUpdatesOfAnotherLayoutOrBadWeight) {
  auto agg = RobustAggregator::Create(Model(1), {RobustRule::kMedian}).value();
  ModelWeights other = Model(2);
  other.tensors.pop_back();
  EXPECT_CODE(agg->Accumulate({other, 1.0}), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(agg->Accumulate({Model(2), 0.0}), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(agg->Accumulate({Model(2), std::numeric_limits<double>::infinity()}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg->num_updates(), 0);
}

// ------------------------------------------------------------------ a Byzantine client

TEST(RobustAggregatorTest, OneByzantineUpdateBreaksTheMeanButNotTheRobustRules) {
  // 8 honest clients agree on ~1.0 per coordinate; one sends 1e6 everywhere.
  std::vector<ModelWeights> models;
  for (int k = 0; k < 8; ++k) models.push_back(Model(1000 + k, 1.0f, 0.005f));
  models.push_back(Model(2000, 1e6f, 0.0f));
  const ModelWeights global = Model(3000, 1.0f, 0.0f);

  auto max_error = [](const ModelWeights& m) {
    double worst = 0;
    for (double v : Flat(m)) worst = std::max(worst, std::abs(v - 1.0));
    return worst;
  };
  FedAvgAggregator mean(global);
  for (const auto& m : models) ASSERT_OK(mean.Accumulate({m, 1.0}));
  EXPECT_GT(max_error(std::move(mean).Report().value()), 1e4);

  for (RobustRule rule : {RobustRule::kMedian, RobustRule::kTrimmedMean, RobustRule::kKrum, RobustRule::kMultiKrum,
                          RobustRule::kBulyan}) {
    SCOPED_TRACE(RobustRuleName(rule));
    RobustOptions o{rule};
    o.trim_fraction = 0.2;
    o.byzantine = 1;
    ASSERT_OK_AND_ASSIGN(ModelWeights got, Aggregate(o, models));
    EXPECT_LT(max_error(got), 0.05);
  }
  auto bounded = NormBoundAggregator::Create(global, 1.0).value();
  for (const auto& m : models) ASSERT_OK(bounded->Accumulate({m, 1.0}));
  EXPECT_LT(max_error(std::move(*bounded).Report().value()),
            0.2);  // moved by at most bound / n
}

}  // namespace
}  // namespace tessera::aggregation
