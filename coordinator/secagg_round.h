// SecAggRound: one round's SecAgg+ session as the RoundStateMachine drives it.
//
// It maps the round's sampled client ids to participant ids (1..n, in sampling order), feeds
// their stage messages to the SecAggServer, closes each stage when every expected participant
// that has not dropped answered or at the stage's deadline, and keeps each client's reply for
// its long poll. AdvertiseKeys and ShareKeys have the stage deadline; MaskedInput lasts until
// the round's deadline (clients train in it); Unmasking has the stage deadline again.
// Not thread-safe: the Coordinator's mutex guards it.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/federation.h"
#include "core/ids.h"
#include "security/secagg/config.h"
#include "security/secagg/messages.h"
#include "security/secagg/server.h"

namespace tessera::coordinator {

class SecAggRound {
 public:
  // kUnmaskReady: the Unmasking stage closed; Unmask() computes the sum (the costly part:
  // seconds for hundreds of clients with dropouts), which the owner may run off its lock.
  enum class Progress { kRunning, kUnmaskReady, kDone, kAborted };

  // `config` is already resolved for this many clients (ResolveConfig).
  static absl::StatusOr<std::unique_ptr<SecAggRound>> Create(const security::secagg::SecAggConfig& config,
                                                             const std::string& run_id, core::RoundNumber round,
                                                             const std::vector<core::ClientId>& sampled,
                                                             int vector_length, uint64_t graph_seed, absl::Time now,
                                                             absl::Time round_deadline);

  core::SecureAggregationSpec SpecFor(const core::ClientId& client) const;

  // A client's message for the current stage. A repeat of a stage the client already answered
  // is accepted as a poll. NOT_FOUND: not a participant; FAILED_PRECONDITION: another stage.
  absl::Status OnMessage(const core::ClientId& client, const security::secagg::StageRequest& request);
  // The client's reply for `stage` once that stage closed (nullptr until then).
  const security::secagg::StageReply* ReplyFor(const core::ClientId& client, security::secagg::Stage stage) const;
  void OnDropped(const core::ClientId& client);
  // Closes stages that are complete or past their deadline.
  Progress Advance(absl::Time now);

  // After kUnmaskReady: reconstructs the dropped clients' masks and computes the sum. Touches
  // nothing but this session, so it may run on another thread while nobody else uses it.
  // Progress becomes kDone, or kAborted with the reason.
  absl::Status Unmask();
  // After kDone: the sum of the inputs, and who contributed.
  std::vector<uint64_t> TakeSum() { return std::move(sum_); }
  int num_contributors() const { return static_cast<int>(server_->input_set().size()); }
  const std::string& abort_reason() const { return server_->abort_reason(); }
  const security::FixedPointConfig& fixed_point() const { return config_.fixed_point; }
  absl::Time stage_deadline() const { return stage_deadline_; }

 private:
  SecAggRound(security::secagg::SecAggConfig config, std::vector<core::ClientId> sampled,
              std::unique_ptr<security::secagg::SecAggServer> server, absl::Time round_deadline);
  absl::Status CloseStage(absl::Time now);

  const security::secagg::SecAggConfig config_;
  const std::vector<core::ClientId> sampled_;
  std::map<core::ClientId, security::secagg::ParticipantId> ids_;
  std::unique_ptr<security::secagg::SecAggServer> server_;
  const absl::Time round_deadline_;
  absl::Time stage_deadline_;
  std::set<security::secagg::ParticipantId> dropped_;
  // Replies by participant, for each closed stage.
  std::map<security::secagg::ParticipantId, std::map<int, security::secagg::StageReply>> replies_;
  std::vector<uint64_t> sum_;
  Progress progress_ = Progress::kRunning;
};

}  // namespace tessera::coordinator
