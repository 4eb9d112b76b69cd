// Stage 1 of the client: check the neighbours' keys, draw b, share s_sk and b t-of-k among the
// neighbours, seal each neighbour's pair of shares.
#include <set>

#include "core/status.h"
#include "core/strings.h"
#include "security/crypto/aead.h"
#include "security/secagg/client.h"

namespace tessera::security::secagg {

using core::StrCat;

absl::StatusOr<ShareKeys> SecAggClient::ShareKeysStage(const KeysBroadcast& keys) {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ClientStage::kShareKeys));
  const auto& mine = graph_.Neighbours(self_);
  std::set<PublicKey> seen = {c_key_->public_key(), s_key_->public_key()};
  for (const auto& [peer, k] : keys.neighbours) {
    if (!mine.contains(peer)) {
      return Fail(absl::InvalidArgumentError(StrCat("server sent keys of ", peer, ", not a neighbour of ", self_)));
    }
    if (!seen.insert(k.c_pk).second || !seen.insert(k.s_pk).second) {
      return Fail(absl::InvalidArgumentError("server sent repeated public keys"));
    }
  }
  if (static_cast<int>(keys.neighbours.size()) < params_.threshold) {
    return Fail(absl::AbortedError(StrCat("only ", keys.neighbours.size(), " neighbours advertised keys, threshold is ",
                                          params_.threshold)));
  }
  neighbour_keys_ = keys.neighbours;

  SecretBytes b(32);
  if (absl::Status s = RandomBytes(std::span<uint8_t>(b.data(), b.size())); !s.ok()) return Fail(s);
  seed_b_.emplace(std::move(b));
  SecretBytes s_sk = s_key_->private_key();
  // Shares are indexed by neighbour: share i goes to the i-th neighbour of the broadcast. The
  // evaluation point is the recipient's participant id, so that any t holders can rebuild.
  const int n = params_.num_participants();
  auto key_shares = ShamirSplit(s_sk.span(), params_.threshold, n);
  if (!key_shares.ok()) return Fail(key_shares.status());
  auto seed_shares = ShamirSplit(seed_b_->span(), params_.threshold, n);
  if (!seed_shares.ok()) return Fail(seed_shares.status());

  ShareKeys out;
  for (const auto& [peer, k] : neighbour_keys_) {
    auto key = ShareKey(*c_key_, self_, k.c_pk, peer, session_id_);
    if (!key.ok()) return Fail(key.status());
    const ShamirShare& ks = (*key_shares)[peer - 1];
    const ShamirShare& ss = (*seed_shares)[peer - 1];
    SecretBytes plaintext = EncodeSharePair(ks, ss);
    auto sealed = AeadSeal(key->span(), ShareAad(session_id_, params_.round, self_, peer), plaintext.span());
    if (!sealed.ok()) return Fail(sealed.status());
    out.sealed_shares[peer] = *std::move(sealed);
  }
  // This client's own shares of its secrets are not kept: it never helps rebuild them.
  for (auto& share : *key_shares) std::fill(share.y.begin(), share.y.end(), 0);
  for (auto& share : *seed_shares) std::fill(share.y.begin(), share.y.end(), 0);
  stage_ = ClientStage::kMaskedInput;
  return out;
}

}  // namespace tessera::security::secagg
