// The neighbour graph of a SecAgg+ session (Bell et al. 2020): a random k-regular "Harary"
// ring. The participants are shuffled and each is joined to its k/2 predecessors and successors
// on the ring. k >= n - 1 gives the complete graph of classic SecAgg.
#pragma once

#include <cstdint>
#include <set>
#include <vector>

#include "security/secagg/messages.h"

namespace tessera::security::secagg {

class NeighbourGraph {
 public:
  // Participants 1..n; `shuffle_seed` orders the ring (drawn by the server from a CSPRNG, or
  // from the run's seed in a simulation). k is made even (rounded up) and capped at n - 1.
  static NeighbourGraph Build(int num_participants, int k, uint64_t shuffle_seed);

  int size() const { return static_cast<int>(neighbours_.size()); }
  int degree() const { return degree_; }
  // The neighbours of `p` (never `p` itself); empty for an unknown id.
  const std::set<ParticipantId>& Neighbours(ParticipantId p) const;
  bool AreNeighbours(ParticipantId a, ParticipantId b) const;

 private:
  int degree_ = 0;
  std::vector<std::set<ParticipantId>> neighbours_;  // index p - 1
};

}  // namespace tessera::security::secagg
