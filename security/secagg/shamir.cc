#include "security/secagg/shamir.h"

#include <algorithm>
#include <cstring>

#include "core/strings.h"

namespace tessera::security {

namespace {

constexpr uint64_t kP = kShamirPrime;

// Field arithmetic mod p = 2^61 - 1 on values < p.
uint64_t AddModP(uint64_t a, uint64_t b) {
  const uint64_t r = a + b;  // < 2^62
  return r >= kP ? r - kP : r;
}

uint64_t SubModP(uint64_t a, uint64_t b) { return a >= b ? a - b : a + kP - b; }

uint64_t MulModP(uint64_t a, uint64_t b) {
  const __uint128_t z = static_cast<__uint128_t>(a) * b;  // < 2^122
  // 2^61 = 1 (mod p): z = hi * 2^61 + lo = hi + lo.
  uint64_t r = (static_cast<uint64_t>(z) & kP) + static_cast<uint64_t>(z >> 61);  // <= 2p
  r = (r & kP) + (r >> 61);                                                      // <= p + 1
  return r >= kP ? r - kP : r;
}

uint64_t PowModP(uint64_t base, uint64_t exp) {
  uint64_t result = 1;
  while (exp > 0) {
    if (exp & 1) result = MulModP(result, base);
    base = MulModP(base, base);
    exp >>= 1;
  }
  return result;
}

// a^-1 by Fermat's little theorem; a != 0.
uint64_t InvModP(uint64_t a) { return PowModP(a, kP - 2); }

absl::Status CheckSecretBytes(size_t secret_bytes) {
  if (secret_bytes == 0 || secret_bytes % 4 != 0 || secret_bytes > kMaxShamirSecretBytes) {
    return absl::InvalidArgumentError(
        core::StrCat("Shamir: secret length ", secret_bytes,
                     " is not a positive multiple of 4 bytes up to ", kMaxShamirSecretBytes));
  }
  return absl::OkStatus();
}

// Uniform field elements from the CSPRNG: 61 random bits, redrawn when they equal p.
absl::Status RandomFieldElements(std::span<uint64_t> out) {
  absl::Status s =
      RandomBytes(std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size_bytes()));
  if (!s.ok()) return s;
  for (uint64_t& v : out) {
    v &= kP;
    while (v == kP) {
      absl::StatusOr<uint64_t> r = RandomUint64();
      if (!r.ok()) return r.status();
      v = *r & kP;
    }
  }
  return absl::OkStatus();
}

void PutLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetLe32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t GetLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

absl::StatusOr<std::vector<ShamirShare>> ShamirSplit(std::span<const uint8_t> secret, int threshold,
                                                     int num_shares) {
  if (absl::Status s = CheckSecretBytes(secret.size()); !s.ok()) return s;
  if (num_shares < 1 || num_shares > kMaxShamirShares || threshold < 1 || threshold > num_shares) {
    return absl::InvalidArgumentError(
        core::StrCat("Shamir: need 1 <= threshold <= num_shares <= ", kMaxShamirShares, ", got ",
                     threshold, "-of-", num_shares));
  }
  const size_t chunks = secret.size() / 4;
  const size_t t = static_cast<size_t>(threshold);
  // coeffs[k * chunks + c]: coefficient of x^k of chunk c's polynomial; k = 0 is the chunk itself.
  SecretU64Vector coeffs(t * chunks);
  for (size_t c = 0; c < chunks; ++c) coeffs[c] = GetLe32(secret.data() + 4 * c);
  if (absl::Status s = RandomFieldElements(std::span<uint64_t>(coeffs).subspan(chunks)); !s.ok()) {
    return s;
  }
  std::vector<ShamirShare> shares(static_cast<size_t>(num_shares));
  for (int i = 0; i < num_shares; ++i) {
    ShamirShare& share = shares[i];
    share.x = static_cast<uint32_t>(i + 1);
    // Horner's rule, all chunks in step: the chunks' chains are independent, so they overlap in
    // the pipeline instead of waiting on one multiplication's latency after another.
    share.y.assign(coeffs.end() - chunks, coeffs.end());
    for (size_t k = t - 1; k-- > 0;) {
      const uint64_t* a = &coeffs[k * chunks];
      for (size_t c = 0; c < chunks; ++c) share.y[c] = AddModP(MulModP(share.y[c], share.x), a[c]);
    }
  }
  return shares;
}

absl::StatusOr<SecretBytes> ShamirCombine(std::span<const ShamirShare> shares, int threshold,
                                          size_t secret_bytes) {
  if (absl::Status s = CheckSecretBytes(secret_bytes); !s.ok()) return s;
  if (threshold < 1 || threshold > kMaxShamirShares) {
    return absl::InvalidArgumentError(core::StrCat("Shamir: invalid threshold ", threshold));
  }
  if (shares.size() < static_cast<size_t>(threshold)) {
    return absl::InvalidArgumentError(core::StrCat("Shamir: ", shares.size(),
                                                   " shares cannot reconstruct a secret shared ",
                                                   threshold, "-of-n"));
  }
  const size_t chunks = secret_bytes / 4;
  std::vector<uint32_t> xs;
  xs.reserve(shares.size());
  for (const ShamirShare& share : shares) {
    if (share.x == 0) return absl::InvalidArgumentError("Shamir: share with x = 0");
    if (share.y.size() != chunks) {
      return absl::InvalidArgumentError(core::StrCat("Shamir: share x = ", share.x, " has ",
                                                     share.y.size(), " chunks, expected ", chunks));
    }
    for (uint64_t y : share.y) {
      if (y >= kP) {
        return absl::InvalidArgumentError(
            core::StrCat("Shamir: share x = ", share.x, " has a value outside the field"));
      }
    }
    xs.push_back(share.x);
  }
  std::sort(xs.begin(), xs.end());
  if (auto dup = std::adjacent_find(xs.begin(), xs.end()); dup != xs.end()) {
    return absl::InvalidArgumentError(core::StrCat("Shamir: two shares with x = ", *dup));
  }

  // Lagrange coefficients at 0 of the first t shares: l_i = prod_{j != i} x_j / (x_j - x_i), with
  // one inversion for all denominators (Montgomery's trick).
  const size_t t = static_cast<size_t>(threshold);
  std::vector<uint64_t> lagrange(t), den(t), prefix(t);
  for (size_t i = 0; i < t; ++i) {
    uint64_t num = 1;
    uint64_t d = 1;
    for (size_t j = 0; j < t; ++j) {
      if (j == i) continue;
      num = MulModP(num, shares[j].x);
      d = MulModP(d, SubModP(shares[j].x, shares[i].x));
    }
    lagrange[i] = num;
    den[i] = d;  // != 0: the x are distinct and < p
    prefix[i] = i == 0 ? d : MulModP(prefix[i - 1], d);
  }
  uint64_t inv = InvModP(prefix[t - 1]);  // 1 / (den_0 ... den_{t-1})
  for (size_t i = t; i-- > 0;) {
    const uint64_t inv_den = i == 0 ? inv : MulModP(inv, prefix[i - 1]);
    inv = MulModP(inv, den[i]);  // now 1 / (den_0 ... den_{i-1})
    lagrange[i] = MulModP(lagrange[i], inv_den);
  }

  SecretBytes secret(secret_bytes);
  for (size_t c = 0; c < chunks; ++c) {
    uint64_t v = 0;
    for (size_t i = 0; i < t; ++i) v = AddModP(v, MulModP(lagrange[i], shares[i].y[c]));
    if (v >> 32 != 0) {
      return absl::DataLossError(
          "Shamir: reconstructed value out of range: a share is corrupted or does not belong");
    }
    PutLe32(secret.data() + 4 * c, static_cast<uint32_t>(v));
  }
  return secret;
}

SecretBytes SerializeShare(const ShamirShare& share) {
  SecretBytes out(8 + 8 * share.y.size());
  PutLe32(out.data(), share.x);
  PutLe32(out.data() + 4, static_cast<uint32_t>(share.y.size()));
  for (size_t c = 0; c < share.y.size(); ++c) PutLe64(out.data() + 8 + 8 * c, share.y[c]);
  return out;
}

absl::StatusOr<ShamirShare> ParseShare(std::span<const uint8_t> bytes) {
  if (bytes.size() < 8) return absl::InvalidArgumentError("Shamir share: truncated header");
  ShamirShare share;
  share.x = GetLe32(bytes.data());
  const uint32_t chunks = GetLe32(bytes.data() + 4);
  if (chunks == 0 || chunks > kMaxShamirSecretBytes / 4) {
    return absl::InvalidArgumentError(core::StrCat("Shamir share: invalid chunk count ", chunks));
  }
  if (bytes.size() != 8 + 8 * static_cast<size_t>(chunks)) {
    return absl::InvalidArgumentError(core::StrCat("Shamir share: ", bytes.size(),
                                                   " bytes for ", chunks, " chunks"));
  }
  if (share.x == 0) return absl::InvalidArgumentError("Shamir share: x = 0");
  share.y.resize(chunks);
  for (size_t c = 0; c < chunks; ++c) {
    share.y[c] = GetLe64(bytes.data() + 8 + 8 * c);
    if (share.y[c] >= kP) return absl::InvalidArgumentError("Shamir share: value outside the field");
  }
  return share;
}

}  // namespace tessera::security
