// security::ParseShare of arbitrary bytes (a Shamir share recovered from a sealed SecAgg+ message
// whose sender may be malicious). Beyond "never crash, hang or leak": a share that parses meets
// every documented bound and serializes back to exactly the input bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz/fuzz_check.h"
#include "security/secagg/shamir.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tessera::security;  // NOLINT
  auto share = ParseShare(std::span<const uint8_t>(data, size));
  if (!share.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(share.status()));
    return 0;
  }
  FUZZ_CHECK(share->x != 0);
  FUZZ_CHECK(!share->y.empty() && share->y.size() <= kMaxShamirSecretBytes / 4);
  FUZZ_CHECK(size == 8 + 8 * share->y.size());
  for (uint64_t y : share->y) FUZZ_CHECK(y < kShamirPrime);
  SecretBytes again = SerializeShare(*share);
  std::span<const uint8_t> s = again.span();
  FUZZ_CHECK(std::equal(s.begin(), s.end(), data, data + size));
  return 0;
}
