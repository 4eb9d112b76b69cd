#include "security/crypto/x25519.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "security/crypto/openssl_util.h"

namespace tessera::security {

using internal::EvpPkeyCtxPtr;
using internal::OpenSslError;

void X25519KeyPair::PkeyDeleter::operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }

X25519KeyPair::X25519KeyPair(std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey, const PublicKey& pub)
    : pkey_(std::move(pkey)), public_key_(pub) {}
X25519KeyPair::X25519KeyPair(X25519KeyPair&&) noexcept = default;
X25519KeyPair& X25519KeyPair::operator=(X25519KeyPair&&) noexcept = default;
X25519KeyPair::~X25519KeyPair() = default;  // EVP_PKEY_free wipes the private key

absl::StatusOr<X25519KeyPair> X25519KeyPair::FromPkey(std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey) {
  PublicKey pub{};
  size_t len = pub.size();
  if (EVP_PKEY_get_raw_public_key(pkey.get(), pub.data(), &len) != 1 || len != pub.size()) {
    return OpenSslError(absl::StatusCode::kInternal, "X25519: cannot export the public key");
  }
  return X25519KeyPair(std::move(pkey), pub);
}

absl::StatusOr<X25519KeyPair> X25519KeyPair::Generate() {
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, nullptr));
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) != 1) {
    return OpenSslError(absl::StatusCode::kInternal, "X25519: keygen init failed");
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return OpenSslError(absl::StatusCode::kInternal, "X25519: keygen failed");
  }
  return FromPkey(std::unique_ptr<EVP_PKEY, PkeyDeleter>(raw));
}

absl::StatusOr<X25519KeyPair> X25519KeyPair::FromPrivate(std::span<const uint8_t> priv32) {
  if (priv32.size() != kX25519KeyBytes) {
    return absl::InvalidArgumentError("X25519: a private key has 32 bytes");
  }
  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(
      EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, priv32.data(), priv32.size()));
  if (pkey == nullptr) {
    return OpenSslError(absl::StatusCode::kInternal, "X25519: cannot import the private key");
  }
  return FromPkey(std::move(pkey));
}

SecretBytes X25519KeyPair::private_key() const {
  SecretBytes out(kX25519KeyBytes);
  size_t len = out.size();
  if (pkey_ == nullptr || EVP_PKEY_get_raw_private_key(pkey_.get(), out.data(), &len) != 1 ||
      len != kX25519KeyBytes) {
    ERR_clear_error();
    return SecretBytes();
  }
  return out;
}

absl::StatusOr<SecretBytes> X25519KeyPair::Agree(const PublicKey& peer) const {
  if (pkey_ == nullptr) return absl::FailedPreconditionError("X25519: key pair was moved from");
  std::unique_ptr<EVP_PKEY, PkeyDeleter> peer_key(
      EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer.data(), peer.size()));
  if (peer_key == nullptr) {
    return OpenSslError(absl::StatusCode::kInvalidArgument, "X25519: malformed peer public key");
  }
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new(pkey_.get(), nullptr));
  if (ctx == nullptr || EVP_PKEY_derive_init(ctx.get()) != 1) {
    return OpenSslError(absl::StatusCode::kInternal, "X25519: derive init failed");
  }
  if (EVP_PKEY_derive_set_peer(ctx.get(), peer_key.get()) != 1) {
    return OpenSslError(absl::StatusCode::kInvalidArgument, "X25519: peer public key refused");
  }
  SecretBytes secret(kX25519KeyBytes);
  size_t len = secret.size();
  // OpenSSL's X25519 derive fails when the result is all zero (a small-order peer point).
  if (EVP_PKEY_derive(ctx.get(), secret.data(), &len) != 1) {
    return OpenSslError(absl::StatusCode::kInvalidArgument,
                        "X25519: peer public key has small order (all-zero shared secret)");
  }
  if (len != kX25519KeyBytes) {
    return absl::InternalError("X25519: shared secret of unexpected length");
  }
  // Belt and braces, in case a provider does not check: refuse the all-zero secret, in constant
  // time.
  uint8_t any = 0;
  for (uint8_t b : secret.span()) any |= b;
  if (any == 0) {
    return absl::InvalidArgumentError(
        "X25519: peer public key has small order (all-zero shared secret)");
  }
  return secret;
}

}  // namespace tessera::security
