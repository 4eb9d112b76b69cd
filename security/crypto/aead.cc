#include "security/crypto/aead.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <climits>

#include "security/crypto/openssl_util.h"

namespace tessera::security {

namespace {

using internal::EvpCipherCtxPtr;
using internal::OpenSslError;

// EVP_*Update take int lengths; feed longer inputs in pieces.
constexpr size_t kMaxUpdate = size_t{1} << 30;

// Feeds `in` through `ctx` (encrypting or decrypting as initialised) into `out`; `out` may be null
// for AAD. Returns the number of bytes written, or -1.
int64_t CipherUpdate(EVP_CIPHER_CTX* ctx, uint8_t* out, std::span<const uint8_t> in) {
  int64_t written = 0;
  for (size_t off = 0; off < in.size();) {
    const size_t n = std::min(kMaxUpdate, in.size() - off);
    int len = 0;
    if (EVP_CipherUpdate(ctx, out == nullptr ? nullptr : out + written, &len, in.data() + off,
                         static_cast<int>(n)) != 1) {
      return -1;
    }
    written += len;
    off += n;
  }
  return written;
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> AeadSeal(std::span<const uint8_t> key32,
                                              std::span<const uint8_t> aad,
                                              std::span<const uint8_t> plaintext) {
  if (key32.size() != kAeadKeyBytes) return absl::InvalidArgumentError("AEAD: key must be 32 bytes");
  std::vector<uint8_t> sealed(kAeadOverheadBytes + plaintext.size());
  uint8_t* iv = sealed.data();
  uint8_t* ct = iv + kAeadIvBytes;
  uint8_t* tag = ct + plaintext.size();
  absl::Status s = RandomBytes(std::span<uint8_t>(iv, kAeadIvBytes));
  if (!s.ok()) return s;

  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr || internal::Aes256Gcm() == nullptr ||
      EVP_EncryptInit_ex2(ctx.get(), internal::Aes256Gcm(), key32.data(), iv, nullptr) != 1) {
    return OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM: init failed");
  }
  if (CipherUpdate(ctx.get(), nullptr, aad) < 0) {
    return OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM: AAD failed");
  }
  const int64_t n = CipherUpdate(ctx.get(), ct, plaintext);
  int final_len = 0;
  if (n != static_cast<int64_t>(plaintext.size()) ||
      EVP_EncryptFinal_ex(ctx.get(), ct + n, &final_len) != 1 || final_len != 0 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kAeadTagBytes), tag) !=
          1) {
    return OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM: encryption failed");
  }
  return sealed;
}

absl::StatusOr<SecretBytes> AeadOpen(std::span<const uint8_t> key32, std::span<const uint8_t> aad,
                                     std::span<const uint8_t> sealed) {
  if (key32.size() != kAeadKeyBytes) return absl::InvalidArgumentError("AEAD: key must be 32 bytes");
  if (sealed.size() < kAeadOverheadBytes) {
    return absl::DataLossError("AEAD: sealed message shorter than IV and tag");
  }
  const size_t ct_len = sealed.size() - kAeadOverheadBytes;
  const uint8_t* iv = sealed.data();
  std::span<const uint8_t> ct(iv + kAeadIvBytes, ct_len);
  // EVP_CTRL_AEAD_SET_TAG takes a non-const pointer but only copies from it.
  uint8_t tag[kAeadTagBytes];
  std::copy_n(iv + kAeadIvBytes + ct_len, kAeadTagBytes, tag);

  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr || internal::Aes256Gcm() == nullptr ||
      EVP_DecryptInit_ex2(ctx.get(), internal::Aes256Gcm(), key32.data(), iv, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kAeadTagBytes), tag) !=
          1) {
    return OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM: init failed");
  }
  if (CipherUpdate(ctx.get(), nullptr, aad) < 0) {
    return OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM: AAD failed");
  }
  SecretBytes plaintext(ct_len);  // wiped on every return below, including the failures
  const int64_t n = CipherUpdate(ctx.get(), plaintext.data(), ct);
  if (n != static_cast<int64_t>(ct_len)) {
    return OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM: decryption failed");
  }
  int final_len = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), plaintext.data() + n, &final_len) != 1) {
    ERR_clear_error();
    return absl::DataLossError("AEAD: authentication failed (tampered message, wrong key or AAD)");
  }
  return plaintext;
}

}  // namespace tessera::security
