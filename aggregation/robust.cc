#include "aggregation/robust.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/status.h"
#include "core/strings.h"

namespace tessera::aggregation {
namespace {

using core::DType;
using core::ModelWeights;
using core::StrCat;
using Rows = std::vector<std::vector<float>>;

// Applies `reduce` to each coordinate's n values (in a scratch span it may reorder) and stores the
// result. Rows are copied a block at a time, so each row is read sequentially and the gathers come
// from cache.
template <typename Reduce>
std::vector<float> ForEachCoordinate(const std::vector<const float*>& rows, size_t d, Reduce reduce) {
  constexpr size_t kBlock = 256;
  const size_t n = rows.size();
  std::vector<float> out(d);
  std::vector<float> block(n * kBlock);
  std::vector<float> column(n);
  for (size_t j0 = 0; j0 < d; j0 += kBlock) {
    const size_t b = std::min(kBlock, d - j0);
    for (size_t k = 0; k < n; ++k) std::copy_n(rows[k] + j0, b, block.data() + k * kBlock);
    for (size_t jj = 0; jj < b; ++jj) {
      for (size_t k = 0; k < n; ++k) column[k] = block[k * kBlock + jj];
      out[j0 + jj] = reduce(std::span<float>(column));
    }
  }
  return out;
}

template <typename Reduce>
std::vector<float> ForEachCoordinate(const Rows& rows, Reduce reduce) {
  std::vector<const float*> pointers;
  for (const auto& r : rows) pointers.push_back(r.data());
  return ForEachCoordinate(pointers, rows[0].size(), reduce);
}

// The median of `v` (the mean of the two middle values for an even count); reorders `v`.
double MedianOf(std::span<float> v) {
  const size_t half = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + half, v.end());
  const double upper = v[half];
  if (v.size() % 2 == 1) return upper;
  const double lower = *std::max_element(v.begin(), v.begin() + half);
  return (lower + upper) / 2;
}

double MeanOf(std::span<const float> v) {
  double s = 0;
  for (float x : v) s += x;
  return s / static_cast<double>(v.size());
}

// The unweighted mean of the rows at `indices`, in double.
std::vector<float> MeanOfRows(const Rows& rows, const std::vector<int>& indices) {
  const size_t d = rows[0].size();
  std::vector<double> sum(d, 0.0);
  for (int i : indices) {
    const float* r = rows[i].data();
    for (size_t j = 0; j < d; ++j) sum[j] += r[j];
  }
  std::vector<float> out(d);
  for (size_t j = 0; j < d; ++j) out[j] = static_cast<float>(sum[j] / static_cast<double>(indices.size()));
  return out;
}

}  // namespace

std::string RobustRuleName(RobustRule rule) {
  switch (rule) {
    case RobustRule::kMedian:
      return "median";
    case RobustRule::kTrimmedMean:
      return "trimmed-mean";
    case RobustRule::kKrum:
      return "krum";
    case RobustRule::kMultiKrum:
      return "multi-krum";
    case RobustRule::kBulyan:
      return "bulyan";
  }
  return "unknown";
}

absl::Status ValidateRobustOptions(const RobustOptions& o) {
  if (!(o.trim_fraction >= 0 && o.trim_fraction < 0.5)) {
    return absl::InvalidArgumentError(StrCat("the trim fraction must be in [0, 0.5), got ", o.trim_fraction));
  }
  if (o.byzantine < 0) {
    return absl::InvalidArgumentError(StrCat("the Byzantine count f must be >= 0, got ", o.byzantine));
  }
  if (o.multi_krum_m < 0) {
    return absl::InvalidArgumentError(StrCat("Multi-Krum's m must be >= 1 (or 0 for n - f), got ", o.multi_krum_m));
  }
  return absl::OkStatus();
}

absl::Status CheckRobustCount(const RobustOptions& o, int n) {
  const std::string rule = RobustRuleName(o.rule);
  const int f = o.byzantine;
  if (n < 1) return absl::InvalidArgumentError(StrCat(rule, " needs at least 1 update, got ", n));
  switch (o.rule) {
    case RobustRule::kMedian:
    case RobustRule::kTrimmedMean:
      return absl::OkStatus();
    case RobustRule::kKrum:
    case RobustRule::kMultiKrum:
      if (n <= 2 * f + 2) {
        return absl::InvalidArgumentError(
            StrCat(rule, " with f = ", f, " needs more than 2f + 2 = ", 2 * f + 2, " updates, got ", n));
      }
      if (o.rule == RobustRule::kMultiKrum && o.multi_krum_m > n) {
        return absl::InvalidArgumentError(
            StrCat("multi-krum cannot average m = ", o.multi_krum_m, " of ", n, " updates"));
      }
      return absl::OkStatus();
    case RobustRule::kBulyan:
      if (n < 4 * f + 3) {
        return absl::InvalidArgumentError(
            StrCat(rule, " with f = ", f, " needs at least 4f + 3 = ", 4 * f + 3, " updates, got ", n));
      }
      return absl::OkStatus();
  }
  return absl::InternalError("unknown robust rule");
}

std::vector<float> CoordinateMedian(const Rows& rows) {
  return ForEachCoordinate(rows, [](std::span<float> v) { return static_cast<float>(MedianOf(v)); });
}

std::vector<float> TrimmedMean(const Rows& rows, double trim_fraction) {
  const size_t n = rows.size();
  const size_t k = static_cast<size_t>(std::floor(trim_fraction * static_cast<double>(n)));
  return ForEachCoordinate(rows, [n, k](std::span<float> v) {
    if (k > 0) {
      // [0, k) the k smallest, then [n - k, n) the k largest: the middle stays.
      std::nth_element(v.begin(), v.begin() + k, v.end());
      std::nth_element(v.begin() + k, v.begin() + (n - k), v.end());
    }
    return static_cast<float>(MeanOf(v.subspan(k, n - 2 * k)));
  });
}

std::vector<double> PairwiseSquaredDistances(const Rows& rows) {
  // Blocks of coordinates small enough that all n rows' blocks stay in L2 while every pair is
  // compared: each row is read from memory once, and the O(n^2 d) work runs from cache.
  const size_t n = rows.size();
  const size_t d = n == 0 ? 0 : rows[0].size();
  const size_t block = std::clamp<size_t>((256 << 10) / (sizeof(float) * std::max<size_t>(n, 1)), 64, 4096);
  std::vector<double> dist(n * n, 0.0);
  using Vec = Eigen::Map<const Eigen::VectorXf>;
  for (size_t j0 = 0; j0 < d; j0 += block) {
    const Eigen::Index b = static_cast<Eigen::Index>(std::min(block, d - j0));
    for (size_t i = 0; i < n; ++i) {
      Vec a(rows[i].data() + j0, b);
      for (size_t k = i + 1; k < n; ++k) {
        dist[i * n + k] += (a - Vec(rows[k].data() + j0, b)).squaredNorm();
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < i; ++k) dist[i * n + k] = dist[k * n + i];
  }
  return dist;
}

std::vector<int> KrumSelect(const std::vector<double>& distances, int n, const std::vector<int>& candidates,
                            int byzantine, int m) {
  const int c = static_cast<int>(candidates.size());
  const int neighbours = std::max(0, c - byzantine - 2);
  std::vector<std::pair<double, int>> scored;
  std::vector<double> to_others;
  for (int i : candidates) {
    to_others.clear();
    for (int j : candidates) {
      if (j != i) to_others.push_back(distances[static_cast<size_t>(i) * n + j]);
    }
    std::partial_sort(to_others.begin(), to_others.begin() + neighbours, to_others.end());
    scored.emplace_back(std::accumulate(to_others.begin(), to_others.begin() + neighbours, 0.0), i);
  }
  std::sort(scored.begin(), scored.end());  // by score, then by index
  std::vector<int> best;
  for (int k = 0; k < std::min(m, c); ++k) best.push_back(scored[k].second);
  return best;
}

std::vector<float> MultiKrum(const Rows& rows, int byzantine, int m) {
  const int n = static_cast<int>(rows.size());
  std::vector<int> all(n);
  std::iota(all.begin(), all.end(), 0);
  return MeanOfRows(rows, KrumSelect(PairwiseSquaredDistances(rows), n, all, byzantine, m));
}

std::vector<float> Bulyan(const Rows& rows, int byzantine) {
  const int n = static_cast<int>(rows.size());
  const int theta = n - 2 * byzantine;
  const int beta = theta - 2 * byzantine;
  const std::vector<double> dist = PairwiseSquaredDistances(rows);
  std::vector<int> remaining(n);
  std::iota(remaining.begin(), remaining.end(), 0);
  std::vector<const float*> picked;  // borrowed: no copy of the picked updates
  while (static_cast<int>(picked.size()) < theta) {
    const int best = KrumSelect(dist, n, remaining, byzantine, 1)[0];
    picked.push_back(rows[best].data());
    remaining.erase(std::find(remaining.begin(), remaining.end(), best));
  }
  return ForEachCoordinate(picked, rows[0].size(), [beta](std::span<float> v) {
    const double median = MedianOf(v);
    // The beta values closest to the median come first.
    std::nth_element(v.begin(), v.begin() + (beta - 1), v.end(),
                     [median](float a, float b) { return std::abs(a - median) < std::abs(b - median); });
    return static_cast<float>(MeanOf(v.first(beta)));
  });
}

// ---------------------------------------------------------------- RobustAggregator

absl::StatusOr<std::unique_ptr<RobustAggregator>> RobustAggregator::Create(const ModelWeights& layout,
                                                                           const RobustOptions& options) {
  TESSERA_RETURN_IF_ERROR(ValidateRobustOptions(options));
  return std::unique_ptr<RobustAggregator>(new RobustAggregator(layout, options));
}

RobustAggregator::RobustAggregator(const ModelWeights& layout, const RobustOptions& options) : options_(options) {
  for (const auto& t : layout.tensors) layout_.tensors.emplace_back(t.name(), t.shape(), t.dtype());
}

absl::Status RobustAggregator::Accumulate(const WeightedUpdate& update) {
  TESSERA_RETURN_IF_ERROR(CheckUpdate(update, layout_));
  std::vector<float> row;
  row.reserve(static_cast<size_t>(update.weights.num_elements()));
  for (size_t i = 0; i < layout_.tensors.size(); ++i) {
    const auto& u = update.weights.tensors[i];
    if (u.dtype() == DType::kFloat32) {
      row.insert(row.end(), u.f32().begin(), u.f32().end());
    } else if (rows_.empty()) {
      layout_.tensors[i] = u;
    }
  }
  rows_.push_back(std::move(row));
  return absl::OkStatus();
}

absl::Status RobustAggregator::MergeWith(Aggregator&& other) {
  auto* o = dynamic_cast<RobustAggregator*>(&other);
  if (o == nullptr || o->options_.rule != options_.rule) {
    return absl::InvalidArgumentError(StrCat("can only merge a ", RobustRuleName(options_.rule), " aggregator"));
  }
  TESSERA_RETURN_IF_ERROR(o->layout_.CheckSameLayout(layout_));
  if (rows_.empty()) layout_ = o->layout_;
  for (auto& row : o->rows_) rows_.push_back(std::move(row));
  o->rows_.clear();
  return absl::OkStatus();
}

absl::StatusOr<ModelWeights> RobustAggregator::Report() && {
  if (absl::Status s = CheckRobustCount(options_, static_cast<int>(rows_.size())); !s.ok()) {
    return absl::FailedPreconditionError(s.message());
  }
  std::vector<float> result;
  const int f = options_.byzantine;
  const int n = static_cast<int>(rows_.size());
  switch (options_.rule) {
    case RobustRule::kMedian:
      result = CoordinateMedian(rows_);
      break;
    case RobustRule::kTrimmedMean:
      result = TrimmedMean(rows_, options_.trim_fraction);
      break;
    case RobustRule::kKrum:
      result = MultiKrum(rows_, f, 1);
      break;
    case RobustRule::kMultiKrum:
      result = MultiKrum(rows_, f, options_.multi_krum_m > 0 ? options_.multi_krum_m : n - f);
      break;
    case RobustRule::kBulyan:
      result = Bulyan(rows_, f);
      break;
  }
  rows_.clear();
  size_t offset = 0;
  for (auto& t : layout_.tensors) {
    if (t.dtype() != DType::kFloat32) continue;
    auto out = t.mutable_f32();
    std::copy_n(result.begin() + offset, out.size(), out.begin());
    offset += out.size();
  }
  return std::move(layout_);
}

// ---------------------------------------------------------------- NormBoundAggregator

absl::StatusOr<std::unique_ptr<NormBoundAggregator>> NormBoundAggregator::Create(const ModelWeights& global,
                                                                                 double bound) {
  if (!(bound > 0) || !std::isfinite(bound)) {
    return absl::InvalidArgumentError(StrCat("the norm bound must be positive and finite, got ", bound));
  }
  return std::unique_ptr<NormBoundAggregator>(new NormBoundAggregator(global, bound));
}

NormBoundAggregator::NormBoundAggregator(const ModelWeights& global, double bound)
    : global_(global), bound_(bound), clipped_(global), inner_(global) {}

absl::Status NormBoundAggregator::Accumulate(const WeightedUpdate& update) {
  TESSERA_RETURN_IF_ERROR(CheckUpdate(update, global_));
  double squared = 0;
  for (size_t i = 0; i < global_.tensors.size(); ++i) {
    if (global_.tensors[i].dtype() != DType::kFloat32) continue;
    auto g = global_.tensors[i].f32();
    auto u = update.weights.tensors[i].f32();
    for (size_t j = 0; j < g.size(); ++j) {
      const double delta = static_cast<double>(u[j]) - g[j];
      squared += delta * delta;
    }
  }
  const double norm = std::sqrt(squared);
  const float scale = norm > bound_ ? static_cast<float>(bound_ / norm) : 1.0f;
  for (size_t i = 0; i < global_.tensors.size(); ++i) {
    auto& c = clipped_.tensors[i];
    const auto& u = update.weights.tensors[i];
    if (c.dtype() != DType::kFloat32) {
      c = u;
      continue;
    }
    auto g = global_.tensors[i].f32();
    auto uf = u.f32();
    auto out = c.mutable_f32();
    for (size_t j = 0; j < g.size(); ++j) out[j] = g[j] + scale * (uf[j] - g[j]);
  }
  return inner_.Accumulate({clipped_, update.weight});
}

absl::Status NormBoundAggregator::MergeWith(Aggregator&& other) {
  auto* o = dynamic_cast<NormBoundAggregator*>(&other);
  if (o == nullptr) return absl::InvalidArgumentError("can only merge a NormBoundAggregator");
  return inner_.MergeWith(std::move(o->inner_));
}

}  // namespace tessera::aggregation
