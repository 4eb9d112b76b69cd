#include "security/secagg/graph.h"

#include <algorithm>
#include <numeric>

#include "core/rng.h"

namespace tessera::security::secagg {

NeighbourGraph NeighbourGraph::Build(int n, int k, uint64_t shuffle_seed) {
  NeighbourGraph g;
  g.neighbours_.resize(std::max(n, 0));
  if (n <= 1) return g;
  if (k >= n - 1) {
    for (int p = 1; p <= n; ++p) {
      for (int q = 1; q <= n; ++q) {
        if (p != q) g.neighbours_[p - 1].insert(q);
      }
    }
    g.degree_ = n - 1;
    return g;
  }
  const int half = (k + 1) / 2;
  std::vector<ParticipantId> ring(n);
  std::iota(ring.begin(), ring.end(), 1);
  core::Rng rng(shuffle_seed);
  for (int i = n - 1; i > 0; --i) std::swap(ring[i], ring[rng.Uniform(i + 1)]);
  for (int i = 0; i < n; ++i) {
    for (int d = 1; d <= half; ++d) {
      ParticipantId a = ring[i];
      ParticipantId b = ring[(i + d) % n];
      g.neighbours_[a - 1].insert(b);
      g.neighbours_[b - 1].insert(a);
    }
  }
  g.degree_ = std::min(2 * half, n - 1);
  return g;
}

const std::set<ParticipantId>& NeighbourGraph::Neighbours(ParticipantId p) const {
  static const std::set<ParticipantId> kEmpty;
  if (p < 1 || p > neighbours_.size()) return kEmpty;
  return neighbours_[p - 1];
}

bool NeighbourGraph::AreNeighbours(ParticipantId a, ParticipantId b) const {
  return Neighbours(a).contains(b);
}

}  // namespace tessera::security::secagg
