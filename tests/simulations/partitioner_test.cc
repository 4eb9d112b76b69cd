#include "simulations/partitioner.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::simulations {
namespace {

using client::Dataset;
using ::testing::HasSubstr;
using Parts = std::vector<std::vector<int64_t>>;

// `n` examples of `classes` balanced classes, interleaved (label = i % classes). Partitioning
// looks at labels only, so the features are left empty.
Dataset Labels(int64_t n, int classes) {
  Dataset data;
  data.example_shape = {1};
  data.num_classes = classes;
  data.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) data.labels[i] = i % classes;
  return data;
}

PartitionSpec Spec(const std::string& text) {
  auto spec = ParsePartitionSpec(text);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.value_or(PartitionSpec{});
}

Parts MustPartition(const Dataset& data, int num_clients, const std::string& spec, uint64_t seed) {
  auto parts = Partition(data, num_clients, Spec(spec), seed);
  EXPECT_TRUE(parts.ok()) << parts.status();
  return parts.value_or(Parts{});
}

// Every index of [0, n) appears in exactly one client, and each client's list is sorted.
void ExpectIsPartition(const Parts& parts, int64_t n) {
  std::vector<int> seen(static_cast<size_t>(n), 0);
  for (size_t c = 0; c < parts.size(); ++c) {
    EXPECT_TRUE(std::is_sorted(parts[c].begin(), parts[c].end())) << "client " << c;
    for (int64_t i : parts[c]) {
      ASSERT_GE(i, 0);
      ASSERT_LT(i, n);
      ++seen[i];
    }
  }
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "example " << i;
}

// Mean over clients of the total-variation distance between the client's label distribution
// and the dataset's: 0 for a perfectly IID split, 1 - 1/classes for one-label clients.
double MeanLabelSkew(const Dataset& data, const Parts& parts) {
  const int classes = data.num_classes;
  std::vector<double> global(classes, 0.0);
  for (int64_t label : data.labels) global[label] += 1.0 / data.size();
  double total = 0;
  for (const auto& part : parts) {
    std::vector<double> local(classes, 0.0);
    for (int64_t i : part) local[data.labels[i]] += 1.0 / part.size();
    double tv = 0;
    for (int c = 0; c < classes; ++c) tv += 0.5 * std::abs(local[c] - global[c]);
    total += tv;
  }
  return total / parts.size();
}

// Mean over clients of the fraction of the client's examples that carry its most frequent label.
double MeanTopLabelShare(const Dataset& data, const Parts& parts) {
  double total = 0;
  for (const auto& part : parts) {
    std::vector<int64_t> counts(data.num_classes, 0);
    for (int64_t i : part) ++counts[data.labels[i]];
    total += static_cast<double>(*std::max_element(counts.begin(), counts.end())) / part.size();
  }
  return total / parts.size();
}

int NumLabels(const Dataset& data, const std::vector<int64_t>& part) {
  std::set<int64_t> labels;
  for (int64_t i : part) labels.insert(data.labels[i]);
  return static_cast<int>(labels.size());
}

TEST(ParsePartitionSpecTest, ParsesTheThreeKinds) {
  auto iid = ParsePartitionSpec("iid");
  ASSERT_TRUE(iid.ok());
  EXPECT_EQ(iid->kind, PartitionSpec::kIid);

  auto shards = ParsePartitionSpec("shards:3");
  ASSERT_TRUE(shards.ok());
  EXPECT_EQ(shards->kind, PartitionSpec::kShards);
  EXPECT_EQ(shards->shards_per_client, 3);

  auto dirichlet = ParsePartitionSpec("dirichlet:0.05");
  ASSERT_TRUE(dirichlet.ok());
  EXPECT_EQ(dirichlet->kind, PartitionSpec::kDirichlet);
  EXPECT_EQ(dirichlet->alpha, 0.05);

  for (const char* text : {"iid", "shards:2", "dirichlet:0.5", "dirichlet:100", "dirichlet:0.1"}) {
    EXPECT_EQ(ToString(Spec(text)), text);
  }
}

TEST(ParsePartitionSpecTest, RejectsMalformedSpecs) {
  for (const char* text :
       {"", "IID", "iid:1", "shards", "shards:", "shards:0", "shards:-2", "shards:2x", "shards:1.5",
        "dirichlet", "dirichlet:", "dirichlet:0", "dirichlet:-1", "dirichlet:nan", "dirichlet:inf",
        "dirichlet:abc", "dirichlet:0.5 ", "zipf:1"}) {
    auto spec = ParsePartitionSpec(text);
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << "'" << text << "'";
    EXPECT_THAT(spec.status().message(), HasSubstr(std::string("'") + text + "'"));
    EXPECT_EQ(std::string(spec.status().message()).find('\n'), std::string::npos);
  }
}

TEST(PartitionTest, IidGivesMcMahansHundredClientsOfSixHundred) {
  const Dataset data = Labels(60000, 10);
  const Parts parts = MustPartition(data, 100, "iid", 1);
  ASSERT_EQ(parts.size(), 100u);
  for (const auto& part : parts) EXPECT_EQ(part.size(), 600u);
  ExpectIsPartition(parts, data.size());
  // 600 draws of 10 balanced classes: the expected skew is ~0.05.
  EXPECT_LT(MeanLabelSkew(data, parts), 0.1);
  for (const auto& part : parts) EXPECT_EQ(NumLabels(data, part), 10);
}

TEST(PartitionTest, IidSpreadsTheRemainder) {
  const Dataset data = Labels(1003, 10);
  const Parts parts = MustPartition(data, 10, "iid", 1);
  for (size_t c = 0; c < parts.size(); ++c) EXPECT_EQ(parts[c].size(), c < 3 ? 101u : 100u);
  ExpectIsPartition(parts, data.size());
}

TEST(PartitionTest, ShardsGiveEachClientTwoWholeShardsOfOneLabelEach) {
  const Dataset data = Labels(60000, 10);
  const Parts parts = MustPartition(data, 100, "shards:2", 7);
  ASSERT_EQ(parts.size(), 100u);
  ExpectIsPartition(parts, data.size());
  // Sorted stably by label, example i (label i % 10) sits at position (i % 10) * 6000 + i / 10;
  // shard s holds positions [300 s, 300 s + 300).
  for (size_t c = 0; c < parts.size(); ++c) {
    ASSERT_EQ(parts[c].size(), 600u);
    std::vector<int> per_shard(200, 0);
    for (int64_t i : parts[c]) ++per_shard[((i % 10) * 6000 + i / 10) / 300];
    int whole = 0;
    for (int n : per_shard) {
      EXPECT_TRUE(n == 0 || n == 300) << "client " << c << " holds part of a shard";
      whole += n == 300;
    }
    EXPECT_EQ(whole, 2) << "client " << c;
    EXPECT_LE(NumLabels(data, parts[c]), 2) << "client " << c;
  }
  EXPECT_GT(MeanLabelSkew(data, parts), 0.75);
}

TEST(PartitionTest, ShardsOfUnevenSizeDifferByAtMostOne) {
  const Dataset data = Labels(1001, 10);
  const Parts parts = MustPartition(data, 10, "shards:3", 3);
  ExpectIsPartition(parts, data.size());
  for (const auto& part : parts) {
    EXPECT_GE(part.size(), 99u);  // three shards of 33 or 34
    EXPECT_LE(part.size(), 102u);
  }
}

TEST(PartitionTest, DirichletSkewFollowsAlpha) {
  const Dataset data = Labels(60000, 10);
  const Parts skewed = MustPartition(data, 100, "dirichlet:0.1", 11);
  const Parts mild = MustPartition(data, 100, "dirichlet:1", 11);
  const Parts near_iid = MustPartition(data, 100, "dirichlet:1000", 11);
  for (const Parts* parts : {&skewed, &mild, &near_iid}) {
    ASSERT_EQ(parts->size(), 100u);
    ExpectIsPartition(*parts, data.size());
  }
  const double skew_small = MeanLabelSkew(data, skewed);
  const double skew_one = MeanLabelSkew(data, mild);
  const double skew_large = MeanLabelSkew(data, near_iid);
  // Dir(0.1) over 100 clients gives each class to a handful of clients: clients hold 1-3
  // labels. Dir(1000) is within a few percent of uniform proportions.
  EXPECT_GT(skew_small, 0.6);
  EXPECT_LT(skew_large, 0.1);
  EXPECT_GT(skew_small, skew_one);
  EXPECT_GT(skew_one, skew_large);
  // Under Dir(0.1) a client's most frequent label holds most of its data; under Dir(1000)
  // little more than a tenth.
  EXPECT_GT(MeanTopLabelShare(data, skewed), 0.5);
  EXPECT_LT(MeanTopLabelShare(data, near_iid), 0.2);
}

TEST(PartitionTest, DirichletGivesEveryClientAnExample) {
  // Tiny alpha and as many clients as half the examples: most draws leave clients empty.
  const Dataset data = Labels(1000, 10);
  for (const char* spec : {"dirichlet:0.01", "dirichlet:0.0001"}) {
    const Parts parts = MustPartition(data, 500, spec, 5);
    ASSERT_EQ(parts.size(), 500u);
    ExpectIsPartition(parts, data.size());
    for (const auto& part : parts) EXPECT_GE(part.size(), 1u) << spec;
  }
  // As many clients as examples: one each.
  const Parts one_each = MustPartition(data, 1000, "dirichlet:0.5", 5);
  for (const auto& part : one_each) EXPECT_EQ(part.size(), 1u);
}

TEST(PartitionTest, SameSeedSamePartitionOtherSeedAnother) {
  const Dataset data = Labels(5000, 10);
  for (const char* spec : {"iid", "shards:2", "dirichlet:0.5"}) {
    const Parts a = MustPartition(data, 20, spec, 42);
    const Parts b = MustPartition(data, 20, spec, 42);
    const Parts c = MustPartition(data, 20, spec, 43);
    EXPECT_EQ(a, b) << spec;
    EXPECT_NE(a, c) << spec;
  }
}

TEST(PartitionTest, RejectsImpossibleClientCounts) {
  const Dataset data = Labels(100, 10);
  for (int n : {0, -1, 101}) {
    auto parts = Partition(data, n, PartitionSpec{}, 1);
    EXPECT_EQ(parts.status().code(), absl::StatusCode::kInvalidArgument) << n;
  }
  // 60 clients x 2 shards = 120 shards of 100 examples: some would be empty.
  auto shards = Partition(data, 60, Spec("shards:2"), 1);
  EXPECT_EQ(shards.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shards.status().message(), HasSubstr("empty"));
  EXPECT_TRUE(Partition(data, 50, Spec("shards:2"), 1).ok());

  Dataset empty;
  EXPECT_EQ(Partition(empty, 1, PartitionSpec{}, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PartitionTest, RejectsInvalidSpecFieldsAndLabels) {
  const Dataset data = Labels(100, 10);
  PartitionSpec bad_shards;
  bad_shards.kind = PartitionSpec::kShards;
  bad_shards.shards_per_client = 0;
  EXPECT_EQ(Partition(data, 10, bad_shards, 1).status().code(), absl::StatusCode::kInvalidArgument);
  PartitionSpec bad_alpha;
  bad_alpha.kind = PartitionSpec::kDirichlet;
  bad_alpha.alpha = -1;
  EXPECT_EQ(Partition(data, 10, bad_alpha, 1).status().code(), absl::StatusCode::kInvalidArgument);

  Dataset out_of_range = Labels(100, 10);
  out_of_range.labels[7] = 10;
  EXPECT_EQ(Partition(out_of_range, 10, Spec("dirichlet:0.5"), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SplitHeldOutTest, SplitsEachClientDisjointly) {
  const Dataset data = Labels(6000, 10);
  const Parts parts = MustPartition(data, 10, "dirichlet:0.5", 2);
  const auto splits = SplitHeldOut(parts, 0.2, 9);
  ASSERT_EQ(splits.size(), parts.size());
  for (size_t c = 0; c < parts.size(); ++c) {
    const auto& s = splits[c];
    const size_t n = parts[c].size();
    EXPECT_EQ(s.test.size(), static_cast<size_t>(std::llround(0.2 * n))) << "client " << c;
    EXPECT_EQ(s.train.size() + s.test.size(), n);
    EXPECT_TRUE(std::is_sorted(s.train.begin(), s.train.end()));
    EXPECT_TRUE(std::is_sorted(s.test.begin(), s.test.end()));
    std::vector<int64_t> both;
    std::set_union(s.train.begin(), s.train.end(), s.test.begin(), s.test.end(),
                   std::back_inserter(both));
    EXPECT_EQ(both, parts[c]) << "train and test must be disjoint and cover the client";
  }
  // Deterministic under the seed; another seed holds out other examples.
  const auto again = SplitHeldOut(parts, 0.2, 9);
  const auto other = SplitHeldOut(parts, 0.2, 10);
  for (size_t c = 0; c < parts.size(); ++c) {
    EXPECT_EQ(splits[c].test, again[c].test);
    EXPECT_EQ(splits[c].train, again[c].train);
  }
  EXPECT_NE(splits[0].test, other[0].test);
}

TEST(SplitHeldOutTest, KeepsATrainingExample) {
  const Parts parts = {{}, {4}, {1, 2}, {3, 5, 6, 7}};
  const auto all_test = SplitHeldOut(parts, 1.0, 1);
  EXPECT_TRUE(all_test[0].train.empty());
  EXPECT_TRUE(all_test[0].test.empty());
  EXPECT_EQ(all_test[1].train, std::vector<int64_t>{4});
  EXPECT_TRUE(all_test[1].test.empty());
  EXPECT_EQ(all_test[2].train.size(), 1u);
  EXPECT_EQ(all_test[3].train.size(), 1u);
  EXPECT_EQ(all_test[3].test.size(), 3u);

  const auto none = SplitHeldOut(parts, 0.0, 1);
  for (size_t c = 0; c < parts.size(); ++c) {
    EXPECT_EQ(none[c].train, parts[c]);
    EXPECT_TRUE(none[c].test.empty());
  }
  const auto nan = SplitHeldOut(parts, std::nan(""), 1);
  EXPECT_EQ(nan[3].train, parts[3]);
}

}  // namespace
}  // namespace tessera::simulations
