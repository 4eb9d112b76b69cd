// SecAggServer: the coordinator's side of a SecAgg+ session, a transport-free state machine.
//
// Each stage collects messages (On*) until its driver closes it (Close*: when everyone expected
// answered, or at the stage's deadline), one file per stage (server_*.cc):
//   AdvertiseKeys   U1 = those who advertised; a participant with fewer than t neighbours in U1
//                   cannot finish and is left out; fewer than t left aborts. Returns each
//                   participant's neighbours' keys.
//   ShareKeys       U2 = those in U1 whose sealed shares arrived, addressed exactly to their
//                   neighbours in U1. Relays each one's shares to it.
//   MaskedInput     U3 = those in U2 whose masked vector arrived (right length, elements below
//                   the modulus); each is added into the running sum at once: memory O(length).
//                   Asks each participant in U3 for the shares of its neighbours in U2.
//   Unmasking       rebuilds b of every u in U3 and s_sk of every neighbour of U3 that dropped
//                   after ShareKeys (from t shares each), removes the self masks and the pairwise
//                   masks survivors shared with the dropped, and outputs the sum of U3's inputs.
// Any shortfall below t, at any stage, aborts: ABORTED, and nothing partial is released.
// Messages from participants outside the stage's expected set, duplicates and messages for a
// closed stage get FAILED_PRECONDITION or INVALID_ARGUMENT and change nothing. Not thread-safe.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <vector>

#include "absl/status/statusor.h"
#include "security/secagg/graph.h"
#include "security/secagg/messages.h"
#include "security/secagg/session.h"

namespace tessera::security::secagg {

enum class ServerStage { kAdvertiseKeys, kShareKeys, kMaskedInput, kUnmasking, kDone, kAborted };

class SecAggServer {
 public:
  static absl::StatusOr<std::unique_ptr<SecAggServer>> Create(SessionParams params);

  absl::Status OnAdvertiseKeys(ParticipantId from, const AdvertiseKeys& msg);  // server_advertise_keys.cc
  absl::StatusOr<std::map<ParticipantId, KeysBroadcast>> CloseAdvertiseKeys();

  absl::Status OnShareKeys(ParticipantId from, const ShareKeys& msg);  // server_share_keys.cc
  absl::StatusOr<std::map<ParticipantId, SharesForClient>> CloseShareKeys();

  absl::Status OnMaskedInput(ParticipantId from, const MaskedInput& msg);  // server_masked_input.cc
  absl::StatusOr<std::map<ParticipantId, UnmaskingRequest>> CloseMaskedInput();

  absl::Status OnUnmasking(ParticipantId from, const UnmaskingResponse& msg);  // server_unmasking.cc
  // The sum (mod 2^modulus_bits) of the inputs of U3.
  absl::StatusOr<std::vector<uint64_t>> CloseUnmasking();

  ServerStage stage() const { return stage_; }
  // Everyone expected in the current stage has answered (the driver may close it early).
  bool StageComplete() const;
  // The participants the current stage waits for, and whether `p` has answered it.
  std::set<ParticipantId> Expected() const;
  bool Answered(ParticipantId p) const;
  // The participants whose inputs are in the sum (U3), once MaskedInput closed.
  const std::set<ParticipantId>& input_set() const { return u3_; }
  const std::string& session_id() const { return session_id_; }
  const SessionParams& params() const { return params_; }
  const std::string& abort_reason() const { return abort_reason_; }
  void Abort(std::string reason);

 private:
  explicit SecAggServer(SessionParams params);
  absl::Status ExpectStage(ServerStage expected) const;
  absl::Status CheckParticipant(ParticipantId p) const;
  absl::Status AbortWith(std::string reason);

  const SessionParams params_;
  const std::string session_id_;
  const NeighbourGraph graph_;
  ServerStage stage_ = ServerStage::kAdvertiseKeys;
  std::string abort_reason_;

  std::map<ParticipantId, AdvertiseKeys> keys_;                            // U1 (after close)
  std::map<ParticipantId, std::map<ParticipantId, std::vector<uint8_t>>> sealed_;  // U2: by sender, recipient
  std::set<ParticipantId> u2_;
  std::set<ParticipantId> u3_;
  std::vector<uint64_t> sum_;  // running sum of masked inputs
  std::map<ParticipantId, UnmaskingRequest> requests_;
  std::map<ParticipantId, UnmaskingResponse> responses_;
};

}  // namespace tessera::security::secagg
