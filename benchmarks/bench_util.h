// Helpers shared by the benchmark binaries.
#pragma once

#include <cstdio>
#include <string>

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

}  // namespace tessera::bench
