// Deterministic randomness. Every stream is derived from the run's seed and a list of stream
// ids (round, client index, purpose), so a run is reproducible to the bit whatever the thread
// schedule. Not for cryptography: security/ draws from OpenSSL's CSPRNG.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <random>
#include <string_view>

namespace tessera::core {

// SplitMix64 finalizer: a well-mixed 64-bit hash of x.
constexpr uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A 64-bit hash of a string that is the same on every platform and standard library (FNV-1a
// folded through Mix64), for deriving streams from client ids.
constexpr uint64_t StableHash(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return Mix64(h);
}

// Seed of the stream `ids` under `seed`.
inline uint64_t DeriveSeed(uint64_t seed, std::initializer_list<uint64_t> ids) {
  uint64_t h = Mix64(seed);
  for (uint64_t id : ids) h = Mix64(h ^ Mix64(id));
  return h;
}

// A seeded 64-bit generator. Not thread-safe: give each thread its own stream.
class Rng {
 public:
  using result_type = uint64_t;
  explicit Rng(uint64_t seed) : engine_(seed) {}
  Rng(uint64_t seed, std::initializer_list<uint64_t> ids) : engine_(DeriveSeed(seed, ids)) {}

  static constexpr result_type min() { return std::mt19937_64::min(); }
  static constexpr result_type max() { return std::mt19937_64::max(); }
  result_type operator()() { return engine_(); }

  // Uniform in [0, n); n > 0.
  uint64_t Uniform(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(engine_); }
  double UniformDouble() { return std::uniform_real_distribution<double>(0.0, 1.0)(engine_); }

 private:
  std::mt19937_64 engine_;
};

}  // namespace tessera::core
