#include "simulations/partitioner.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>
#include <queue>
#include <random>
#include <utility>

#include "core/rng.h"
#include "core/strings.h"

namespace tessera::simulations {
namespace {

using core::StrCat;
using Parts = std::vector<std::vector<int64_t>>;

// Stream ids under the caller's seed, one per purpose, so that e.g. the iid and shards
// partitions of the same seed are unrelated.
enum StreamId : uint64_t {
  kIidStream = 0x11d,
  kShardsStream = 0x5a4d,
  kDirichletStream = 0xd121,
  kHeldOutStream = 0x4e1d,
};

// Fisher-Yates with core::Rng, so the permutation does not depend on std::shuffle's
// implementation.
template <typename T>
void Shuffle(std::vector<T>& v, core::Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng.Uniform(i));
    std::swap(v[i - 1], v[j]);
  }
}

std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

Parts PartitionIid(int64_t n, int num_clients, uint64_t seed) {
  std::vector<int64_t> order = Iota(n);
  core::Rng rng(seed, {kIidStream});
  Shuffle(order, rng);
  Parts parts(static_cast<size_t>(num_clients));
  const int64_t base = n / num_clients;
  const int64_t extra = n % num_clients;
  int64_t pos = 0;
  for (int c = 0; c < num_clients; ++c) {
    const int64_t size = base + (c < extra ? 1 : 0);
    parts[c].assign(order.begin() + pos, order.begin() + pos + size);
    pos += size;
  }
  return parts;
}

absl::StatusOr<Parts> PartitionShards(const client::Dataset& data, int num_clients, int k,
                                      uint64_t seed) {
  const int64_t n = data.size();
  const int64_t num_shards = int64_t{num_clients} * k;
  if (num_shards > n) {
    return absl::InvalidArgumentError(StrCat("shards:", k, " over ", num_clients, " clients needs ",
                                             num_shards, " shards but the dataset has only ", n,
                                             " examples: shards would be empty"));
  }
  std::vector<int64_t> by_label = Iota(n);
  std::stable_sort(by_label.begin(), by_label.end(),
                   [&](int64_t a, int64_t b) { return data.labels[a] < data.labels[b]; });
  std::vector<int64_t> shard_ids = Iota(num_shards);
  core::Rng rng(seed, {kShardsStream});
  Shuffle(shard_ids, rng);
  const int64_t base = n / num_shards;
  const int64_t extra = n % num_shards;
  auto shard_begin = [&](int64_t s) { return s * base + std::min(s, extra); };
  Parts parts(static_cast<size_t>(num_clients));
  for (int c = 0; c < num_clients; ++c) {
    for (int j = 0; j < k; ++j) {
      const int64_t s = shard_ids[static_cast<size_t>(int64_t{c} * k + j)];
      parts[c].insert(parts[c].end(), by_label.begin() + shard_begin(s),
                      by_label.begin() + shard_begin(s + 1));
    }
  }
  return parts;
}

absl::StatusOr<Parts> PartitionDirichlet(const client::Dataset& data, int num_clients, double alpha,
                                         uint64_t seed) {
  int64_t num_classes = data.num_classes;
  if (num_classes <= 0) {
    for (int64_t label : data.labels) num_classes = std::max(num_classes, label + 1);
  }
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(num_classes));
  for (int64_t i = 0; i < data.size(); ++i) {
    const int64_t label = data.labels[i];
    if (label < 0 || label >= num_classes) {
      return absl::InvalidArgumentError(
          StrCat("label ", label, " of example ", i, " is out of range [0, ", num_classes, ")"));
    }
    by_class[label].push_back(i);
  }
  Parts parts(static_cast<size_t>(num_clients));
  std::vector<double> p(static_cast<size_t>(num_clients));
  for (int64_t c = 0; c < num_classes; ++c) {
    std::vector<int64_t>& members = by_class[c];
    if (members.empty()) continue;
    core::Rng rng(seed, {kDirichletStream, static_cast<uint64_t>(c)});
    Shuffle(members, rng);
    // Dir(alpha) as normalized Gamma(alpha, 1) draws.
    std::gamma_distribution<double> gamma(alpha, 1.0);
    double total = 0;
    for (double& x : p) {
      x = gamma(rng);
      total += x;
    }
    const int64_t m = static_cast<int64_t>(members.size());
    if (!(total > 0) || !std::isfinite(total)) {
      // Every draw underflowed (tiny alpha): the whole class goes to one client.
      std::fill(p.begin(), p.end(), 0.0);
      p[rng.Uniform(static_cast<uint64_t>(num_clients))] = 1.0;
      total = 1.0;
    }
    double cumulative = 0;
    int64_t begin = 0;
    for (int k = 0; k < num_clients; ++k) {
      cumulative += p[k];
      const int64_t end =
          k + 1 == num_clients
              ? m
              : std::clamp<int64_t>(static_cast<int64_t>(std::floor(cumulative / total * m)), begin,
                                    m);
      parts[k].insert(parts[k].end(), members.begin() + begin, members.begin() + end);
      begin = end;
    }
  }
  // An empty client takes one example from the currently largest client (lowest index among
  // equals). The largest always has two or more, since num_clients <= size.
  std::priority_queue<std::pair<int64_t, int>> largest;  // (size, -client)
  for (int k = 0; k < num_clients; ++k) {
    largest.emplace(static_cast<int64_t>(parts[k].size()), -k);
  }
  for (int k = 0; k < num_clients; ++k) {
    if (!parts[k].empty()) continue;
    auto [size, neg_donor] = largest.top();
    largest.pop();
    std::vector<int64_t>& donor = parts[static_cast<size_t>(-neg_donor)];
    parts[k].push_back(donor.back());
    donor.pop_back();
    largest.emplace(size - 1, neg_donor);
  }
  return parts;
}

}  // namespace

absl::StatusOr<PartitionSpec> ParsePartitionSpec(std::string_view text) {
  PartitionSpec spec;
  if (text == "iid") {
    spec.kind = PartitionSpec::kIid;
    return spec;
  }
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(StrCat("invalid partition '", text, "': ", why,
                                             " (expected iid, shards:K or dirichlet:ALPHA)"));
  };
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) return bad("unknown kind");
  const std::string_view kind = text.substr(0, colon);
  const std::string_view arg = text.substr(colon + 1);
  const char* first = arg.data();
  const char* last = arg.data() + arg.size();
  if (kind == "shards") {
    int k = 0;
    auto [ptr, ec] = std::from_chars(first, last, k);
    if (ec != std::errc() || ptr != last || arg.empty()) {
      return bad("K must be an integer");
    }
    if (k < 1) return bad("K must be >= 1");
    spec.kind = PartitionSpec::kShards;
    spec.shards_per_client = k;
    return spec;
  }
  if (kind == "dirichlet") {
    double alpha = 0;
    auto [ptr, ec] = std::from_chars(first, last, alpha);
    if (ec != std::errc() || ptr != last || arg.empty()) return bad("ALPHA must be a number");
    if (!(alpha > 0) || !std::isfinite(alpha)) return bad("ALPHA must be finite and > 0");
    spec.kind = PartitionSpec::kDirichlet;
    spec.alpha = alpha;
    return spec;
  }
  return bad("unknown kind");
}

std::string ToString(const PartitionSpec& spec) {
  switch (spec.kind) {
    case PartitionSpec::kIid:
      return "iid";
    case PartitionSpec::kShards:
      return StrCat("shards:", spec.shards_per_client);
    case PartitionSpec::kDirichlet: {
      char buf[32];
      auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), spec.alpha);  // shortest round trip
      return StrCat("dirichlet:", std::string_view(buf, ec == std::errc() ? ptr - buf : 0));
    }
  }
  return "?";
}

absl::StatusOr<std::vector<std::vector<int64_t>>> Partition(const client::Dataset& data,
                                                            int num_clients,
                                                            const PartitionSpec& spec,
                                                            uint64_t seed) {
  if (num_clients < 1 || num_clients > data.size()) {
    return absl::InvalidArgumentError(StrCat("cannot partition ", data.size(), " examples among ",
                                             num_clients, " clients (need 1 to ", data.size(),
                                             " clients)"));
  }
  Parts parts;
  switch (spec.kind) {
    case PartitionSpec::kIid:
      parts = PartitionIid(data.size(), num_clients, seed);
      break;
    case PartitionSpec::kShards: {
      if (spec.shards_per_client < 1) {
        return absl::InvalidArgumentError(
            StrCat("shards per client must be >= 1, got ", spec.shards_per_client));
      }
      auto shards = PartitionShards(data, num_clients, spec.shards_per_client, seed);
      if (!shards.ok()) return shards.status();
      parts = std::move(shards).value();
      break;
    }
    case PartitionSpec::kDirichlet: {
      if (!(spec.alpha > 0) || !std::isfinite(spec.alpha)) {
        return absl::InvalidArgumentError(
            StrCat("dirichlet alpha must be finite and > 0, got ", spec.alpha));
      }
      auto dirichlet = PartitionDirichlet(data, num_clients, spec.alpha, seed);
      if (!dirichlet.ok()) return dirichlet.status();
      parts = std::move(dirichlet).value();
      break;
    }
    default:
      return absl::InvalidArgumentError("unknown partition kind");
  }
  for (auto& part : parts) std::sort(part.begin(), part.end());
  return parts;
}

std::vector<ClientSplit> SplitHeldOut(const std::vector<std::vector<int64_t>>& parts,
                                      double test_fraction, uint64_t seed) {
  const double fraction = std::isnan(test_fraction) ? 0.0 : std::clamp(test_fraction, 0.0, 1.0);
  std::vector<ClientSplit> splits(parts.size());
  for (size_t c = 0; c < parts.size(); ++c) {
    std::vector<int64_t> order = parts[c];
    const int64_t n = static_cast<int64_t>(order.size());
    core::Rng rng(seed, {kHeldOutStream, static_cast<uint64_t>(c)});
    Shuffle(order, rng);
    int64_t num_test = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
    if (n >= 1) num_test = std::min(num_test, n - 1);
    splits[c].test.assign(order.begin(), order.begin() + num_test);
    splits[c].train.assign(order.begin() + num_test, order.end());
    std::sort(splits[c].test.begin(), splits[c].test.end());
    std::sort(splits[c].train.begin(), splits[c].train.end());
  }
  return splits;
}

}  // namespace tessera::simulations
