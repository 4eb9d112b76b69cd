// Stage 2 of the server: add each masked input into the running sum as it arrives (U3), then
// ask each survivor for the shares it holds.
#include "core/status.h"
#include "core/strings.h"
#include "security/secagg/fixed_point.h"
#include "security/secagg/server.h"

namespace tessera::security::secagg {

using core::StrCat;

absl::Status SecAggServer::OnMaskedInput(ParticipantId from, const MaskedInput& msg) {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ServerStage::kMaskedInput));
  TESSERA_RETURN_IF_ERROR(CheckParticipant(from));
  if (!u2_.contains(from)) return absl::FailedPreconditionError(StrCat("participant ", from, " is not in this stage"));
  if (u3_.contains(from)) return absl::FailedPreconditionError(StrCat("participant ", from, " already sent its input"));
  if (static_cast<int>(msg.masked.size()) != params_.vector_length) {
    return absl::InvalidArgumentError(StrCat("masked input has ", msg.masked.size(), " elements, expected ",
                                             params_.vector_length));
  }
  const uint64_t mask = params_.modulus_mask();
  if (mask != ~uint64_t{0}) {
    for (uint64_t v : msg.masked) {
      if (v > mask) return absl::InvalidArgumentError("masked input element outside the modulus");
    }
  }
  AddMod(sum_, msg.masked, params_.modulus_bits);
  u3_.insert(from);
  return absl::OkStatus();
}

absl::StatusOr<std::map<ParticipantId, UnmaskingRequest>> SecAggServer::CloseMaskedInput() {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ServerStage::kMaskedInput));
  if (static_cast<int>(u3_.size()) < params_.threshold) {
    return AbortWith(StrCat("only ", u3_.size(), " masked inputs arrived, threshold is ", params_.threshold));
  }
  for (ParticipantId u : u3_) {
    UnmaskingRequest& r = requests_[u];
    for (ParticipantId v : graph_.Neighbours(u)) {
      if (!u2_.contains(v)) continue;
      (u3_.contains(v) ? r.survivors : r.dropped).push_back(v);
    }
  }
  stage_ = ServerStage::kUnmasking;
  return requests_;
}

}  // namespace tessera::security::secagg
