// The messages of a round as the cores see them (transport-free, no proto types).
// Shared by coordinator/, client/ and simulations/.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/ids.h"
#include "core/tensor.h"

namespace tessera::core {

using Metrics = std::map<std::string, double>;

// Identifies one client's work in one round; results are idempotent by task_id.
struct RoundRef {
  std::string run_id;
  RoundNumber round = 0;
  std::string task_id;
  bool operator==(const RoundRef&) const = default;
};

// How clients personalize, chosen per federation (client/personalizer.h does the work).
enum class PersonalizationMode { kNone, kFinetune, kFedPer, kDitto };

struct PersonalizationSpec {
  PersonalizationMode mode = PersonalizationMode::kNone;
  // finetune: SGD steps on the received global model after each round; ditto: steps of the
  // personal model per round (0: the round's local epochs).
  int steps = 0;
  double ditto_lambda = 0;  // ditto: proximal weight toward the global model
  // fedper: tensors whose name starts with one of these stay on the client; never uploaded.
  std::vector<std::string> private_layers;
  bool operator==(const PersonalizationSpec&) const = default;
};

// "none" | "finetune" | "fedper" | "ditto"; INVALID_ARGUMENT for another name.
absl::StatusOr<PersonalizationMode> ParsePersonalizationMode(std::string_view name);
std::string_view PersonalizationModeName(PersonalizationMode mode);
// Whether tensor `name` is private under `spec` (fedper only).
bool IsPrivateTensor(const PersonalizationSpec& spec, std::string_view name);
// The tensors of `weights` that are federated under `spec` (all of them unless fedper).
ModelWeights SharedTensors(const ModelWeights& weights, const PersonalizationSpec& spec);
// `base` with every tensor that `update` has (by name) taken from `update`.
ModelWeights MergeTensors(ModelWeights base, const ModelWeights& update);
// INVALID_ARGUMENT for settings that cannot work: negative steps, lambda or mu; ditto without
// lambda; fedper together with secure aggregation (its sum covers every layer).
absl::Status ValidatePersonalization(const PersonalizationSpec& spec, double proximal_mu, bool secure_aggregation);
// fedper's default private layers: the model's last layer (the prefix of its last tensor,
// e.g. "fc3." for fc3.weight / fc3.bias).
std::vector<std::string> LastLayerPrefix(const ModelWeights& weights);

// What a client does locally in a round.
struct TrainConfig {
  int local_epochs = 1;
  int batch_size = 10;
  double learning_rate = 0.05;
  uint64_t seed = 0;  // the client derives its shuffling stream from (seed, round, client)
  int max_steps = 0;         // > 0: stop after this many SGD steps (before the epochs end)
  double proximal_mu = 0;    // FedProx (Li et al. 2020): + mu/2 ||w - global||^2 in the local loss
  PersonalizationSpec personalization;
};

// A round with secure aggregation: what a sampled client needs to take part in the SecAgg+
// session (security/secagg/). Plain data, so that core stays free of the protocol.
struct SecureAggregationSpec {
  std::vector<std::string> participants;  // the round's sampled client ids; participant p = [p - 1]
  uint32_t self = 0;                      // this client's participant id (1..n)
  int neighbours = 0;                     // k
  int threshold = 0;                      // t
  uint64_t graph_seed = 0;
  int modulus_bits = 64;
  double clip = 1.0;     // fixed point: each coordinate of the update (a delta) clipped to [-clip, clip]
  int bits = 16;         // quantization bits per coordinate
  int64_t weight_cap = 1 << 16;  // num_examples is capped to this
  int vector_length = 0;         // elements of the masked vector (model floats + 1 for the weight
                                 // + 1 for the unclipped bit when dp.report_unclipped)
  absl::Duration stage_deadline = absl::Minutes(2);
};

// Differential privacy asked of the client: clip the update (delta) to this L2 norm.
struct ClientDpSpec {
  double clip_norm = 0;          // 0: no clipping
  bool report_unclipped = false;  // adaptive clipping: report whether ||update|| <= clip_norm
};

// The metric a client reports for adaptive clipping in plaintext rounds (1 or 0).
inline constexpr char kUnclippedMetric[] = "dp_unclipped";

struct TrainTask {
  RoundRef ref;
  ModelVersion model_version = 0;
  uint64_t model_bytes = 0;   // size of the serialized model the download streams
  std::string model_sha256;   // 32 raw bytes
  TrainConfig config;
  absl::Time deadline = absl::InfiniteFuture();
  std::optional<SecureAggregationSpec> secure_aggregation;  // set: the result goes through SecAgg+
  ClientDpSpec dp;
};

// A client's result: its locally trained weights, the examples it trained on, its metrics.
struct TrainResult {
  RoundRef ref;
  int64_t num_examples = 0;
  Metrics metrics;
  ModelWeights weights;
};

struct RegisterReply {
  std::string run_id;
  absl::Duration heartbeat_interval = absl::Seconds(5);
};

struct PullTaskReply {
  std::optional<TrainTask> task;
  bool run_finished = false;
  absl::Duration retry_after = absl::Seconds(1);
};

struct UploadAck {
  bool duplicate = false;  // accepted earlier; this acknowledges the first submission
  RoundNumber accepted_round = 0;
};

}  // namespace tessera::core
