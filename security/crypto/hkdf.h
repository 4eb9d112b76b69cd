// HKDF-SHA256 (RFC 5869) through OpenSSL 3's EVP_KDF "HKDF".
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "security/crypto/secure_bytes.h"

namespace tessera::security {

inline constexpr size_t kHkdfMaxInfoBytes = 1024;

// `out_len` bytes of HKDF-SHA256 (extract, then expand) of the input keying material `ikm` with
// `salt` (may be empty: RFC 5869 then uses HashLen zero bytes) and the context `info` (protocol,
// session id, sender, recipient, purpose; binding them makes every derived key unique to its use).
// INVALID_ARGUMENT for an empty `ikm`, `info` longer than kHkdfMaxInfoBytes (OpenSSL 3.0's
// limit) or `out_len` not in [1, 255 * 32]; INTERNAL if OpenSSL fails. Thread-safe.
absl::StatusOr<SecretBytes> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                                       std::string_view info, size_t out_len);

}  // namespace tessera::security
