#include "security/secagg/client.h"

#include "core/status.h"
#include "core/strings.h"

namespace tessera::security::secagg {

absl::StatusOr<std::unique_ptr<SecAggClient>> SecAggClient::Create(SessionParams params, ParticipantId self) {
  TESSERA_RETURN_IF_ERROR(ValidateSession(params));
  if (self < 1 || self > static_cast<ParticipantId>(params.num_participants())) {
    return absl::InvalidArgumentError(core::StrCat("participant id ", self, " outside 1..", params.num_participants()));
  }
  return std::unique_ptr<SecAggClient>(new SecAggClient(std::move(params), self));
}

SecAggClient::SecAggClient(SessionParams params, ParticipantId self)
    : params_(std::move(params)), self_(self), session_id_(SessionId(params_)), graph_(GraphOf(params_)) {}

absl::Status SecAggClient::ExpectStage(ClientStage expected) const {
  if (stage_ == expected) return absl::OkStatus();
  if (stage_ == ClientStage::kAborted) return absl::FailedPreconditionError("the secure aggregation session was aborted");
  return absl::FailedPreconditionError("secure aggregation stage called out of order");
}

absl::Status SecAggClient::Fail(absl::Status s) {
  Abort();
  return s;
}

void SecAggClient::Abort() {
  stage_ = ClientStage::kAborted;
  c_key_.reset();
  s_key_.reset();
  seed_b_.reset();
  held_key_shares_.clear();
  held_seed_shares_.clear();
}

}  // namespace tessera::security::secagg
