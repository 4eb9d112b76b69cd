// Secret byte strings and the CSPRNG.
//
// Every key, seed, share and mask that Tessera's secure aggregation handles lives in a
// SecretBytes (or a vector with CleansingAllocator) so that it is overwritten with OPENSSL_cleanse
// when it is freed. Never log the contents of either.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::security {

// OPENSSL_cleanse, callable without including OpenSSL headers.
void Cleanse(void* p, size_t n);

// A std::allocator that wipes memory before returning it, so that copies and reallocations of a
// vector of secrets leave nothing behind on the heap.
template <typename T>
struct CleansingAllocator {
  using value_type = T;
  CleansingAllocator() = default;
  template <typename U>
  CleansingAllocator(const CleansingAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, size_t n) noexcept {
    Cleanse(p, n * sizeof(T));
    std::allocator<T>().deallocate(p, n);
  }
  template <typename U>
  bool operator==(const CleansingAllocator<U>&) const noexcept {
    return true;
  }
};

// A vector of secret 64-bit words (Shamir share values, mask words) that wipes itself when freed.
using SecretU64Vector = std::vector<uint64_t, CleansingAllocator<uint64_t>>;

// An owned secret byte string: OPENSSL_cleanse'd on destruction and when overwritten by a move.
// Move-only; its size is fixed at construction, so the buffer never reallocates (a reallocation
// would leave an unwiped copy). It is a contiguous range, so it converts to
// std::span<const uint8_t> where a function takes one. Not thread-safe.
class SecretBytes {
 public:
  SecretBytes() = default;
  // `size` zero bytes.
  explicit SecretBytes(size_t size) : bytes_(size) {}
  static SecretBytes Copy(std::span<const uint8_t> bytes) {
    SecretBytes s(bytes.size());
    std::copy(bytes.begin(), bytes.end(), s.bytes_.begin());
    return s;
  }

  ~SecretBytes() { Wipe(); }
  SecretBytes(SecretBytes&& other) noexcept : bytes_(std::exchange(other.bytes_, {})) {}
  SecretBytes& operator=(SecretBytes&& other) noexcept {
    if (this != &other) {
      Wipe();
      bytes_ = std::exchange(other.bytes_, {});
    }
    return *this;
  }
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  uint8_t* data() { return bytes_.data(); }
  const uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  std::span<uint8_t> span() { return bytes_; }
  std::span<const uint8_t> span() const { return bytes_; }
  uint8_t* begin() { return bytes_.data(); }
  uint8_t* end() { return bytes_.data() + bytes_.size(); }
  const uint8_t* begin() const { return bytes_.data(); }
  const uint8_t* end() const { return bytes_.data() + bytes_.size(); }

  // Constant-time comparison of contents (CRYPTO_memcmp); sizes are not secret.
  friend bool operator==(const SecretBytes& a, const SecretBytes& b);

 private:
  void Wipe() {
    if (!bytes_.empty()) Cleanse(bytes_.data(), bytes_.size());
  }

  std::vector<uint8_t> bytes_;
};

// Fills `out` from OpenSSL's CSPRNG (RAND_bytes). INTERNAL if the generator fails (it is then not
// seeded; never fall back to anything weaker). Thread-safe.
absl::Status RandomBytes(std::span<uint8_t> out);

// A uniform 64-bit value from RandomBytes. Thread-safe.
absl::StatusOr<uint64_t> RandomUint64();

}  // namespace tessera::security
