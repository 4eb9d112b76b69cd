// t-of-n Shamir secret sharing over GF(p), p = 2^61 - 1 (a Mersenne prime: reduction is a shift
// and an add).
//
// A secret of 4m bytes is cut into m little-endian 32-bit chunks; each chunk is the constant term
// of its own random polynomial of degree t - 1 whose other coefficients come from OpenSSL's CSPRNG.
// Share x (x = 1..n) holds the m polynomial values at x. Any t shares determine the secret; t - 1
// shares reveal nothing about it. A chunk is < 2^32 << p, so a reconstructed chunk >= 2^32 is
// evidence of a corrupted or forged share (detected with probability about 1 - 2^-29 per chunk).
//
// Shares are secrets: their values live in wiping vectors (SecretU64Vector) and SerializeShare
// returns SecretBytes. Never log them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "security/crypto/secure_bytes.h"

namespace tessera::security {

inline constexpr uint64_t kShamirPrime = (uint64_t{1} << 61) - 1;
// Upper bound on num_shares (and on the chunk count a parsed share may claim), so that hostile
// parameters cannot ask for unbounded work or memory.
inline constexpr int kMaxShamirShares = 1 << 20;
inline constexpr size_t kMaxShamirSecretBytes = 4096;

struct ShamirShare {
  uint32_t x = 0;      // evaluation point, 1..n
  SecretU64Vector y;   // one field element (< kShamirPrime) per 32-bit chunk of the secret
};

// Splits `secret` into `num_shares` shares (x = 1..num_shares), any `threshold` of which
// reconstruct it. INVALID_ARGUMENT when the secret is empty, longer than kMaxShamirSecretBytes or
// not a multiple of 4 bytes, or unless 1 <= threshold <= num_shares <= kMaxShamirShares; INTERNAL
// if the CSPRNG fails. Cost: num_shares * threshold * secret.size() / 4 multiplications mod p
// (100-of-100 of a 32-byte secret: ~115 us).
// Thread-safe.
absl::StatusOr<std::vector<ShamirShare>> ShamirSplit(std::span<const uint8_t> secret, int threshold,
                                                     int num_shares);

// The secret of `secret_bytes` bytes from shares made with `threshold`: Lagrange interpolation at 0
// over the first `threshold` shares (all shares are validated; the others are not used).
// INVALID_ARGUMENT for fewer than `threshold` shares, threshold < 1, a repeated x, x = 0, a y value
// >= p, a share whose chunk count is not secret_bytes / 4, or secret_bytes not a positive multiple
// of 4 (at most kMaxShamirSecretBytes). DATA_LOSS when a reconstructed chunk is >= 2^32 (the shares
// were corrupted or do not belong together). Cost: O(threshold^2 + threshold * secret_bytes / 4)
// multiplications mod p (100 shares of a 32-byte secret: ~32 us). Thread-safe.
absl::StatusOr<SecretBytes> ShamirCombine(std::span<const ShamirShare> shares, int threshold,
                                          size_t secret_bytes);

// Wire format, little-endian: x (u32) || chunk count m (u32) || y[0..m) (u64 each); 8 + 8m bytes.
SecretBytes SerializeShare(const ShamirShare& share);
// INVALID_ARGUMENT when `bytes` is not exactly that layout with 1 <= m <= kMaxShamirSecretBytes / 4,
// x != 0 and every y < p. Never aborts on any input (it is untrusted).
absl::StatusOr<ShamirShare> ParseShare(std::span<const uint8_t> bytes);

}  // namespace tessera::security
