#include "coordinator/secagg_round.h"

#include "core/logging.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::coordinator {

using core::ClientId;
using core::StrCat;
namespace sa = security::secagg;

absl::StatusOr<std::unique_ptr<SecAggRound>> SecAggRound::Create(const sa::SecAggConfig& config,
                                                                 const std::string& run_id, core::RoundNumber round,
                                                                 const std::vector<ClientId>& sampled,
                                                                 int vector_length, uint64_t graph_seed,
                                                                 absl::Time now, absl::Time round_deadline) {
  sa::SessionParams params;
  params.run_id = run_id;
  params.round = round;
  for (const ClientId& id : sampled) params.participants.push_back(id.value);
  params.neighbours = config.neighbours;
  params.threshold = config.threshold;
  params.graph_seed = graph_seed;
  params.vector_length = vector_length;
  params.modulus_bits = config.fixed_point.modulus_bits;
  TESSERA_ASSIGN_OR_RETURN(auto server, sa::SecAggServer::Create(std::move(params)));
  std::unique_ptr<SecAggRound> r(new SecAggRound(config, sampled, std::move(server), round_deadline));
  r->stage_deadline_ = std::min(now + config.stage_deadline, round_deadline);
  return r;
}

SecAggRound::SecAggRound(sa::SecAggConfig config, std::vector<ClientId> sampled,
                         std::unique_ptr<sa::SecAggServer> server, absl::Time round_deadline)
    : config_(std::move(config)), sampled_(std::move(sampled)), server_(std::move(server)), round_deadline_(round_deadline) {
  for (size_t i = 0; i < sampled_.size(); ++i) ids_[sampled_[i]] = static_cast<sa::ParticipantId>(i + 1);
}

core::SecureAggregationSpec SecAggRound::SpecFor(const ClientId& client) const {
  const sa::SessionParams& p = server_->params();
  core::SecureAggregationSpec spec;
  spec.participants = p.participants;
  spec.self = ids_.at(client);
  spec.neighbours = p.neighbours;
  spec.threshold = p.threshold;
  spec.graph_seed = p.graph_seed;
  spec.modulus_bits = p.modulus_bits;
  spec.clip = config_.fixed_point.clip;
  spec.bits = config_.fixed_point.bits;
  spec.weight_cap = config_.fixed_point.weight_cap;
  spec.vector_length = p.vector_length;
  spec.stage_deadline = config_.stage_deadline;
  return spec;
}

absl::Status SecAggRound::OnMessage(const ClientId& client, const sa::StageRequest& request) {
  auto id = ids_.find(client);
  if (id == ids_.end()) return absl::NotFoundError(StrCat("client '", client.value, "' is not in this round's session"));
  if (progress_ != Progress::kRunning) return absl::AbortedError("the secure aggregation session is over");
  const int stage = static_cast<int>(request.stage());
  if (replies_[id->second].contains(stage)) return absl::OkStatus();  // a retry of a closed stage: its reply waits
  if (static_cast<int>(server_->stage()) != stage) {
    return absl::FailedPreconditionError(StrCat("secure aggregation is at stage ", static_cast<int>(server_->stage()),
                                                ", not ", stage));
  }
  if (server_->Answered(id->second)) return absl::OkStatus();  // a retry while the stage is open
  absl::Status s;
  switch (request.stage()) {
    case sa::Stage::kAdvertiseKeys: s = server_->OnAdvertiseKeys(id->second, std::get<0>(request.body)); break;
    case sa::Stage::kShareKeys: s = server_->OnShareKeys(id->second, std::get<1>(request.body)); break;
    case sa::Stage::kMaskedInput: s = server_->OnMaskedInput(id->second, std::get<2>(request.body)); break;
    case sa::Stage::kUnmasking:
      s = server_->OnUnmasking(id->second, std::get<3>(request.body));
      if (s.ok()) replies_[id->second][stage] = sa::StageReply{std::monostate{}};
      break;
  }
  return s;
}

const sa::StageReply* SecAggRound::ReplyFor(const ClientId& client, sa::Stage stage) const {
  auto id = ids_.find(client);
  if (id == ids_.end()) return nullptr;
  auto by_stage = replies_.find(id->second);
  if (by_stage == replies_.end()) return nullptr;
  auto it = by_stage->second.find(static_cast<int>(stage));
  return it == by_stage->second.end() ? nullptr : &it->second;
}

void SecAggRound::OnDropped(const ClientId& client) {
  if (auto id = ids_.find(client); id != ids_.end()) dropped_.insert(id->second);
}

absl::Status SecAggRound::CloseStage(absl::Time now) {
  switch (server_->stage()) {
    case sa::ServerStage::kAdvertiseKeys: {
      TESSERA_ASSIGN_OR_RETURN(auto out, server_->CloseAdvertiseKeys());
      for (auto& [p, reply] : out) replies_[p][0] = sa::StageReply{std::move(reply)};
      stage_deadline_ = std::min(now + config_.stage_deadline, round_deadline_);
      return absl::OkStatus();
    }
    case sa::ServerStage::kShareKeys: {
      TESSERA_ASSIGN_OR_RETURN(auto out, server_->CloseShareKeys());
      for (auto& [p, reply] : out) replies_[p][1] = sa::StageReply{std::move(reply)};
      stage_deadline_ = round_deadline_;  // clients train now
      return absl::OkStatus();
    }
    case sa::ServerStage::kMaskedInput: {
      TESSERA_ASSIGN_OR_RETURN(auto out, server_->CloseMaskedInput());
      for (auto& [p, reply] : out) replies_[p][2] = sa::StageReply{std::move(reply)};
      stage_deadline_ = now + config_.stage_deadline;
      return absl::OkStatus();
    }
    case sa::ServerStage::kUnmasking:
      progress_ = Progress::kUnmaskReady;  // Unmask() does the work
      return absl::OkStatus();
    default: return absl::FailedPreconditionError("no stage is open");
  }
}

SecAggRound::Progress SecAggRound::Advance(absl::Time now) {
  while (progress_ == Progress::kRunning) {
    bool complete = true;
    for (sa::ParticipantId p : server_->Expected()) {
      if (!dropped_.contains(p) && !server_->Answered(p)) complete = false;
    }
    if (!complete && now < stage_deadline_) break;
    const int stage = static_cast<int>(server_->stage());
    absl::Status s = CloseStage(now);
    if (!s.ok()) {
      server_->Abort(std::string(s.message()));
      progress_ = Progress::kAborted;
      break;
    }
    core::Logger("coordinator")->info("secure aggregation stage {} closed", stage);
  }
  return progress_;
}

absl::Status SecAggRound::Unmask() {
  if (progress_ != Progress::kUnmaskReady) return absl::FailedPreconditionError("the Unmasking stage is not closed");
  auto sum = server_->CloseUnmasking();
  if (!sum.ok()) {
    server_->Abort(std::string(sum.status().message()));
    progress_ = Progress::kAborted;
    return sum.status();
  }
  sum_ = *std::move(sum);
  progress_ = Progress::kDone;
  return absl::OkStatus();
}

}  // namespace tessera::coordinator
