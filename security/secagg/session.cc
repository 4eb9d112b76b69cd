#include "security/secagg/session.h"

#include <algorithm>

#include "core/sha256.h"
#include "core/status.h"
#include "core/strings.h"
#include "security/crypto/hkdf.h"
#include "security/crypto/prg.h"

namespace tessera::security::secagg {

using core::StrCat;

namespace {
constexpr char kProtocol[] = "tessera/secagg+/v1";

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutBytes(std::string& out, std::string_view bytes) {
  PutU64(out, bytes.size());
  out.append(bytes);
}

// HKDF info binding the purpose, both ids and both public keys, in id order.
std::string PairInfo(std::string_view purpose, ParticipantId a, PublicKey a_pk, ParticipantId b, PublicKey b_pk) {
  if (b < a) {
    std::swap(a, b);
    std::swap(a_pk, b_pk);
  }
  std::string info = StrCat(kProtocol, "/", purpose);
  PutU64(info, a);
  info.append(reinterpret_cast<const char*>(a_pk.data()), a_pk.size());
  PutU64(info, b);
  info.append(reinterpret_cast<const char*>(b_pk.data()), b_pk.size());
  return info;
}

absl::StatusOr<SecretBytes> PairKey(std::string_view purpose, const X25519KeyPair& mine, ParticipantId me,
                                    const PublicKey& peer_pk, ParticipantId peer, const std::string& session_id) {
  if (me == peer) return absl::InvalidArgumentError("a participant has no pairwise key with itself");
  TESSERA_ASSIGN_OR_RETURN(SecretBytes shared, mine.Agree(peer_pk));
  std::string info = PairInfo(purpose, me, mine.public_key(), peer, peer_pk);
  return HkdfSha256(shared.span(),
                    std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(session_id.data()), session_id.size()),
                    info, 32);
}
}  // namespace

absl::Status ValidateSession(const SessionParams& p) {
  const int n = p.num_participants();
  if (n < 2) return absl::InvalidArgumentError(StrCat("a session needs at least 2 participants, got ", n));
  if (p.neighbours < 1) return absl::InvalidArgumentError("a session needs at least 1 neighbour per participant");
  const int k = std::min(p.neighbours + p.neighbours % 2, n - 1);
  if (p.threshold < 1 || p.threshold > k) {
    return absl::InvalidArgumentError(StrCat("threshold ", p.threshold, " must be in [1, ", k, "]"));
  }
  if (p.vector_length < 1) return absl::InvalidArgumentError("vector length must be positive");
  if (p.modulus_bits < 8 || p.modulus_bits > 64) return absl::InvalidArgumentError("modulus bits must be in [8, 64]");
  std::vector<std::string> sorted = p.participants;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return absl::InvalidArgumentError("participant ids must be distinct");
  }
  return absl::OkStatus();
}

std::string SessionId(const SessionParams& p) {
  std::string buf = kProtocol;
  PutBytes(buf, p.run_id);
  PutU64(buf, p.round);
  PutU64(buf, p.participants.size());
  PutU64(buf, static_cast<uint64_t>(p.neighbours));
  PutU64(buf, static_cast<uint64_t>(p.threshold));
  PutU64(buf, p.graph_seed);
  PutU64(buf, static_cast<uint64_t>(p.vector_length));
  PutU64(buf, static_cast<uint64_t>(p.modulus_bits));
  for (const std::string& id : p.participants) PutBytes(buf, id);
  return core::Sha256Digest(buf);
}

NeighbourGraph GraphOf(const SessionParams& p) {
  return NeighbourGraph::Build(p.num_participants(), p.neighbours, p.graph_seed);
}

absl::StatusOr<SecretBytes> ShareKey(const X25519KeyPair& mine, ParticipantId me, const PublicKey& peer_pk,
                                     ParticipantId peer, const std::string& session_id) {
  return PairKey("share-key", mine, me, peer_pk, peer, session_id);
}

absl::StatusOr<SecretBytes> PairwiseMaskKey(const X25519KeyPair& mine, ParticipantId me, const PublicKey& peer_pk,
                                            ParticipantId peer, const std::string& session_id) {
  return PairKey("pairwise-mask", mine, me, peer_pk, peer, session_id);
}

absl::StatusOr<SecretBytes> SelfMaskKey(std::span<const uint8_t> seed, ParticipantId p, const std::string& session_id) {
  std::string info = StrCat(kProtocol, "/self-mask");
  PutU64(info, p);
  return HkdfSha256(seed, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(session_id.data()), session_id.size()),
                    info, 32);
}

std::vector<uint8_t> ShareAad(const std::string& session_id, uint64_t round, ParticipantId sender,
                              ParticipantId recipient) {
  std::string buf = StrCat(kProtocol, "/share");
  PutBytes(buf, session_id);
  PutU64(buf, round);
  PutU64(buf, sender);
  PutU64(buf, recipient);
  return std::vector<uint8_t>(buf.begin(), buf.end());
}

SecretBytes EncodeSharePair(const ShamirShare& key_share, const ShamirShare& seed_share) {
  SecretBytes a = SerializeShare(key_share);
  SecretBytes b = SerializeShare(seed_share);
  SecretBytes out(4 + a.size() + b.size());
  uint8_t* p = out.data();
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>((a.size() >> (8 * i)) & 0xff);
  std::copy(a.span().begin(), a.span().end(), p + 4);
  std::copy(b.span().begin(), b.span().end(), p + 4 + a.size());
  return out;
}

absl::StatusOr<std::pair<ShamirShare, ShamirShare>> DecodeSharePair(std::span<const uint8_t> bytes) {
  if (bytes.size() < 4) return absl::InvalidArgumentError("share pair too short");
  size_t a_len = 0;
  for (int i = 0; i < 4; ++i) a_len |= static_cast<size_t>(bytes[i]) << (8 * i);
  if (a_len > bytes.size() - 4) return absl::InvalidArgumentError("share pair length out of range");
  TESSERA_ASSIGN_OR_RETURN(ShamirShare key_share, ParseShare(bytes.subspan(4, a_len)));
  TESSERA_ASSIGN_OR_RETURN(ShamirShare seed_share, ParseShare(bytes.subspan(4 + a_len)));
  return std::make_pair(std::move(key_share), std::move(seed_share));
}

absl::Status ApplyMask(std::span<uint64_t> acc, std::span<const uint8_t> key, bool add, uint64_t modulus_mask) {
  TESSERA_ASSIGN_OR_RETURN(MaskPrg prg, MaskPrg::Create(key));
  if (add) {
    prg.AddTo(acc, modulus_mask);
  } else {
    prg.SubtractFrom(acc, modulus_mask);
  }
  return absl::OkStatus();
}

}  // namespace tessera::security::secagg
