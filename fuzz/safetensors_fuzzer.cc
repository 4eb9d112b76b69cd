// core::DecodeSafetensors of arbitrary bytes (a checkpoint or initial model file from anywhere).
// Beyond "never crash, hang or leak": failures carry the documented codes, and a file that
// decodes re-encodes to one that decodes to the same tensors and metadata.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "core/safetensors.h"
#include "fuzz/fuzz_check.h"

namespace {

using tessera::core::NamedTensor;
using tessera::core::SafetensorsFile;

// By name: several empty tensors may share an offset, so their order is not fixed by the file.
std::map<std::string, const NamedTensor*> ByName(const SafetensorsFile& f) {
  std::map<std::string, const NamedTensor*> out;
  for (const auto& t : f.weights.tensors) out[t.name()] = &t;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto file = tessera::core::DecodeSafetensors(bytes);
  if (!file.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(file.status()) || absl::IsDataLoss(file.status()));
    return 0;
  }
  const auto names = ByName(*file);
  FUZZ_CHECK(names.size() == file->weights.tensors.size());
  for (const auto& [name, t] : names) FUZZ_CHECK(name != "__metadata__");

  auto again = tessera::core::DecodeSafetensors(
      tessera::core::EncodeSafetensors(file->weights, file->metadata));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->metadata == file->metadata);
  const auto names_again = ByName(*again);
  FUZZ_CHECK(names_again.size() == names.size());
  for (const auto& [name, t] : names) {
    auto it = names_again.find(name);
    FUZZ_CHECK(it != names_again.end());
    const NamedTensor* u = it->second;
    FUZZ_CHECK(t->SameLayout(*u));
    FUZZ_CHECK(std::equal(t->bytes().begin(), t->bytes().end(), u->bytes().begin(),
                          u->bytes().end()));
  }
  return 0;
}
