// core::ParseModel of arbitrary bytes (a model upload or download as it arrives from the network).
// Beyond "never crash, hang or leak": a model that parses satisfies FromProto's contract
// (non-empty unique names, data sizes that match the shapes) and survives SerializeModel.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "core/proto_convert.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"

namespace {

using tessera::core::DTypeSize;
using tessera::core::ModelWeights;

void CheckContract(const ModelWeights& w) {
  std::set<std::string> names;
  for (const auto& t : w.tensors) {
    FUZZ_CHECK(!t.name().empty());
    FUZZ_CHECK(names.insert(t.name()).second);
    uint64_t numel = 1;
    for (int64_t d : t.shape()) {
      FUZZ_CHECK(d >= 0);
      numel *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(t.byte_size() == numel * DTypeSize(t.dtype()));
  }
}

bool SameWeights(const ModelWeights& a, const ModelWeights& b) {
  if (a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& x = a.tensors[i];
    const auto& y = b.tensors[i];
    if (!x.SameLayout(y) || !std::equal(x.bytes().begin(), x.bytes().end(), y.bytes().begin(),
                                        y.bytes().end())) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // protobuf logs every string field with invalid UTF-8 it refuses; that is expected here.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto model = tessera::core::ParseModel(bytes);
  if (!model.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(model.status()));
    return 0;
  }
  CheckContract(*model);
  auto again = tessera::core::ParseModel(tessera::core::SerializeModel(*model));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(SameWeights(*model, *again));
  return 0;
}
