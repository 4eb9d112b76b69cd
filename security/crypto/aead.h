// AES-256-GCM authenticated encryption, for the Shamir shares that clients exchange through the
// server. A fresh random 12-byte IV per message; the 16-byte tag authenticates ciphertext and AAD.
//
// Sealed layout: iv (12) || ciphertext (same length as the plaintext) || tag (16).
//
// A random 96-bit IV is safe for up to 2^32 messages under one key (NIST SP 800-38D); SecAgg uses
// each key (HKDF of one X25519 agreement, per session and pair) for a handful of messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "security/crypto/secure_bytes.h"

namespace tessera::security {

inline constexpr size_t kAeadKeyBytes = 32;
inline constexpr size_t kAeadIvBytes = 12;
inline constexpr size_t kAeadTagBytes = 16;
inline constexpr size_t kAeadOverheadBytes = kAeadIvBytes + kAeadTagBytes;

// Encrypts and authenticates `plaintext`, and authenticates `aad` (session, round, sender,
// recipient), under `key32`. INVALID_ARGUMENT for a key that is not 32 bytes; INTERNAL if OpenSSL
// or the CSPRNG fails. Thread-safe.
absl::StatusOr<std::vector<uint8_t>> AeadSeal(std::span<const uint8_t> key32,
                                              std::span<const uint8_t> aad,
                                              std::span<const uint8_t> plaintext);

// The plaintext of `sealed` (AeadSeal's output) if its tag verifies under `key32` and `aad`.
// DATA_LOSS when it does not (tampered IV, ciphertext or tag, wrong key, wrong AAD) or `sealed` is
// shorter than kAeadOverheadBytes; no plaintext is released then. INVALID_ARGUMENT for a key that
// is not 32 bytes; INTERNAL if OpenSSL fails. Thread-safe.
absl::StatusOr<SecretBytes> AeadOpen(std::span<const uint8_t> key32, std::span<const uint8_t> aad,
                                     std::span<const uint8_t> sealed);

}  // namespace tessera::security
