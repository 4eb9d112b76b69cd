// The wire encoding of SecAgg+ stage requests and replies (tessera.v1.SecAggRequest /
// SecAggReply). Transports carry these bytes opaquely; everything parsed here is untrusted:
// malformed bytes, keys of the wrong length or out-of-range ids are INVALID_ARGUMENT.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "security/secagg/messages.h"

namespace tessera::security::secagg {

std::string SerializeRequest(const StageRequest& request);
absl::StatusOr<StageRequest> ParseRequest(std::string_view bytes);
std::string SerializeReply(const StageReply& reply);
absl::StatusOr<StageReply> ParseReply(std::string_view bytes);

}  // namespace tessera::security::secagg
