// safetensors (https://github.com/huggingface/safetensors) encoding of ModelWeights:
// 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the tensor bytes. Readable from Python's safetensors and torch.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace tessera::core {

struct SafetensorsFile {
  ModelWeights weights;
  std::map<std::string, std::string> metadata;
};

std::string EncodeSafetensors(const ModelWeights& weights,
                              const std::map<std::string, std::string>& metadata = {});

// Decodes untrusted bytes: a truncated file, a header longer than the file, bad JSON, unknown
// dtypes, offsets out of range or overlapping, or sizes that disagree with shapes all give
// INVALID_ARGUMENT (DATA_LOSS for a file cut short). Tensors come back in file-offset order.
absl::StatusOr<SafetensorsFile> DecodeSafetensors(std::string_view bytes);

absl::Status WriteSafetensorsFile(const std::string& path, const ModelWeights& weights,
                                  const std::map<std::string, std::string>& metadata = {});
absl::StatusOr<SafetensorsFile> ReadSafetensorsFile(const std::string& path);

}  // namespace tessera::core
