// What both sides of a SecAgg+ session agree on before it starts, and the keys derived from it.
//
// Session id = SHA-256 over the protocol name, run id, round, n, k, t, the graph seed, the
// vector length and modulus, and the sampled client ids in participant order. Deviation from
// SECURITY.md ("and all public keys"): in SecAgg+ a client sees only its neighbours' keys, so it
// could not recompute a hash over all of them; instead every pairwise key derivation binds both
// parties' public keys and ids, and every share ciphertext binds session, sender and recipient.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "security/crypto/secure_bytes.h"
#include "security/crypto/x25519.h"
#include "security/secagg/graph.h"
#include "security/secagg/messages.h"

namespace tessera::security::secagg {

struct SessionParams {
  std::string run_id;
  uint64_t round = 0;
  std::vector<std::string> participants;  // client ids; participant p is participants[p - 1]
  int neighbours = 0;                     // k
  int threshold = 0;                      // t
  uint64_t graph_seed = 0;
  int vector_length = 0;  // elements of each masked input
  int modulus_bits = 64;  // inputs and masks live in Z_{2^modulus_bits}

  int num_participants() const { return static_cast<int>(participants.size()); }
  uint64_t modulus_mask() const { return modulus_bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << modulus_bits) - 1; }
};

// INVALID_ARGUMENT for inconsistent parameters (n < 2, t outside [1, k], bad lengths, ...).
absl::Status ValidateSession(const SessionParams& params);
std::string SessionId(const SessionParams& params);  // 32 raw bytes
NeighbourGraph GraphOf(const SessionParams& params);

// AES-256-GCM key sealing the shares that `sender` sends to `recipient` (HKDF-SHA256 of their
// c-key agreement; the same for both directions).
absl::StatusOr<SecretBytes> ShareKey(const X25519KeyPair& mine, ParticipantId me, const PublicKey& peer_pk,
                                     ParticipantId peer, const std::string& session_id);
// AES-CTR key of the pairwise mask between two participants (HKDF-SHA256 of their s-key
// agreement; symmetric).
absl::StatusOr<SecretBytes> PairwiseMaskKey(const X25519KeyPair& mine, ParticipantId me, const PublicKey& peer_pk,
                                            ParticipantId peer, const std::string& session_id);
// AES-CTR key of participant p's self mask, from its seed b.
absl::StatusOr<SecretBytes> SelfMaskKey(std::span<const uint8_t> seed, ParticipantId p, const std::string& session_id);
// AAD of a share ciphertext: session id, round, sender, recipient.
std::vector<uint8_t> ShareAad(const std::string& session_id, uint64_t round, ParticipantId sender,
                              ParticipantId recipient);

// The plaintext sealed for one recipient: its share of the sender's s_sk and of the sender's b.
SecretBytes EncodeSharePair(const ShamirShare& key_share, const ShamirShare& seed_share);
absl::StatusOr<std::pair<ShamirShare, ShamirShare>> DecodeSharePair(std::span<const uint8_t> bytes);

// acc += sign * PRG(key) (mod 2^modulus_bits), streamed without materializing the mask.
absl::Status ApplyMask(std::span<uint64_t> acc, std::span<const uint8_t> key, bool add, uint64_t modulus_mask);

}  // namespace tessera::security::secagg
