// Stage 2 of the client: open the shares addressed to it, then mask the input with the self
// mask PRG(b) and, for each neighbour v that shared keys, +PRG(s_uv) if u > v else -PRG(s_uv).
#include "core/status.h"
#include "core/strings.h"
#include "security/crypto/aead.h"
#include "security/secagg/client.h"

namespace tessera::security::secagg {

using core::StrCat;

absl::StatusOr<MaskedInput> SecAggClient::MaskedInputStage(const SharesForClient& shares,
                                                           std::span<const uint64_t> input) {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ClientStage::kMaskedInput));
  if (static_cast<int>(input.size()) != params_.vector_length) {
    return Fail(absl::InvalidArgumentError(StrCat("input has ", input.size(), " elements, the session expects ",
                                                  params_.vector_length)));
  }
  const uint64_t mask = params_.modulus_mask();
  for (uint64_t v : input) {
    if (v > mask) return Fail(absl::InvalidArgumentError("input element outside the modulus"));
  }
  for (const auto& [sender, sealed] : shares.sealed_shares) {
    auto keys = neighbour_keys_.find(sender);
    if (keys == neighbour_keys_.end()) {
      return Fail(absl::InvalidArgumentError(StrCat("shares from ", sender, ", who did not advertise keys to ", self_)));
    }
    auto key = ShareKey(*c_key_, self_, keys->second.c_pk, sender, session_id_);
    if (!key.ok()) return Fail(key.status());
    auto plaintext = AeadOpen(key->span(), ShareAad(session_id_, params_.round, sender, self_), sealed);
    if (!plaintext.ok()) {
      return Fail(absl::DataLossError(StrCat("shares from ", sender, " do not authenticate: ", plaintext.status().message())));
    }
    auto pair = DecodeSharePair(plaintext->span());
    if (!pair.ok()) return Fail(pair.status());
    if (pair->first.x != self_ || pair->second.x != self_) {
      return Fail(absl::InvalidArgumentError(StrCat("shares from ", sender, " are not addressed to ", self_)));
    }
    held_key_shares_[sender] = std::move(pair->first);
    held_seed_shares_[sender] = std::move(pair->second);
  }
  if (static_cast<int>(held_key_shares_.size()) < params_.threshold) {
    return Fail(absl::AbortedError(StrCat("only ", held_key_shares_.size(), " neighbours shared keys, threshold is ",
                                          params_.threshold)));
  }

  MaskedInput out;
  out.masked.assign(input.begin(), input.end());
  auto self_key = SelfMaskKey(seed_b_->span(), self_, session_id_);
  if (!self_key.ok()) return Fail(self_key.status());
  if (absl::Status s = ApplyMask(out.masked, self_key->span(), /*add=*/true, mask); !s.ok()) return Fail(s);
  for (const auto& [peer, unused] : held_key_shares_) {
    auto key = PairwiseMaskKey(*s_key_, self_, neighbour_keys_.at(peer).s_pk, peer, session_id_);
    if (!key.ok()) return Fail(key.status());
    if (absl::Status s = ApplyMask(out.masked, key->span(), /*add=*/self_ > peer, mask); !s.ok()) return Fail(s);
  }
  stage_ = ClientStage::kUnmasking;
  return out;
}

}  // namespace tessera::security::secagg
