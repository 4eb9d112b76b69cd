#include "security/crypto/hkdf.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "security/crypto/openssl_util.h"

namespace tessera::security {

namespace {
constexpr size_t kSha256Bytes = 32;
}  // namespace

absl::StatusOr<SecretBytes> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                                       std::string_view info, size_t out_len) {
  if (ikm.empty()) return absl::InvalidArgumentError("HKDF: empty input keying material");
  if (info.size() > kHkdfMaxInfoBytes) {
    return absl::InvalidArgumentError("HKDF: info longer than 1024 bytes");
  }
  if (out_len == 0 || out_len > 255 * kSha256Bytes) {
    return absl::InvalidArgumentError("HKDF-SHA256: output length must be in [1, 8160] bytes");
  }
  EVP_KDF* kdf = internal::Hkdf();
  if (kdf == nullptr) return internal::OpenSslError(absl::StatusCode::kInternal, "HKDF: fetch failed");
  internal::EvpKdfCtxPtr ctx(EVP_KDF_CTX_new(kdf));
  if (ctx == nullptr) return internal::OpenSslError(absl::StatusCode::kInternal, "HKDF: no context");

  // OSSL_PARAM takes non-const pointers; OpenSSL only reads these.
  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  size_t n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(ikm.data()), ikm.size());
  if (!salt.empty()) {
    params[n++] = OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(salt.data()), salt.size());
  }
  if (!info.empty()) {
    params[n++] = OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size());
  }
  params[n] = OSSL_PARAM_construct_end();

  SecretBytes out(out_len);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "HKDF-SHA256: derive failed");
  }
  return out;  // EVP_KDF_CTX_free wipes the context's copy of the key
}

}  // namespace tessera::security
