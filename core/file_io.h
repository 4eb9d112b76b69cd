// Whole-file reads and crash-safe writes.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::core {

// NOT_FOUND when the file does not exist; INVALID_ARGUMENT when it exceeds max_bytes.
absl::StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes = size_t{1} << 34);

// Writes `data` to a temporary file beside `path`, fsyncs it, renames it over `path` and fsyncs
// the directory: after a crash at any moment `path` holds either its old or its new content.
// Without `sync` the same holds when the process dies, not when the machine does (no fsync).
absl::Status WriteFileAtomic(const std::string& path, std::string_view data, bool sync = true);

}  // namespace tessera::core
