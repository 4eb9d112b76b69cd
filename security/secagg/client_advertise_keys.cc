// Stage 0 of the client: two fresh X25519 key pairs.
#include "core/status.h"
#include "security/secagg/client.h"

namespace tessera::security::secagg {

absl::StatusOr<AdvertiseKeys> SecAggClient::AdvertiseKeysStage() {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ClientStage::kAdvertiseKeys));
  auto c = X25519KeyPair::Generate();
  if (!c.ok()) return Fail(c.status());
  auto s = X25519KeyPair::Generate();
  if (!s.ok()) return Fail(s.status());
  c_key_.emplace(*std::move(c));
  s_key_.emplace(*std::move(s));
  stage_ = ClientStage::kShareKeys;
  return AdvertiseKeys{c_key_->public_key(), s_key_->public_key()};
}

}  // namespace tessera::security::secagg
