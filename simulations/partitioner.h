// Splitting one dataset among simulated clients, as in the federated learning literature:
//
//   iid           shuffle, equal split (McMahan et al. 2017: 100 clients x 600 of 60k).
//   shards:K      McMahan's pathological non-IID: sort by label, cut num_clients * K shards of
//                 equal size, give each client K random shards (K = 2: most clients see 2 labels).
//   dirichlet:A   label skew of Hsu et al. 2019: for each class, proportions over the clients are
//                 drawn from Dir(A); small A gives few classes per client, large A near-IID.
//
// Output is a function of (labels, num_clients, spec, seed) only: every run on a platform of
// this kind (libstdc++, x86-64) gives the same partition. Every example goes to exactly one
// client, and each client's indices are sorted ascending. Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/data/dataset.h"

namespace tessera::simulations {

struct PartitionSpec {
  enum Kind { kIid, kShards, kDirichlet };
  Kind kind = kIid;
  int shards_per_client = 2;  // kShards only
  double alpha = 0.5;         // kDirichlet only: concentration, > 0
};

// Parses "iid", "shards:K" (integer K >= 1) or "dirichlet:ALPHA" (finite ALPHA > 0).
// INVALID_ARGUMENT with a one-line message quoting `text` otherwise.
absl::StatusOr<PartitionSpec> ParsePartitionSpec(std::string_view text);

// The spec's canonical text, e.g. "shards:2"; ParsePartitionSpec(ToString(s)) gives back s.
std::string ToString(const PartitionSpec& spec);

// Returns each client's example indices into `data` (num_clients lists, each sorted, together a
// partition of [0, data.size())).
// - iid: sizes differ by at most one (the first size % num_clients clients get one more).
// - shards: shard sizes differ by at most one; labels are sorted stably (ties by index).
// - dirichlet: every client gets at least one example (an empty client takes one from the
//   largest); labels must lie in [0, num_classes) (num_classes = max label + 1 when
//   data.num_classes is 0).
// INVALID_ARGUMENT when num_clients < 1 or > data.size(), when num_clients * K shards would
// leave a shard empty, when the spec's parameters are invalid, or a label is out of range.
absl::StatusOr<std::vector<std::vector<int64_t>>> Partition(const client::Dataset& data,
                                                            int num_clients,
                                                            const PartitionSpec& spec,
                                                            uint64_t seed);

struct ClientSplit {
  std::vector<int64_t> train;
  std::vector<int64_t> test;
};

// Splits each client's indices into a local train and held-out test set: test gets
// round(test_fraction * n) of a client's n examples, chosen by a per-client shuffle under
// `seed`, but a client with n >= 1 keeps at least one training example. test_fraction is
// clamped to [0, 1] (NaN counts as 0). Both lists are sorted ascending.
std::vector<ClientSplit> SplitHeldOut(const std::vector<std::vector<int64_t>>& parts,
                                      double test_fraction, uint64_t seed);

}  // namespace tessera::simulations
