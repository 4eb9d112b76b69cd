#include "security/crypto/secure_bytes.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <cstring>

namespace tessera::security {

void Cleanse(void* p, size_t n) { OPENSSL_cleanse(p, n); }

bool operator==(const SecretBytes& a, const SecretBytes& b) {
  if (a.size() != b.size()) return false;
  return a.size() == 0 || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::Status RandomBytes(std::span<uint8_t> out) {
  // RAND_bytes takes an int length.
  constexpr size_t kMaxChunk = static_cast<size_t>(INT_MAX);
  for (size_t off = 0; off < out.size();) {
    const size_t n = std::min(kMaxChunk, out.size() - off);
    if (RAND_bytes(out.data() + off, static_cast<int>(n)) != 1) {
      ERR_clear_error();
      return absl::InternalError("RAND_bytes failed: the CSPRNG is not available");
    }
    off += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> RandomUint64() {
  uint8_t bytes[8];
  absl::Status s = RandomBytes(bytes);
  if (!s.ok()) return s;
  uint64_t v;
  std::memcpy(&v, bytes, sizeof(v));
  OPENSSL_cleanse(bytes, sizeof(bytes));
  return v;
}

}  // namespace tessera::security
