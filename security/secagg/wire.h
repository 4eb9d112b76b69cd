// The wire encoding of SecAgg+ stage requests and replies (tessera.v1.SecAggRequest /
// SecAggReply). Transports carry these bytes opaquely; everything parsed here is untrusted:
// malformed bytes and keys of the wrong length are INVALID_ARGUMENT. Participant ids are not
// checked here (any uint32 parses): the SecAgg server and client stages validate them.
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
