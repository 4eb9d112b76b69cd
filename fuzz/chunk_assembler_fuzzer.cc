// core::ChunkAssembler driven by an untrusted peer: the input is a declared total, a digest and a
// sequence of (offset, chunk) operations, then Finish. A plain reference model of the contract in
// core/chunking.h predicts every status; the assembler must agree with it and never allocate from
// a declared size above its (small) limit.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/chunking.h"
#include "core/sha256.h"
#include "fuzz/fuzz_check.h"

namespace {

constexpr uint64_t kMaxBytes = 4096;

enum class Op : uint8_t { kAddAtEnd, kAddAtOffset, kAppend, kMaxValue = kAppend };

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // Either an honest sender (the declared total and digest are those of all the chunks, so the
  // happy path is reachable), or any total (mostly around the limit) and a "digest" of any length.
  const bool honest = in.ConsumeBool();
  uint64_t total = 0;
  std::string digest;
  if (!honest) {
    total = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, 2 * kMaxBytes)
                             : in.ConsumeIntegral<uint64_t>();
    digest = in.ConsumeBytesAsString(in.ConsumeIntegralInRange(0, 40));
  }
  std::string reused_buffer = in.ConsumeBytesAsString(in.ConsumeIntegralInRange(0, 16));

  struct Step {
    Op op;
    uint64_t offset;
    std::string chunk;
  };
  std::vector<Step> steps;
  std::string all_chunks;
  while (in.remaining_bytes() > 0 && steps.size() < 64) {
    Step s;
    s.op = in.ConsumeEnum<Op>();
    s.offset = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, 2 * kMaxBytes)
                                : in.ConsumeIntegral<uint64_t>();
    s.chunk = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(0, 1024));
    all_chunks += s.chunk;
    steps.push_back(std::move(s));
  }
  if (honest) {
    total = all_chunks.size();
    digest = tessera::core::Sha256Digest(all_chunks);
  }
  std::string expected_blob;  // the reference model: what the assembler must hold

  auto begun = tessera::core::ChunkAssembler::Begin(total, digest, kMaxBytes, reused_buffer);
  if (total > kMaxBytes) {
    FUZZ_CHECK(absl::IsResourceExhausted(begun.status()));
    return 0;
  }
  if (digest.size() != 32) {
    FUZZ_CHECK(absl::IsInvalidArgument(begun.status()));
    return 0;
  }
  FUZZ_CHECK(begun.ok());
  tessera::core::ChunkAssembler assembler = std::move(begun).value();
  FUZZ_CHECK(assembler.total() == total);
  FUZZ_CHECK(assembler.received() == 0);

  for (const Step& s : steps) {
    absl::Status st;
    uint64_t offset = s.offset;
    switch (s.op) {
      case Op::kAddAtEnd: offset = assembler.received(); st = assembler.Add(offset, s.chunk); break;
      case Op::kAddAtOffset: st = assembler.Add(offset, s.chunk); break;
      case Op::kAppend: offset = assembler.received(); st = assembler.Append(s.chunk); break;
    }
    const bool in_order = offset == expected_blob.size();
    const bool fits = s.chunk.size() <= total - expected_blob.size();
    if (in_order && fits) {
      FUZZ_CHECK(st.ok());
      expected_blob += s.chunk;
    } else {
      FUZZ_CHECK(absl::IsInvalidArgument(st));
    }
    FUZZ_CHECK(assembler.received() == expected_blob.size());
  }

  auto blob = std::move(assembler).Finish();
  if (expected_blob.size() != total || tessera::core::Sha256Digest(expected_blob) != digest) {
    FUZZ_CHECK(absl::IsDataLoss(blob.status()));
  } else {
    FUZZ_CHECK(blob.ok());
    FUZZ_CHECK(*blob == expected_blob);
  }
  return 0;
}
