#include "core/proto_convert.h"

#include <algorithm>

#include <set>

#include "core/strings.h"
#include "absl/time/time.h"
#include "core/status.h"

namespace tessera::core {
namespace {

v1::DType ToProto(DType d) {
  switch (d) {
    case DType::kFloat32: return v1::DTYPE_FLOAT32;
    case DType::kFloat64: return v1::DTYPE_FLOAT64;
    case DType::kInt64: return v1::DTYPE_INT64;
    case DType::kInt32: return v1::DTYPE_INT32;
    case DType::kUInt8: return v1::DTYPE_UINT8;
  }
  return v1::DTYPE_UNSPECIFIED;
}

absl::StatusOr<DType> FromProto(v1::DType d) {
  switch (d) {
    case v1::DTYPE_FLOAT32: return DType::kFloat32;
    case v1::DTYPE_FLOAT64: return DType::kFloat64;
    case v1::DTYPE_INT64: return DType::kInt64;
    case v1::DTYPE_INT32: return DType::kInt32;
    case v1::DTYPE_UINT8: return DType::kUInt8;
    default: return absl::InvalidArgumentError(StrCat("unknown tensor dtype ", static_cast<int>(d)));
  }
}

}  // namespace

void ToProto(const ModelWeights& weights, v1::Model* out) {
  out->clear_tensors();
  for (const auto& t : weights.tensors) {
    v1::Tensor* p = out->add_tensors();
    p->set_name(t.name());
    for (int64_t d : t.shape()) p->add_shape(d);
    p->set_dtype(ToProto(t.dtype()));
    p->set_data(reinterpret_cast<const char*>(t.bytes().data()), t.byte_size());
  }
}

absl::StatusOr<ModelWeights> FromProto(const v1::Model& model) {
  ModelWeights w;
  w.tensors.reserve(model.tensors_size());
  std::set<std::string_view> names;
  for (const v1::Tensor& p : model.tensors()) {
    if (p.name().empty()) return absl::InvalidArgumentError("tensor with an empty name");
    if (p.name() == "__metadata__") {
      return absl::InvalidArgumentError("'__metadata__' is reserved (safetensors) and cannot name a tensor");
    }
    if (!names.insert(p.name()).second) {
      return absl::InvalidArgumentError(StrCat("duplicate tensor name '", p.name(), "'"));
    }
    TESSERA_ASSIGN_OR_RETURN(DType dtype, FromProto(p.dtype()));
    std::vector<int64_t> shape(p.shape().begin(), p.shape().end());
    TESSERA_ASSIGN_OR_RETURN(NamedTensor t, NamedTensor::FromBytes(p.name(), std::move(shape), dtype, p.data()));
    w.tensors.push_back(std::move(t));
  }
  return w;
}

std::string SerializeModel(const ModelWeights& weights) {
  v1::Model m;
  ToProto(weights, &m);
  return m.SerializeAsString();
}

absl::StatusOr<ModelWeights> ParseModel(std::string_view bytes) {
  v1::Model m;
  if (bytes.size() > INT32_MAX || !m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("model bytes do not parse as tessera.v1.Model");
  }
  return FromProto(m);
}

void ToProto(const RoundRef& ref, v1::RoundRef* out) {
  out->set_run_id(ref.run_id);
  out->set_round(ref.round);
  out->set_task_id(ref.task_id);
}

RoundRef FromProto(const v1::RoundRef& ref) { return {ref.run_id(), ref.round(), ref.task_id()}; }

void ToProto(const TrainConfig& c, v1::TrainConfig* out) {
  out->set_local_epochs(c.local_epochs);
  out->set_batch_size(c.batch_size);
  out->set_learning_rate(c.learning_rate);
  out->set_seed(c.seed);
  out->set_max_steps(static_cast<uint32_t>(std::max(c.max_steps, 0)));
  out->set_proximal_mu(c.proximal_mu);
  const PersonalizationSpec& p = c.personalization;
  if (p.mode != PersonalizationMode::kNone) {
    v1::Personalization* o = out->mutable_personalization();
    o->set_mode(static_cast<v1::Personalization::Mode>(static_cast<int>(p.mode)));
    o->set_steps(static_cast<uint32_t>(std::max(p.steps, 0)));
    o->set_ditto_lambda(p.ditto_lambda);
    for (const auto& l : p.private_layers) o->add_private_layers(l);
  }
}

TrainConfig FromProto(const v1::TrainConfig& c) {
  TrainConfig t{static_cast<int>(c.local_epochs()), static_cast<int>(c.batch_size()), c.learning_rate(), c.seed()};
  t.max_steps = static_cast<int>(std::min<uint32_t>(c.max_steps(), 1u << 30));
  t.proximal_mu = c.proximal_mu();
  if (c.has_personalization()) {
    const auto& p = c.personalization();
    // An unknown mode from a newer coordinator is read as none: the client then does what a
    // client without personalization does.
    const int mode = static_cast<int>(p.mode());
    t.personalization.mode = mode >= 0 && mode <= 3 ? static_cast<PersonalizationMode>(mode) : PersonalizationMode::kNone;
    t.personalization.steps = static_cast<int>(std::min<uint32_t>(p.steps(), 1u << 30));
    t.personalization.ditto_lambda = p.ditto_lambda();
    t.personalization.private_layers.assign(p.private_layers().begin(), p.private_layers().end());
  }
  return t;
}

void ToProto(const TrainTask& task, v1::TrainTask* out) {
  ToProto(task.ref, out->mutable_ref());
  out->set_model_version(task.model_version);
  out->set_model_bytes(task.model_bytes);
  out->set_model_sha256(task.model_sha256);
  ToProto(task.config, out->mutable_config());
  out->set_deadline_unix_ms(task.deadline == absl::InfiniteFuture() ? 0 : absl::ToUnixMillis(task.deadline));
  out->set_dp_clip_norm(task.dp.clip_norm);
  out->set_dp_report_unclipped(task.dp.report_unclipped);
  if (task.secure_aggregation) {
    const SecureAggregationSpec& a = *task.secure_aggregation;
    v1::SecureAggregationSpec* p = out->mutable_secure_aggregation();
    for (const auto& id : a.participants) p->add_participants(id);
    p->set_self(a.self);
    p->set_neighbours(a.neighbours);
    p->set_threshold(a.threshold);
    p->set_graph_seed(a.graph_seed);
    p->set_modulus_bits(a.modulus_bits);
    p->set_clip(a.clip);
    p->set_bits(a.bits);
    p->set_weight_cap(a.weight_cap);
    p->set_vector_length(a.vector_length);
    p->set_stage_deadline_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(a.stage_deadline)));
  }
}

TrainTask FromProto(const v1::TrainTask& p) {
  TrainTask t;
  t.ref = FromProto(p.ref());
  t.model_version = p.model_version();
  t.model_bytes = p.model_bytes();
  t.model_sha256 = p.model_sha256();
  t.config = FromProto(p.config());
  t.deadline = p.deadline_unix_ms() == 0 ? absl::InfiniteFuture() : absl::FromUnixMillis(p.deadline_unix_ms());
  t.dp.clip_norm = p.dp_clip_norm();
  t.dp.report_unclipped = p.dp_report_unclipped();
  if (p.has_secure_aggregation()) {
    const v1::SecureAggregationSpec& a = p.secure_aggregation();
    SecureAggregationSpec spec;
    spec.participants.assign(a.participants().begin(), a.participants().end());
    spec.self = a.self();
    spec.neighbours = a.neighbours();
    spec.threshold = a.threshold();
    spec.graph_seed = a.graph_seed();
    spec.modulus_bits = a.modulus_bits();
    spec.clip = a.clip();
    spec.bits = a.bits();
    spec.weight_cap = a.weight_cap();
    spec.vector_length = a.vector_length();
    spec.stage_deadline = absl::Milliseconds(a.stage_deadline_ms());
    t.secure_aggregation = std::move(spec);
  }
  return t;
}

}  // namespace tessera::core
