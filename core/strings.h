// String building for messages. Debian's abseil keeps its own string_view type, so absl::StrCat
// does not take std::string_view; these helpers take anything streamable.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace tessera::core {

template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// "[2,3,4]"
inline std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace tessera::core
