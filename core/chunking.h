// Chunked transfer of one serialized blob (a model or a result) of any size.
//
// The sender declares the total length and SHA-256 up front and sends the bytes in order; the
// receiver refuses, before allocating, a declared size above its limit (RESOURCE_EXHAUSTED), and
// refuses chunks that overrun the declared size (INVALID_ARGUMENT), arrive out of order
// (INVALID_ARGUMENT), stop short (DATA_LOSS) or hash to another digest (DATA_LOSS).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/sha256.h"

namespace tessera::core {

inline constexpr size_t kDefaultChunkBytes = size_t{1} << 20;

// The [offset, offset + size) ranges that cover `total` bytes in chunks of at most chunk_bytes.
struct ChunkRange {
  uint64_t offset;
  uint64_t size;
};
std::vector<ChunkRange> SplitIntoChunks(uint64_t total, size_t chunk_bytes = kDefaultChunkBytes);

// Reassembles a blob from in-order chunks. Not thread-safe.
class ChunkAssembler {
 public:
  // `max_bytes` bounds the declared size; `buffer` may be a reused string whose capacity is kept.
  static absl::StatusOr<ChunkAssembler> Begin(uint64_t total_bytes, std::string expected_sha256,
                                              uint64_t max_bytes, std::string buffer = {});
  // The checks of Begin alone, before anything is allocated.
  static absl::Status CheckDeclared(uint64_t total_bytes, const std::string& expected_sha256, uint64_t max_bytes);
  // Continues a transfer whose first bytes are `received` (a resumed upload); the digest still
  // covers the whole blob. INVALID_ARGUMENT when more bytes were received than declared.
  static absl::StatusOr<ChunkAssembler> Resume(uint64_t total_bytes, std::string expected_sha256,
                                               uint64_t max_bytes, std::string received);

  // Appends the chunk that starts at `offset`; it must start where the previous one ended.
  absl::Status Add(uint64_t offset, std::string_view data);
  // Appends the next chunk (for streams that carry no offsets).
  absl::Status Append(std::string_view data) { return Add(received(), data); }
  uint64_t received() const { return blob_.size(); }
  uint64_t total() const { return total_; }

  // The whole blob once every byte arrived and the digest matches.
  absl::StatusOr<std::string> Finish() &&;
  // The bytes received so far (to keep an interrupted transfer for a resume).
  std::string TakeReceived() && { return std::move(blob_); }

 private:
  ChunkAssembler() = default;
  uint64_t total_ = 0;
  std::string expected_sha256_;
  std::string blob_;
};

}  // namespace tessera::core
