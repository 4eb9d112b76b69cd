// Helpers shared by the benchmark binaries.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/tensor.h"

namespace tessera::bench {

// The first three fields of /proc/loadavg: these machines are shared, and other load lowers
// every figure (the ratios less so, since both sides of a ratio are measured together).
inline std::string LoadAverage() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "unknown";
  char buf[64] = {0};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  std::string s(buf, n);
  size_t pos = 0;
  for (int field = 0; field < 3 && pos != std::string::npos; ++field) pos = s.find(' ', pos + 1);
  return s.substr(0, pos);
}

namespace internal {
// The value in kB of `field` ("VmRSS:", "VmHWM:") in /proc/self/status, in bytes; 0 if unknown.
inline int64_t StatusBytes(const char* field) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  long long kib = 0;
  const size_t len = std::strlen(field);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, field, len) == 0 && std::sscanf(line + len, " %lld", &kib) == 1) break;
  }
  std::fclose(f);
  return static_cast<int64_t>(kib) * 1024;
}
}  // namespace internal

// The process's resident set (VmRSS) and its peak (VmHWM) in bytes.
inline int64_t ResidentBytes() { return internal::StatusBytes("VmRSS:"); }
inline int64_t PeakResidentBytes() { return internal::StatusBytes("VmHWM:"); }

// Fills every float tensor of `m` with distinct, cheap-to-make values in [-1, 1) from `k`;
// writing every element pre-faults the buffers.
inline void FillDistinct(core::ModelWeights& m, int k) {
  uint32_t x = 2654435761u * static_cast<uint32_t>(k + 1);
  for (core::NamedTensor& t : m.tensors) {
    for (float& v : t.mutable_f32()) {
      x = x * 1664525u + 1013904223u;
      v = static_cast<float>(static_cast<int32_t>(x >> 8) - (1 << 23)) * (1.0f / (1 << 23));
    }
  }
}

}  // namespace tessera::bench
