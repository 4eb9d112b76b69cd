// Stage 0 of the server: collect public keys (U1) and send each participant its neighbours'.
#include <set>

#include "core/status.h"
#include "core/strings.h"
#include "security/secagg/server.h"

namespace tessera::security::secagg {

using core::StrCat;

absl::Status SecAggServer::OnAdvertiseKeys(ParticipantId from, const AdvertiseKeys& msg) {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ServerStage::kAdvertiseKeys));
  TESSERA_RETURN_IF_ERROR(CheckParticipant(from));
  if (keys_.contains(from)) return absl::FailedPreconditionError(StrCat("participant ", from, " already advertised keys"));
  if (msg.c_pk == msg.s_pk) return absl::InvalidArgumentError("the two public keys of a participant must differ");
  keys_[from] = msg;
  return absl::OkStatus();
}

absl::StatusOr<std::map<ParticipantId, KeysBroadcast>> SecAggServer::CloseAdvertiseKeys() {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ServerStage::kAdvertiseKeys));
  // Repeated keys across participants are refused: each key must belong to one participant.
  std::map<PublicKey, ParticipantId> owner;
  std::set<ParticipantId> repeated;
  for (const auto& [p, k] : keys_) {
    for (const PublicKey& pk : {k.c_pk, k.s_pk}) {
      auto [it, inserted] = owner.emplace(pk, p);
      if (!inserted) {
        repeated.insert(p);
        repeated.insert(it->second);
      }
    }
  }
  for (ParticipantId p : repeated) keys_.erase(p);
  // A participant with fewer than t neighbours in U1 cannot share its secrets: leave it out,
  // repeatedly, since leaving one out can starve its neighbours.
  for (bool changed = true; changed;) {
    changed = false;
    for (auto it = keys_.begin(); it != keys_.end();) {
      int live = 0;
      for (ParticipantId q : graph_.Neighbours(it->first)) live += keys_.contains(q) ? 1 : 0;
      if (live < params_.threshold) {
        it = keys_.erase(it);
        changed = true;
      } else {
        ++it;
      }
    }
  }
  if (static_cast<int>(keys_.size()) < params_.threshold) {
    return AbortWith(StrCat("only ", keys_.size(), " participants can go on after AdvertiseKeys, threshold is ",
                            params_.threshold));
  }
  std::map<ParticipantId, KeysBroadcast> out;
  for (const auto& [p, unused] : keys_) {
    KeysBroadcast& b = out[p];
    for (ParticipantId q : graph_.Neighbours(p)) {
      if (auto it = keys_.find(q); it != keys_.end()) b.neighbours[q] = it->second;
    }
  }
  stage_ = ServerStage::kShareKeys;
  return out;
}

}  // namespace tessera::security::secagg
