// SecAggClient: one client's side of a SecAgg+ session, a transport-free state machine.
//
// Stages, each in its own file (client_*.cc), called in order; a call out of order is
// FAILED_PRECONDITION, and any error aborts the session for good (keys and seeds are wiped):
//   AdvertiseKeys  -> two fresh X25519 key pairs (c for share encryption, s for masks)
//   ShareKeys      <- neighbours' keys; checks there are at least t, all distinct; draws the self
//                     mask seed b; Shamir-shares s_sk and b t-of-k and seals each neighbour's pair
//                     with AES-256-GCM
//   MaskedInput    <- shares addressed to this client; opens them (a tampered ciphertext aborts);
//                     returns input + PRG(b) + sum over neighbours v that shared keys of
//                     +-PRG(s_uv) (+ if u > v), mod 2^modulus_bits
//   Unmasking      <- which neighbours survived and which dropped; refuses lists that are
//                     inconsistent (a peer in both, unknown ids, repeats, fewer than t survivors)
//                     and never reveals both b and s_sk shares of the same peer
// Not thread-safe.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>

#include "absl/status/statusor.h"
#include "security/crypto/secure_bytes.h"
#include "security/crypto/x25519.h"
#include "security/secagg/graph.h"
#include "security/secagg/messages.h"
#include "security/secagg/session.h"

namespace tessera::security::secagg {

enum class ClientStage { kAdvertiseKeys, kShareKeys, kMaskedInput, kUnmasking, kDone, kAborted };

class SecAggClient {
 public:
  // INVALID_ARGUMENT for invalid params or a participant id outside 1..n.
  static absl::StatusOr<std::unique_ptr<SecAggClient>> Create(SessionParams params, ParticipantId self);

  absl::StatusOr<AdvertiseKeys> AdvertiseKeysStage();                                  // client_advertise_keys.cc
  absl::StatusOr<ShareKeys> ShareKeysStage(const KeysBroadcast& keys);                  // client_share_keys.cc
  absl::StatusOr<MaskedInput> MaskedInputStage(const SharesForClient& shares,
                                               std::span<const uint64_t> input);         // client_masked_input.cc
  absl::StatusOr<UnmaskingResponse> UnmaskingStage(const UnmaskingRequest& request);  // client_unmasking.cc

  ClientStage stage() const { return stage_; }
  ParticipantId self() const { return self_; }
  const std::string& session_id() const { return session_id_; }
  // Ends the session: secrets are wiped, every later call is FAILED_PRECONDITION.
  void Abort();

 private:
  SecAggClient(SessionParams params, ParticipantId self);
  absl::Status ExpectStage(ClientStage expected) const;
  // Aborts and returns `s` (for error paths).
  absl::Status Fail(absl::Status s);

  const SessionParams params_;
  const ParticipantId self_;
  const std::string session_id_;
  const NeighbourGraph graph_;
  ClientStage stage_ = ClientStage::kAdvertiseKeys;

  std::optional<X25519KeyPair> c_key_;
  std::optional<X25519KeyPair> s_key_;
  std::optional<SecretBytes> seed_b_;
  std::map<ParticipantId, AdvertiseKeys> neighbour_keys_;  // U1 among the neighbours
  // Shares this client holds for each neighbour that shared keys with it (U2 among neighbours).
  std::map<ParticipantId, ShamirShare> held_key_shares_;
  std::map<ParticipantId, ShamirShare> held_seed_shares_;
};

}  // namespace tessera::security::secagg
