// A named spdlog logger per module. Never log keys, masks, raw weights or user data.
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace tessera::core {

// The logger named `name`, created on first use (thread-safe), writing to stderr.
std::shared_ptr<spdlog::logger> Logger(const std::string& name);

// Sets the level of every Tessera logger ("trace" ... "off"); INVALID_ARGUMENT-free: an unknown
// name leaves the level unchanged and returns false.
bool SetLogLevel(const std::string& level);

}  // namespace tessera::core
