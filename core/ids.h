// Strong ids for values that cross interfaces.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

namespace tessera::core {

// A client's identity: the id it registers with (bound to its certificate under mTLS).
struct ClientId {
  std::string value;
  auto operator<=>(const ClientId&) const = default;
};
inline std::ostream& operator<<(std::ostream& os, const ClientId& id) { return os << id.value; }

// Rounds are numbered from 1; 0 means "no round".
using RoundNumber = uint64_t;
// Global model versions: version 0 is the initial model; round r that completes publishes a new
// version, so versions only move forward.
using ModelVersion = uint64_t;

}  // namespace tessera::core

template <>
struct std::hash<tessera::core::ClientId> {
  size_t operator()(const tessera::core::ClientId& id) const noexcept {
    return std::hash<std::string>()(id.value);
  }
};
