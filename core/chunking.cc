#include "core/chunking.h"

#include "core/strings.h"

namespace tessera::core {

std::vector<ChunkRange> SplitIntoChunks(uint64_t total, size_t chunk_bytes) {
  std::vector<ChunkRange> out;
  if (chunk_bytes == 0) chunk_bytes = kDefaultChunkBytes;
  for (uint64_t off = 0; off < total; off += chunk_bytes) {
    out.push_back({off, std::min<uint64_t>(chunk_bytes, total - off)});
  }
  return out;
}

absl::Status ChunkAssembler::CheckDeclared(uint64_t total_bytes, const std::string& expected_sha256,
                                           uint64_t max_bytes) {
  if (total_bytes > max_bytes) {
    return absl::ResourceExhaustedError(StrCat("declared size ", total_bytes,
                                                     " bytes exceeds the limit of ", max_bytes));
  }
  if (expected_sha256.size() != 32) {
    return absl::InvalidArgumentError("a SHA-256 digest must be 32 bytes");
  }
  return absl::OkStatus();
}

absl::StatusOr<ChunkAssembler> ChunkAssembler::Resume(uint64_t total_bytes, std::string expected_sha256,
                                                      uint64_t max_bytes, std::string received) {
  if (absl::Status s = CheckDeclared(total_bytes, expected_sha256, max_bytes); !s.ok()) return s;
  if (received.size() > total_bytes) {
    return absl::InvalidArgumentError(StrCat("resumed with ", received.size(), " bytes of a ", total_bytes,
                                             "-byte transfer"));
  }
  ChunkAssembler a;
  a.total_ = total_bytes;
  a.expected_sha256_ = std::move(expected_sha256);
  a.blob_ = std::move(received);
  a.blob_.reserve(total_bytes);
  return a;
}

absl::StatusOr<ChunkAssembler> ChunkAssembler::Begin(uint64_t total_bytes, std::string expected_sha256,
                                                     uint64_t max_bytes, std::string buffer) {
  buffer.clear();  // its capacity is kept
  return Resume(total_bytes, std::move(expected_sha256), max_bytes, std::move(buffer));
}

absl::Status ChunkAssembler::Add(uint64_t offset, std::string_view data) {
  if (offset != blob_.size()) {
    return absl::InvalidArgumentError(StrCat("chunk at offset ", offset, " out of order: expected offset ",
                                                   blob_.size()));
  }
  if (data.size() > total_ - blob_.size()) {
    return absl::InvalidArgumentError(StrCat("chunks overrun the declared size of ", total_, " bytes"));
  }
  blob_.append(data);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ChunkAssembler::Finish() && {
  if (blob_.size() != total_) {
    return absl::DataLossError(StrCat("transfer truncated: ", blob_.size(), " of ", total_, " bytes"));
  }
  if (Sha256Digest(blob_) != expected_sha256_) {
    return absl::DataLossError("transfer corrupted: SHA-256 does not match");
  }
  return std::move(blob_);
}

}  // namespace tessera::core
