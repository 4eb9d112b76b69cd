// Stage 1 of the server: collect sealed shares (U2) and relay them to their recipients.
#include "core/status.h"
#include "core/strings.h"
#include "security/secagg/server.h"

namespace tessera::security::secagg {

using core::StrCat;

absl::Status SecAggServer::OnShareKeys(ParticipantId from, const ShareKeys& msg) {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ServerStage::kShareKeys));
  TESSERA_RETURN_IF_ERROR(CheckParticipant(from));
  if (!keys_.contains(from)) return absl::FailedPreconditionError(StrCat("participant ", from, " is not in this stage"));
  if (sealed_.contains(from)) return absl::FailedPreconditionError(StrCat("participant ", from, " already shared keys"));
  // Exactly one sealed pair for each neighbour in U1.
  size_t expected = 0;
  for (ParticipantId q : graph_.Neighbours(from)) {
    if (!keys_.contains(q)) continue;
    ++expected;
    if (!msg.sealed_shares.contains(q)) {
      return absl::InvalidArgumentError(StrCat("participant ", from, " sent no shares for neighbour ", q));
    }
  }
  if (msg.sealed_shares.size() != expected) {
    return absl::InvalidArgumentError(StrCat("participant ", from, " sent shares for participants that are not its neighbours"));
  }
  for (const auto& [to, sealed] : msg.sealed_shares) {
    if (sealed.size() > 64 * 1024) return absl::InvalidArgumentError("sealed shares too large");
  }
  sealed_[from] = msg.sealed_shares;
  return absl::OkStatus();
}

absl::StatusOr<std::map<ParticipantId, SharesForClient>> SecAggServer::CloseShareKeys() {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ServerStage::kShareKeys));
  if (static_cast<int>(sealed_.size()) < params_.threshold) {
    return AbortWith(StrCat("only ", sealed_.size(), " participants shared keys, threshold is ", params_.threshold));
  }
  std::map<ParticipantId, SharesForClient> out;
  for (const auto& [from, by_recipient] : sealed_) {
    u2_.insert(from);
    out[from];  // every member of U2 gets a (possibly empty) relay
  }
  for (const auto& [from, by_recipient] : sealed_) {
    for (const auto& [to, sealed] : by_recipient) {
      if (u2_.contains(to)) out[to].sealed_shares[from] = sealed;
    }
  }
  sealed_.clear();
  sum_.assign(params_.vector_length, 0);
  stage_ = ServerStage::kMaskedInput;
  return out;
}

}  // namespace tessera::security::secagg
