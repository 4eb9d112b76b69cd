// The mask PRG of secure aggregation against the AES-256-CTR limit, measured in the same run.
//
// Prints (a) the raw AES-256-CTR keystream throughput of a plain EVP_EncryptUpdate loop over one
// 16 KiB buffer (what `openssl speed -evp aes-256-ctr -bytes 16384` measures: the limit),
// (b) MaskPrg::Fill, MaskPrg::AddTo and MaskPrg::SubtractFrom over the McMahan CNN's 1,663,370
// uint64 elements (13.3 MB; bytes of mask per second), (c) each one's ratio to (a), and the time
// one CNN-sized mask takes; then, for context, AddMod (the server's sum of masked vectors) and
// EncodeFixedPointInto (into a reused buffer) over the same length. Every figure is the best of several repetitions, which
// interleave the limit and the PRG; buffers are touched before timing. Single-threaded.
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "benchmarks/bench_util.h"
#include "core/rng.h"
#include "security/crypto/prg.h"
#include "security/secagg/fixed_point.h"

namespace tessera::security {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kCnnParameters = 1'663'370;
constexpr int kReps = 40;

using bench::LoadAverage;

// Best (shortest) time of one call of fn, in seconds.
double Best(double& best, const std::function<void()>& fn) {
  const auto start = Clock::now();
  fn();
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  best = std::min(best, s);
  return s;
}

int Main() {
  std::array<uint8_t, 32> key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 37 + 11);
  const size_t n = kCnnParameters;
  const double mask_bytes = static_cast<double>(n * sizeof(uint64_t));

  // (a) The limit: EVP_EncryptUpdate over one 16 KiB buffer, as many bytes as one mask.
  constexpr int kChunk = 16 << 10;
  std::vector<uint8_t> in(kChunk, 0), out(kChunk, 0);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  const uint8_t iv[16] = {};
  if (ctx == nullptr || EVP_EncryptInit_ex(ctx, EVP_aes_256_ctr(), nullptr, key.data(), iv) != 1) {
    std::fprintf(stderr, "EVP init failed\n");
    return 1;
  }
  const size_t limit_iters = (n * sizeof(uint64_t) + kChunk - 1) / kChunk;
  auto limit_loop = [&] {
    int len = 0;
    for (size_t i = 0; i < limit_iters; ++i) {
      EVP_EncryptUpdate(ctx, out.data(), &len, in.data(), kChunk);
    }
  };

  std::vector<uint64_t> buf(n, 1), acc(n, 2), other(n, 3);
  auto prg = MaskPrg::Create(key);
  if (!prg.ok()) {
    std::fprintf(stderr, "%s\n", prg.status().ToString().c_str());
    return 1;
  }
  const uint64_t mask = ModulusMask(64);

  FixedPointConfig config;
  core::Rng rng(1);
  std::vector<float> update(n);
  std::vector<uint64_t> encoded(n + 1, 0);
  for (size_t i = 0; i < n; ++i) update[i] = static_cast<float>(rng.UniformDouble() * 0.2 - 0.1);

  double t_limit = 1e9, t_fill = 1e9, t_add = 1e9, t_sub = 1e9, t_addmod = 1e9, t_encode = 1e9;
  uint64_t sink = 0;
  for (int rep = 0; rep < kReps; ++rep) {
    Best(t_limit, limit_loop);
    Best(t_fill, [&] { prg->Fill(buf); });
    Best(t_add, [&] { prg->AddTo(acc, mask); });
    Best(t_sub, [&] { prg->SubtractFrom(acc, mask); });
    Best(t_addmod, [&] { AddMod(acc, other, 64); });
    Best(t_encode, [&] {
      if (EncodeFixedPointInto(update, 600, config, rng, encoded).ok()) sink += encoded.back();
    });
    sink += buf[rep] + acc[rep] + out[rep];
  }
  EVP_CIPHER_CTX_free(ctx);

  const double limit_gbs = limit_iters * double{kChunk} / t_limit / 1e9;
  auto gbs = [&](double t) { return mask_bytes / t / 1e9; };
  std::printf("secagg_mask_benchmark: %zu uint64 elements (%.1f MB), best of %d, load %s\n", n,
              mask_bytes / 1e6, kReps, LoadAverage().c_str());
  std::printf("aes256ctr_limit_16KiB: %.2f GB/s\n", limit_gbs);
  std::printf("mask_fill_%zu: %.2f GB/s  aes256ctr_limit: %.2f GB/s  ratio: %.2f  (%.3f ms/mask)\n",
              n, gbs(t_fill), limit_gbs, gbs(t_fill) / limit_gbs, t_fill * 1e3);
  std::printf("mask_addto_%zu: %.2f GB/s  aes256ctr_limit: %.2f GB/s  ratio: %.2f  (%.3f ms/mask)\n",
              n, gbs(t_add), limit_gbs, gbs(t_add) / limit_gbs, t_add * 1e3);
  std::printf(
      "mask_subtractfrom_%zu: %.2f GB/s  aes256ctr_limit: %.2f GB/s  ratio: %.2f  (%.3f ms/mask)\n",
      n, gbs(t_sub), limit_gbs, gbs(t_sub) / limit_gbs, t_sub * 1e3);
  std::printf("addmod_%zu: %.2f GB/s of input (%.3f ms)\n", n, gbs(t_addmod), t_addmod * 1e3);
  std::printf("encode_fixed_point_into_%zu: %.3f ms (%.2f G coordinates/s)\n", n, t_encode * 1e3,
              n / t_encode / 1e9);
  return sink == 42 ? 2 : 0;  // keeps the results alive
}

}  // namespace
}  // namespace tessera::security

int main() { return tessera::security::Main(); }
