#include "aggregation/fedavg.h"

#include <cmath>

#include "core/status.h"
#include "core/strings.h"

namespace tessera::aggregation {

using core::DType;
using core::ModelWeights;

void WeightedAccumulate(std::span<float> acc, std::span<const float> x, float w) {
  float* __restrict a = acc.data();
  const float* __restrict u = x.data();
  const size_t n = acc.size();
  // A plain loop the compiler vectorizes; memory-bound at the limit of the machine.
  for (size_t i = 0; i < n; ++i) a[i] += w * u[i];
}

FedAvgAggregator::FedAvgAggregator(const ModelWeights& layout) {
  sum_.tensors.reserve(layout.tensors.size());
  for (const auto& t : layout.tensors) sum_.tensors.emplace_back(t.name(), t.shape(), t.dtype());
}

absl::Status FedAvgAggregator::Accumulate(const WeightedUpdate& update) {
  TESSERA_RETURN_IF_ERROR(CheckUpdate(update, sum_));
  const float w = static_cast<float>(update.weight);
  for (size_t i = 0; i < sum_.tensors.size(); ++i) {
    auto& acc = sum_.tensors[i];
    const auto& u = update.weights.tensors[i];
    if (acc.dtype() == DType::kFloat32) {
      WeightedAccumulate(acc.mutable_f32(), u.f32(), w);
    } else if (num_updates_ == 0) {
      std::copy(u.bytes().begin(), u.bytes().end(), acc.mutable_bytes().begin());
    }
  }
  total_weight_ += update.weight;
  ++num_updates_;
  return absl::OkStatus();
}

absl::Status FedAvgAggregator::MergeWith(Aggregator&& other) {
  auto* o = dynamic_cast<FedAvgAggregator*>(&other);
  if (o == nullptr) return absl::InvalidArgumentError("can only merge a FedAvgAggregator");
  TESSERA_RETURN_IF_ERROR(o->sum_.CheckSameLayout(sum_));
  for (size_t i = 0; i < sum_.tensors.size(); ++i) {
    auto& acc = sum_.tensors[i];
    if (acc.dtype() == DType::kFloat32) {
      WeightedAccumulate(acc.mutable_f32(), o->sum_.tensors[i].f32(), 1.0f);
    } else if (num_updates_ == 0) {
      acc = o->sum_.tensors[i];
    }
  }
  total_weight_ += o->total_weight_;
  num_updates_ += o->num_updates_;
  o->num_updates_ = 0;
  o->total_weight_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<ModelWeights> FedAvgAggregator::Report() && {
  if (num_updates_ == 0) return absl::FailedPreconditionError("no update was accumulated");
  const float inv = static_cast<float>(1.0 / total_weight_);
  for (auto& t : sum_.tensors) {
    if (t.dtype() != DType::kFloat32) continue;
    for (float& v : t.mutable_f32()) v *= inv;
  }
  num_updates_ = 0;
  return std::move(sum_);
}

absl::StatusOr<ModelWeights> ReferenceWeightedMean(const std::vector<const ModelWeights*>& updates,
                                                   const std::vector<double>& weights) {
  if (updates.empty() || updates.size() != weights.size()) {
    return absl::InvalidArgumentError("need as many weights as updates, and at least one");
  }
  double total = 0;
  for (double w : weights) total += w;
  ModelWeights out;
  for (size_t t = 0; t < updates[0]->tensors.size(); ++t) {
    const auto& first = updates[0]->tensors[t];
    if (first.dtype() != DType::kFloat32) {
      out.tensors.push_back(first);
      continue;
    }
    std::vector<float> mean(first.numel());
    for (int64_t i = 0; i < first.numel(); ++i) {
      double s = 0;
      for (size_t k = 0; k < updates.size(); ++k) s += weights[k] * updates[k]->tensors[t].f32()[i];
      mean[i] = static_cast<float>(s / total);
    }
    out.tensors.push_back(core::NamedTensor::FromFloats(first.name(), first.shape(), mean));
  }
  return out;
}

}  // namespace tessera::aggregation
