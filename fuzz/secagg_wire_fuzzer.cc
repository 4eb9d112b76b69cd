// security::secagg::ParseRequest and ParseReply of arbitrary bytes: every SecAgg+ stage message a
// server receives from a client, and every one a client receives from the server. The same input
// goes to both (protobuf is lenient, so a mutated request is often a valid reply too).
// Beyond "never crash, hang or leak": failures are INVALID_ARGUMENT, and what parses survives
// Serialize -> Parse unchanged.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "security/secagg/wire.h"

namespace {

using namespace tessera::security::secagg;  // NOLINT: a test of this namespace only
using tessera::security::ShamirShare;

bool SameShare(const ShamirShare& a, const ShamirShare& b) { return a.x == b.x && a.y == b.y; }

template <typename K, typename V, typename Eq>
bool SameMap(const std::map<K, V>& a, const std::map<K, V>& b, Eq eq) {
  if (a.size() != b.size()) return false;
  for (auto i = a.begin(), j = b.begin(); i != a.end(); ++i, ++j) {
    if (i->first != j->first || !eq(i->second, j->second)) return false;
  }
  return true;
}

bool SameKeys(const AdvertiseKeys& a, const AdvertiseKeys& b) {
  return a.c_pk == b.c_pk && a.s_pk == b.s_pk;
}

bool SameRequest(const StageRequest& a, const StageRequest& b) {
  if (a.body.index() != b.body.index()) return false;
  switch (a.stage()) {
    case Stage::kAdvertiseKeys: return SameKeys(std::get<0>(a.body), std::get<0>(b.body));
    case Stage::kShareKeys:
      return std::get<1>(a.body).sealed_shares == std::get<1>(b.body).sealed_shares;
    case Stage::kMaskedInput: return std::get<2>(a.body).masked == std::get<2>(b.body).masked;
    case Stage::kUnmasking: {
      const auto& x = std::get<3>(a.body);
      const auto& y = std::get<3>(b.body);
      return SameMap(x.self_mask_shares, y.self_mask_shares, SameShare) &&
             SameMap(x.key_shares, y.key_shares, SameShare);
    }
  }
  return false;
}

bool SameReply(const StageReply& a, const StageReply& b) {
  if (a.body.index() != b.body.index()) return false;
  switch (a.body.index()) {
    case 0:
      return SameMap(std::get<0>(a.body).neighbours, std::get<0>(b.body).neighbours, SameKeys);
    case 1: return std::get<1>(a.body).sealed_shares == std::get<1>(b.body).sealed_shares;
    case 2:
      return std::get<2>(a.body).survivors == std::get<2>(b.body).survivors &&
             std::get<2>(a.body).dropped == std::get<2>(b.body).dropped;
    default: return true;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // refused invalid UTF-8 is expected here
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);

  auto request = ParseRequest(bytes);
  if (request.ok()) {
    auto again = ParseRequest(SerializeRequest(*request));
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(SameRequest(*request, *again));
  } else {
    FUZZ_CHECK(absl::IsInvalidArgument(request.status()));
  }

  auto reply = ParseReply(bytes);
  if (reply.ok()) {
    auto again = ParseReply(SerializeReply(*reply));
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(SameReply(*reply, *again));
  } else {
    FUZZ_CHECK(absl::IsInvalidArgument(reply.status()));
  }
  return 0;
}
