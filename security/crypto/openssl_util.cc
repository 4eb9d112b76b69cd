#include "security/crypto/openssl_util.h"

#include <openssl/err.h>

#include "core/strings.h"

namespace tessera::security::internal {

absl::Status OpenSslError(absl::StatusCode code, std::string_view what) {
  const unsigned long err = ERR_get_error();  // NOLINT(runtime/int): OpenSSL's type
  char buf[256] = "no OpenSSL error queued";
  if (err != 0) ERR_error_string_n(err, buf, sizeof(buf));
  ERR_clear_error();
  return absl::Status(code, core::StrCat(what, ": ", buf));
}

// Intentionally never freed: they are used until the process exits, and freeing them from a
// static destructor could race OpenSSL's own atexit cleanup.
const EVP_CIPHER* Aes256Gcm() {
  static const EVP_CIPHER* const cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return cipher;
}

const EVP_CIPHER* Aes256Ctr() {
  static const EVP_CIPHER* const cipher = EVP_CIPHER_fetch(nullptr, "AES-256-CTR", nullptr);
  return cipher;
}

EVP_KDF* Hkdf() {
  static EVP_KDF* const kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  return kdf;
}

}  // namespace tessera::security::internal
