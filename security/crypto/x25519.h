// X25519 key agreement (RFC 7748) through OpenSSL's EVP_PKEY interface.
//
// SecAgg clients make two key pairs per session: `c` (encrypts the Shamir shares relayed by the
// server) and `s` (derives pairwise masks). The raw shared secret from Agree() is never a key by
// itself: derive keys from it with HkdfSha256, binding the session and both parties in `info`.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "security/crypto/secure_bytes.h"

typedef struct evp_pkey_st EVP_PKEY;  // NOLINT: OpenSSL's forward declaration

namespace tessera::security {

inline constexpr size_t kX25519KeyBytes = 32;
using PublicKey = std::array<uint8_t, kX25519KeyBytes>;

// An X25519 private key and its public key. Move-only. The const methods may be called from
// several threads at once.
class X25519KeyPair {
 public:
  // A fresh key pair from OpenSSL's CSPRNG. INTERNAL if OpenSSL fails.
  static absl::StatusOr<X25519KeyPair> Generate();
  // The key pair of the raw 32-byte private key `priv32` (e.g. one reconstructed from Shamir
  // shares). INVALID_ARGUMENT unless it is 32 bytes.
  static absl::StatusOr<X25519KeyPair> FromPrivate(std::span<const uint8_t> priv32);

  X25519KeyPair(X25519KeyPair&&) noexcept;
  X25519KeyPair& operator=(X25519KeyPair&&) noexcept;
  X25519KeyPair(const X25519KeyPair&) = delete;
  X25519KeyPair& operator=(const X25519KeyPair&) = delete;
  ~X25519KeyPair();

  const PublicKey& public_key() const { return public_key_; }
  // A copy of the raw 32-byte private key, for Shamir sharing. Wiped when the copy is destroyed.
  // (Empty only if OpenSSL fails to export it, which it does not for X25519 keys.)
  SecretBytes private_key() const;

  // The raw 32-byte X25519 shared secret with `peer`'s public key. INVALID_ARGUMENT when the peer
  // key is malformed or of small order (the shared secret would be all zero, RFC 7748 section
  // 6.1), which is what a peer (or a server relaying keys) that tries to force a known secret
  // sends. INTERNAL for an OpenSSL failure.
  absl::StatusOr<SecretBytes> Agree(const PublicKey& peer) const;

 private:
  struct PkeyDeleter {
    void operator()(EVP_PKEY* p) const;
  };
  X25519KeyPair(std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey, const PublicKey& pub);
  static absl::StatusOr<X25519KeyPair> FromPkey(std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey);

  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey_;  // never null except when moved from
  PublicKey public_key_{};
};

}  // namespace tessera::security
