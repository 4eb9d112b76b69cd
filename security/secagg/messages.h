// The messages of the SecAgg+ protocol (Bonawitz et al. 2017; Bell et al. 2020), transport-free.
//
// Participants are numbered 1..n (their Shamir evaluation point) in the order of the round's
// sampled client ids; the coordinator maps client ids to these numbers.
#pragma once

#include <cstdint>
#include <map>
#include <variant>
#include <vector>

#include "security/crypto/x25519.h"
#include "security/secagg/shamir.h"

namespace tessera::security::secagg {

using ParticipantId = uint32_t;  // 1..n

// Stage 0, client -> server.
struct AdvertiseKeys {
  PublicKey c_pk;  // encrypts shares between clients (relayed by the server)
  PublicKey s_pk;  // derives pairwise masks
};

// Stage 0 -> 1, server -> client: the public keys of the client's neighbours that advertised.
struct KeysBroadcast {
  std::map<ParticipantId, AdvertiseKeys> neighbours;
};

// Stage 1, client -> server: for each neighbour, the AES-GCM-sealed pair of shares
// (of the sender's s_sk and b) that only that neighbour can open.
struct ShareKeys {
  std::map<ParticipantId, std::vector<uint8_t>> sealed_shares;  // by recipient
};

// Stage 1 -> 2, server -> client: the sealed shares addressed to the client, by sender.
struct SharesForClient {
  std::map<ParticipantId, std::vector<uint8_t>> sealed_shares;  // by sender
};

// Stage 2, client -> server: the masked, fixed-point encoded input (length: vector_length).
struct MaskedInput {
  std::vector<uint64_t> masked;
};

// Stage 2 -> 3, server -> client: which of the client's neighbours that shared keys (U2) sent
// a masked input (U3) and which dropped.
struct UnmaskingRequest {
  std::vector<ParticipantId> survivors;  // ask for their b shares
  std::vector<ParticipantId> dropped;    // ask for their s_sk shares
};

// Stage 3, client -> server.
struct UnmaskingResponse {
  std::map<ParticipantId, ShamirShare> self_mask_shares;  // b_v shares of survivors v
  std::map<ParticipantId, ShamirShare> key_shares;        // s_v_sk shares of dropped v
};

enum class Stage { kAdvertiseKeys = 0, kShareKeys = 1, kMaskedInput = 2, kUnmasking = 3 };

// What a client sends at a stage, and what the server answers when the stage closes.
struct StageRequest {
  std::variant<AdvertiseKeys, ShareKeys, MaskedInput, UnmaskingResponse> body;
  Stage stage() const { return static_cast<Stage>(body.index()); }
};
struct StageReply {
  // monostate: the session is done for this client (after Unmasking).
  std::variant<KeysBroadcast, SharesForClient, UnmaskingRequest, std::monostate> body;
};

}  // namespace tessera::security::secagg
