#include "security/secagg/server.h"

#include "core/logging.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::security::secagg {

absl::StatusOr<std::unique_ptr<SecAggServer>> SecAggServer::Create(SessionParams params) {
  TESSERA_RETURN_IF_ERROR(ValidateSession(params));
  return std::unique_ptr<SecAggServer>(new SecAggServer(std::move(params)));
}

SecAggServer::SecAggServer(SessionParams params)
    : params_(std::move(params)), session_id_(SessionId(params_)), graph_(GraphOf(params_)) {}

absl::Status SecAggServer::ExpectStage(ServerStage expected) const {
  if (stage_ == expected) return absl::OkStatus();
  if (stage_ == ServerStage::kAborted) return absl::AbortedError("the secure aggregation session was aborted: " + abort_reason_);
  return absl::FailedPreconditionError("secure aggregation message for a stage that is not open");
}

absl::Status SecAggServer::CheckParticipant(ParticipantId p) const {
  if (p < 1 || p > static_cast<ParticipantId>(params_.num_participants())) {
    return absl::InvalidArgumentError(core::StrCat("unknown participant ", p));
  }
  return absl::OkStatus();
}

void SecAggServer::Abort(std::string reason) {
  if (stage_ == ServerStage::kAborted) return;
  core::Logger("secagg")->warn("session aborted: {}", reason);
  stage_ = ServerStage::kAborted;
  abort_reason_ = std::move(reason);
  sealed_.clear();
  sum_.clear();
  sum_.shrink_to_fit();
  responses_.clear();
}

absl::Status SecAggServer::AbortWith(std::string reason) {
  Abort(reason);
  return absl::AbortedError(reason);
}

bool SecAggServer::StageComplete() const {
  switch (stage_) {
    case ServerStage::kAdvertiseKeys: return static_cast<int>(keys_.size()) == params_.num_participants();
    case ServerStage::kShareKeys: return sealed_.size() == keys_.size();
    case ServerStage::kMaskedInput: return u3_.size() == u2_.size();
    case ServerStage::kUnmasking: return responses_.size() == requests_.size();
    default: return false;
  }
}

std::set<ParticipantId> SecAggServer::Expected() const {
  std::set<ParticipantId> out;
  switch (stage_) {
    case ServerStage::kAdvertiseKeys:
      for (int p = 1; p <= params_.num_participants(); ++p) out.insert(p);
      break;
    case ServerStage::kShareKeys:
      for (const auto& [p, unused] : keys_) out.insert(p);
      break;
    case ServerStage::kMaskedInput: out = u2_; break;
    case ServerStage::kUnmasking:
      for (const auto& [p, unused] : requests_) out.insert(p);
      break;
    default: break;
  }
  return out;
}

bool SecAggServer::Answered(ParticipantId p) const {
  switch (stage_) {
    case ServerStage::kAdvertiseKeys: return keys_.contains(p);
    case ServerStage::kShareKeys: return sealed_.contains(p);
    case ServerStage::kMaskedInput: return u3_.contains(p);
    case ServerStage::kUnmasking: return responses_.contains(p);
    default: return false;
  }
}

}  // namespace tessera::security::secagg
