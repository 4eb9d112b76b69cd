#include "client/serving/listen_address.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "core/strings.h"

namespace tessera::client::serving {

using core::StrCat;

absl::Status SplitHostPort(const std::string& address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(StrCat("'", address, "' is not host:port"));
  }
  std::string h = address.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  const char* first = address.data() + colon + 1;
  const char* last = address.data() + address.size();
  int p = -1;
  auto [end, ec] = std::from_chars(first, last, p);
  if (ec != std::errc() || end != last || p < 0 || p > 65535) {
    return absl::InvalidArgumentError(StrCat("'", address, "' has no valid port"));
  }
  *host = std::move(h);
  *port = p;
  return absl::OkStatus();
}

absl::Status ProbeListen(const std::string& address) {
  std::string host;
  int port = 0;
  if (absl::Status s = SplitHostPort(address, &host, &port); !s.ok()) return s;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(StrCat("cannot listen on ", address, ": ", gai_strerror(rc)));
  }
  int err = 0;
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    const bool bound = bind(fd, ai->ai_addr, ai->ai_addrlen) == 0;
    err = bound ? 0 : errno;
    close(fd);
    if (bound) break;
  }
  freeaddrinfo(found);
  if (err != 0) return absl::UnavailableError(StrCat("cannot listen on ", address, ": ", std::strerror(err)));
  return absl::OkStatus();
}

}  // namespace tessera::client::serving
