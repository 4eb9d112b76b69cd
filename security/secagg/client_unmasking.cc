// Stage 3 of the client: for each neighbour that shared keys, reveal its b share if it survived
// or its s_sk share if it dropped, never both; refuse inconsistent lists from the server.
#include <set>

#include "core/status.h"
#include "core/strings.h"
#include "security/secagg/client.h"

namespace tessera::security::secagg {

using core::StrCat;

absl::StatusOr<UnmaskingResponse> SecAggClient::UnmaskingStage(const UnmaskingRequest& request) {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ClientStage::kUnmasking));
  std::set<ParticipantId> survivors;
  std::set<ParticipantId> dropped;
  for (ParticipantId p : request.survivors) {
    if (p == self_) continue;  // the server may list the client itself among the survivors
    if (!held_key_shares_.contains(p)) {
      return Fail(absl::InvalidArgumentError(StrCat("unmasking request names ", p, ", who shared no keys with ", self_)));
    }
    if (!survivors.insert(p).second) return Fail(absl::InvalidArgumentError(StrCat("survivor ", p, " listed twice")));
  }
  for (ParticipantId p : request.dropped) {
    if (p == self_) return Fail(absl::InvalidArgumentError("unmasking request lists this client as dropped"));
    if (!held_key_shares_.contains(p)) {
      return Fail(absl::InvalidArgumentError(StrCat("unmasking request names ", p, ", who shared no keys with ", self_)));
    }
    if (!dropped.insert(p).second) return Fail(absl::InvalidArgumentError(StrCat("dropped peer ", p, " listed twice")));
    if (survivors.contains(p)) {
      return Fail(absl::InvalidArgumentError(StrCat("peer ", p, " is listed both as survivor and as dropped")));
    }
  }
  // Every neighbour that shared keys is either a survivor or dropped: nothing is left ambiguous.
  if (survivors.size() + dropped.size() != held_key_shares_.size()) {
    return Fail(absl::InvalidArgumentError("unmasking request does not account for every neighbour that shared keys"));
  }
  // The client itself survived (it is answering); with it, at least t inputs must remain.
  if (static_cast<int>(survivors.size()) + 1 < params_.threshold) {
    return Fail(absl::AbortedError(StrCat("only ", survivors.size() + 1, " survivors, threshold is ", params_.threshold)));
  }
  UnmaskingResponse out;
  for (ParticipantId p : survivors) out.self_mask_shares[p] = held_seed_shares_.at(p);
  for (ParticipantId p : dropped) out.key_shares[p] = held_key_shares_.at(p);
  // One answer per session: the held shares are wiped so no later request can reveal the other
  // kind of share for the same peer.
  c_key_.reset();
  s_key_.reset();
  seed_b_.reset();
  held_key_shares_.clear();
  held_seed_shares_.clear();
  stage_ = ClientStage::kDone;
  return out;
}

}  // namespace tessera::security::secagg
