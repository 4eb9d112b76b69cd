// The mask PRG of secure aggregation: the AES-256-CTR keystream of a 32-byte key, read as
// little-endian 64-bit words.
//
// The IV (initial counter block) is zero. That is safe because every key is used for exactly one
// stream: mask keys come from HKDF with the session id and the (sender, recipient) pair or the
// self-mask seed's owner in `info`, so no (key, counter) pair ever repeats across streams.
//
// Not thread-safe; one MaskPrg per thread. A MaskPrg is a position in the stream: consecutive
// calls continue where the previous one stopped, so Fill(a); Fill(b) gives the same words as one
// Fill over a and b. A moved-from MaskPrg may only be destroyed or assigned to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "security/crypto/secure_bytes.h"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;  // NOLINT: OpenSSL's forward declaration

namespace tessera::security {

inline constexpr size_t kMaskPrgKeyBytes = 32;

class MaskPrg {
 public:
  // The stream of `key32` from its start. INVALID_ARGUMENT unless the key has 32 bytes; INTERNAL
  // if OpenSSL fails.
  static absl::StatusOr<MaskPrg> Create(std::span<const uint8_t> key32);

  MaskPrg(MaskPrg&&) noexcept;
  MaskPrg& operator=(MaskPrg&&) noexcept;
  MaskPrg(const MaskPrg&) = delete;
  MaskPrg& operator=(const MaskPrg&) = delete;
  ~MaskPrg();  // wipes the key schedule and the block buffer

  // Overwrites `out` with the next out.size() keystream words.
  void Fill(std::span<uint64_t> out);

  // acc[i] = (acc[i] + w_i) & modulus_mask and acc[i] = (acc[i] - w_i) & modulus_mask for the next
  // acc.size() keystream words w_i: adding / removing a mask mod 2^k with modulus_mask = 2^k - 1
  // (~0 for k = 64; see ModulusMask in security/secagg/fixed_point.h). Memory beyond `acc` is
  // O(1): the stream is generated block by block into a reused buffer.
  void AddTo(std::span<uint64_t> acc, uint64_t modulus_mask);
  void SubtractFrom(std::span<uint64_t> acc, uint64_t modulus_mask);

 private:
  struct CtxDeleter {
    void operator()(EVP_CIPHER_CTX* p) const;
  };
  explicit MaskPrg(std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter> ctx);
  // Writes n_bytes of keystream to out; n_bytes <= kBlockBytes.
  void Keystream(uint8_t* out, size_t n_bytes);
  template <typename Op>
  void Combine(std::span<uint64_t> acc, Op op);

  std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter> ctx_;
  SecretU64Vector block_;  // scratch for AddTo / SubtractFrom, wiped when freed
};

}  // namespace tessera::security
