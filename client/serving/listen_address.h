// Listening addresses ("host:port") of the serving transports.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace tessera::client::serving {

// Splits "host:port" (or "[v6]:port") into its parts. INVALID_ARGUMENT when there is no host or
// port, or the port is not a number in [0, 65535].
absl::Status SplitHostPort(const std::string& address, std::string* host, int* port);

// Whether a server could listen on `address` now: binds and closes a socket there (with
// SO_REUSEADDR, without SO_REUSEPORT). INVALID_ARGUMENT as SplitHostPort or for a host that does
// not resolve; UNAVAILABLE "cannot listen on ADDR: <reason>" (e.g. "Address already in use").
// Lets a server refuse a taken port with one clear line before its library logs its own.
absl::Status ProbeListen(const std::string& address);

}  // namespace tessera::client::serving
