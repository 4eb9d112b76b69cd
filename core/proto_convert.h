// Conversion between core types and tessera.v1 wire messages. The only place in core that
// knows the proto types; everything it decodes is untrusted.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/federation.h"
#include "core/tensor.h"
#include "tessera/v1/tessera.pb.h"

namespace tessera::core {

// gRPC trailing metadata of an upload the coordinator shed for load (tessera.proto,
// UploadResult): try again no sooner than this many milliseconds.
inline constexpr char kRetryAfterMetadata[] = "tessera-retry-after-ms";

void ToProto(const ModelWeights& weights, v1::Model* out);
// INVALID_ARGUMENT for unknown dtypes, negative shapes, data sizes that disagree with shapes,
// empty, duplicate or reserved ("__metadata__") tensor names.
absl::StatusOr<ModelWeights> FromProto(const v1::Model& model);

// The serialized v1::Model that downloads and uploads stream in chunks.
std::string SerializeModel(const ModelWeights& weights);
absl::StatusOr<ModelWeights> ParseModel(std::string_view bytes);

void ToProto(const RoundRef& ref, v1::RoundRef* out);
RoundRef FromProto(const v1::RoundRef& ref);
void ToProto(const TrainConfig& config, v1::TrainConfig* out);
TrainConfig FromProto(const v1::TrainConfig& config);
void ToProto(const TrainTask& task, v1::TrainTask* out);
TrainTask FromProto(const v1::TrainTask& task);

}  // namespace tessera::core
