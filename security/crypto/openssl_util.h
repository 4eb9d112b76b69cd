// RAII owners for OpenSSL handles and the status of a failed OpenSSL call. Internal to
// security/crypto (it includes OpenSSL headers; the public headers do not).
#pragma once

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <memory>
#include <string_view>

#include "absl/status/status.h"

namespace tessera::security::internal {

struct EvpPkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct EvpCipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
struct EvpKdfCtxDeleter {
  void operator()(EVP_KDF_CTX* p) const { EVP_KDF_CTX_free(p); }
};

using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, EvpPkeyCtxDeleter>;
using EvpCipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, EvpCipherCtxDeleter>;
using EvpKdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, EvpKdfCtxDeleter>;

// `code` with "<what>: <first OpenSSL error>", and the thread's OpenSSL error queue cleared (so a
// stale error is not reported by the next, unrelated call). Never includes key material.
absl::Status OpenSslError(absl::StatusCode code, std::string_view what);

// Algorithms fetched once per process (explicit fetches are faster than the implicit fetch behind
// EVP_aes_256_gcm() on every init). They live until exit on purpose. Thread-safe.
const EVP_CIPHER* Aes256Gcm();
const EVP_CIPHER* Aes256Ctr();
EVP_KDF* Hkdf();

}  // namespace tessera::security::internal
