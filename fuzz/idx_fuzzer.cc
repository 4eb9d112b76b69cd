// client::ParseIdx of arbitrary bytes as images (rank 3) and as labels (rank 1): a dataset file
// from a download or a user's disk. Inputs that start with the gzip magic also go through
// client::ReadMaybeGzippedFile (via an in-memory file; the inflater has no in-memory entry point)
// and the inflated bytes through ParseIdx. Beyond "never crash, hang or leak": failures carry the
// documented codes, an array that parses holds exactly product(dims) bytes, and inflation never
// exceeds its limit.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "client/data/idx_reader.h"
#include "fuzz/fuzz_check.h"

namespace {

// Small, so that a hostile gzip bomb is cut short quickly (the production limit is 2 GiB).
constexpr size_t kMaxInflatedBytes = size_t{1} << 20;

void CheckParse(std::string_view bytes) {
  for (int rank : {1, 3}) {
    auto array = tessera::client::ParseIdx(bytes, rank, "fuzz-input");
    if (!array.ok()) {
      FUZZ_CHECK(absl::IsInvalidArgument(array.status()) || absl::IsDataLoss(array.status()));
      continue;
    }
    FUZZ_CHECK(array->dims.size() == static_cast<size_t>(rank));
    uint64_t numel = 1;
    for (int64_t d : array->dims) {
      FUZZ_CHECK(d > 0 && d <= int64_t{UINT32_MAX});
      numel *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(array->data.size() == numel);
    FUZZ_CHECK(bytes.size() == 4 + 4 * static_cast<size_t>(rank) + numel);
  }
}

// One memfd, rewritten for every input, named by its /proc path.
int MemFd() {
  static const int fd = [] {
    int f = memfd_create("idx_fuzzer", MFD_CLOEXEC);
    if (f < 0) std::abort();
    return f;
  }();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  CheckParse(bytes);
  if (size < 2 || data[0] != 0x1f || data[1] != 0x8b) return 0;

  const int fd = MemFd();
  FUZZ_CHECK(ftruncate(fd, 0) == 0);
  FUZZ_CHECK(pwrite(fd, data, size, 0) == static_cast<ssize_t>(size));
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  for (size_t limit : {kMaxInflatedBytes, size_t{64}}) {
    auto inflated = tessera::client::ReadMaybeGzippedFile(path, limit);
    if (!inflated.ok()) {
      FUZZ_CHECK(absl::IsDataLoss(inflated.status()) ||
                 absl::IsResourceExhausted(inflated.status()));
      continue;
    }
    FUZZ_CHECK(inflated->size() <= limit);
    if (limit == kMaxInflatedBytes) CheckParse(*inflated);
  }
  return 0;
}
