#include "core/chunking.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/proto_convert.h"
#include "core/sha256.h"
#include "core/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"

namespace tessera::core {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

// A float tensor with a deterministic, non-repeating-looking pattern.
NamedTensor PatternTensor(std::string name, std::vector<int64_t> shape, uint32_t salt) {
  NamedTensor t(std::move(name), std::move(shape), DType::kFloat32);
  auto v = t.mutable_f32();
  uint32_t x = salt * 2654435761u + 1;
  for (size_t i = 0; i < v.size(); ++i) {
    x = x * 1664525u + 1013904223u;  // LCG
    // Finite floats of varied magnitude and sign from the top bits.
    v[i] = static_cast<float>(static_cast<int32_t>(x >> 8) - (1 << 23)) * 1e-3f;
  }
  return t;
}

TEST(SplitIntoChunksTest, CoversTheBlobInOrder) {
  const auto chunks = SplitIntoChunks(10 * kMiB + 5, kMiB);
  ASSERT_EQ(chunks.size(), 11u);
  uint64_t next = 0;
  for (const ChunkRange& c : chunks) {
    EXPECT_EQ(c.offset, next);
    EXPECT_GT(c.size, 0u);
    EXPECT_LE(c.size, kMiB);
    next += c.size;
  }
  EXPECT_EQ(next, 10 * kMiB + 5);
  EXPECT_EQ(chunks.back().size, 5u);
}

TEST(SplitIntoChunksTest, EdgeSizes) {
  EXPECT_TRUE(SplitIntoChunks(0, kMiB).empty());
  const auto exact = SplitIntoChunks(3 * kMiB, kMiB);
  ASSERT_EQ(exact.size(), 3u);
  EXPECT_EQ(exact[2].offset, 2 * kMiB);
  EXPECT_EQ(exact[2].size, kMiB);
  const auto one = SplitIntoChunks(1, kMiB);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].size, 1u);
  // chunk_bytes 0 falls back to the default instead of looping forever.
  const auto dflt = SplitIntoChunks(2 * kDefaultChunkBytes + 1, 0);
  ASSERT_EQ(dflt.size(), 3u);
  EXPECT_EQ(dflt[0].size, kDefaultChunkBytes);
}

// A model larger than 64 MiB (protobuf's historical default parse limit) survives
// serialize -> split -> reassemble -> parse bit for bit.
TEST(ChunkingTest, ModelLargerThan64MiBRoundTripsBitExactly) {
  ModelWeights w;
  w.tensors.push_back(PatternTensor("encoder.weight", {4096, 2048}, 1));  // 8M floats
  w.tensors.push_back(PatternTensor("decoder.weight", {2048, 3072}, 2));  // 6M floats
  w.tensors.push_back(PatternTensor("head.weight", {3500000}, 3));        // 3.5M floats
  ASSERT_GT(w.byte_size(), 64 * kMiB);

  const std::string serialized = SerializeModel(w);
  ASSERT_GT(serialized.size(), 64 * kMiB);
  const std::string digest = Sha256Digest(serialized);
  ASSERT_EQ(digest.size(), 32u);

  const auto chunks = SplitIntoChunks(serialized.size(), kMiB);
  EXPECT_EQ(chunks.size(), (serialized.size() + kMiB - 1) / kMiB);
  ASSERT_OK_AND_ASSIGN(ChunkAssembler assembler, ChunkAssembler::Begin(serialized.size(), digest, 128 * kMiB));
  EXPECT_EQ(assembler.total(), serialized.size());
  for (const ChunkRange& c : chunks) {
    ASSERT_OK(assembler.Add(c.offset, std::string_view(serialized).substr(c.offset, c.size)));
  }
  EXPECT_EQ(assembler.received(), serialized.size());
  ASSERT_OK_AND_ASSIGN(std::string blob, std::move(assembler).Finish());
  ASSERT_EQ(blob.size(), serialized.size());
  ASSERT_TRUE(blob == serialized);

  ASSERT_OK_AND_ASSIGN(ModelWeights back, ParseModel(blob));
  ASSERT_EQ(back.tensors.size(), w.tensors.size());
  for (size_t i = 0; i < w.tensors.size(); ++i) {
    SCOPED_TRACE(w.tensors[i].name());
    EXPECT_EQ(back.tensors[i].name(), w.tensors[i].name());
    EXPECT_EQ(back.tensors[i].shape(), w.tensors[i].shape());
    EXPECT_EQ(back.tensors[i].dtype(), DType::kFloat32);
    ASSERT_EQ(back.tensors[i].byte_size(), w.tensors[i].byte_size());
    EXPECT_EQ(std::memcmp(back.tensors[i].bytes().data(), w.tensors[i].bytes().data(), w.tensors[i].byte_size()), 0);
  }
}

TEST(ChunkAssemblerTest, AppendReassemblesAndReusesTheBuffer) {
  const std::string data = "the quick brown fox jumps over the lazy dog";
  std::string buffer = "stale content that must not leak into the blob";
  ASSERT_OK_AND_ASSIGN(ChunkAssembler a, ChunkAssembler::Begin(data.size(), Sha256Digest(data), 1024, std::move(buffer)));
  EXPECT_EQ(a.received(), 0u);
  for (size_t off = 0; off < data.size(); off += 5) ASSERT_OK(a.Append(std::string_view(data).substr(off, 5)));
  ASSERT_OK_AND_ASSIGN(std::string blob, std::move(a).Finish());
  EXPECT_EQ(blob, data);
}

TEST(ChunkAssemblerTest, ResumeContinuesAfterTheBytesReceivedAndTheDigestCoversAll) {
  const std::string data = "the quick brown fox jumps over the lazy dog";
  ASSERT_OK_AND_ASSIGN(ChunkAssembler a, ChunkAssembler::Begin(data.size(), Sha256Digest(data), 1024));
  ASSERT_OK(a.Append(std::string_view(data).substr(0, 17)));
  std::string kept = std::move(a).TakeReceived();
  EXPECT_EQ(kept, data.substr(0, 17));
  ASSERT_OK_AND_ASSIGN(ChunkAssembler b, ChunkAssembler::Resume(data.size(), Sha256Digest(data), 1024, kept));
  EXPECT_EQ(b.received(), 17u);
  EXPECT_CODE(b.Add(0, "x"), absl::StatusCode::kInvalidArgument);  // continues at 17, not 0
  ASSERT_OK(b.Append(std::string_view(data).substr(17)));
  ASSERT_OK_AND_ASSIGN(std::string blob, std::move(b).Finish());
  EXPECT_EQ(blob, data);
  // Resumed from bytes that are not the blob's: the whole-blob digest catches it.
  ASSERT_OK_AND_ASSIGN(ChunkAssembler c, ChunkAssembler::Resume(data.size(), Sha256Digest(data), 1024,
                                                                std::string(17, 'z')));
  ASSERT_OK(c.Append(std::string_view(data).substr(17)));
  EXPECT_CODE(std::move(c).Finish(), absl::StatusCode::kDataLoss);
  // More received than declared is refused.
  EXPECT_CODE(ChunkAssembler::Resume(3, Sha256Digest("abc"), 1024, "abcd"), absl::StatusCode::kInvalidArgument);
}

TEST(ChunkAssemblerTest, EmptyBlob) {
  ASSERT_OK_AND_ASSIGN(ChunkAssembler a, ChunkAssembler::Begin(0, Sha256Digest(""), 0));
  ASSERT_OK_AND_ASSIGN(std::string blob, std::move(a).Finish());
  EXPECT_EQ(blob, "");
}

TEST(ChunkAssemblerTest, DeclaredSizeOverTheLimitIsResourceExhaustedBeforeAllocating) {
  const std::string digest = Sha256Digest("x");
  EXPECT_CODE(ChunkAssembler::Begin(kMiB + 1, digest, kMiB), absl::StatusCode::kResourceExhausted);
  // 4 EiB: reserving it would throw; the limit must be checked first.
  EXPECT_CODE(ChunkAssembler::Begin(uint64_t{1} << 62, digest, 64 * kMiB), absl::StatusCode::kResourceExhausted);
  EXPECT_OK(ChunkAssembler::Begin(kMiB, digest, kMiB));  // exactly the limit is fine
}

TEST(ChunkAssemblerTest, BadDigestLengthIsInvalidArgument) {
  const std::string data = "abc";
  EXPECT_CODE(ChunkAssembler::Begin(3, "", 100), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(ChunkAssembler::Begin(3, Sha256Digest(data).substr(0, 31), 100), absl::StatusCode::kInvalidArgument);
  // Hex is not the raw digest.
  EXPECT_CODE(ChunkAssembler::Begin(3, HexEncode(Sha256Digest(data)), 100), absl::StatusCode::kInvalidArgument);
}

TEST(ChunkAssemblerTest, OutOfOrderChunkIsInvalidArgument) {
  const std::string data(100, 'a');
  ASSERT_OK_AND_ASSIGN(ChunkAssembler a, ChunkAssembler::Begin(data.size(), Sha256Digest(data), 1000));
  EXPECT_CODE(a.Add(10, std::string_view(data).substr(10, 10)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.received(), 0u);
  ASSERT_OK(a.Add(0, std::string_view(data).substr(0, 10)));
  // A repeated chunk and a skipped one.
  EXPECT_CODE(a.Add(0, std::string_view(data).substr(0, 10)), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(a.Add(20, std::string_view(data).substr(20, 10)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.received(), 10u);
  // The stream can go on from where it really is.
  ASSERT_OK(a.Add(10, std::string_view(data).substr(10)));
  EXPECT_OK(std::move(a).Finish());
}

TEST(ChunkAssemblerTest, OverrunIsInvalidArgument) {
  const std::string data = "0123456789";
  ASSERT_OK_AND_ASSIGN(ChunkAssembler a, ChunkAssembler::Begin(data.size(), Sha256Digest(data), 1000));
  EXPECT_CODE(a.Add(0, "0123456789A"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.received(), 0u);
  ASSERT_OK(a.Add(0, "012345"));
  EXPECT_CODE(a.Append("6789A"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.received(), 6u);
  ASSERT_OK(a.Append("6789"));
  EXPECT_CODE(a.Append("x"), absl::StatusCode::kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(std::string blob, std::move(a).Finish());
  EXPECT_EQ(blob, data);
}

TEST(ChunkAssemblerTest, TruncatedTransferIsDataLossAtFinish) {
  const std::string data = "0123456789";
  ASSERT_OK_AND_ASSIGN(ChunkAssembler a, ChunkAssembler::Begin(data.size(), Sha256Digest(data), 1000));
  ASSERT_OK(a.Add(0, "01234"));
  EXPECT_CODE(std::move(a).Finish(), absl::StatusCode::kDataLoss);

  ASSERT_OK_AND_ASSIGN(ChunkAssembler none, ChunkAssembler::Begin(data.size(), Sha256Digest(data), 1000));
  EXPECT_CODE(std::move(none).Finish(), absl::StatusCode::kDataLoss);
}

TEST(ChunkAssemblerTest, FlippedByteIsDataLoss) {
  std::string data(3 * 1000 + 17, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  const std::string digest = Sha256Digest(data);
  std::string corrupted = data;
  corrupted[1234] ^= 0x01;
  ASSERT_OK_AND_ASSIGN(ChunkAssembler a, ChunkAssembler::Begin(data.size(), digest, 1 << 20));
  for (const ChunkRange& c : SplitIntoChunks(corrupted.size(), 1000)) {
    ASSERT_OK(a.Add(c.offset, std::string_view(corrupted).substr(c.offset, c.size)));
  }
  EXPECT_CODE(std::move(a).Finish(), absl::StatusCode::kDataLoss);
}

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(HexEncode(Sha256Digest("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexEncode(Sha256Digest("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.Update("a");
  h.Update("");
  h.Update("bc");
  EXPECT_EQ(h.Finish(), Sha256Digest("abc"));
}

}  // namespace
}  // namespace tessera::core
