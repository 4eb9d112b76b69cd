#include "core/federation.h"

#include "core/strings.h"

#include <cmath>

namespace tessera::core {

absl::StatusOr<PersonalizationMode> ParsePersonalizationMode(std::string_view name) {
  if (name == "none" || name.empty()) return PersonalizationMode::kNone;
  if (name == "finetune") return PersonalizationMode::kFinetune;
  if (name == "fedper") return PersonalizationMode::kFedPer;
  if (name == "ditto") return PersonalizationMode::kDitto;
  return absl::InvalidArgumentError(StrCat("personalization must be none, finetune, fedper or ditto, not '", name, "'"));
}

std::string_view PersonalizationModeName(PersonalizationMode mode) {
  switch (mode) {
    case PersonalizationMode::kNone: return "none";
    case PersonalizationMode::kFinetune: return "finetune";
    case PersonalizationMode::kFedPer: return "fedper";
    case PersonalizationMode::kDitto: return "ditto";
  }
  return "none";
}

bool IsPrivateTensor(const PersonalizationSpec& spec, std::string_view name) {
  if (spec.mode != PersonalizationMode::kFedPer) return false;
  for (const std::string& prefix : spec.private_layers) {
    if (!prefix.empty() && name.substr(0, prefix.size()) == prefix) return true;
  }
  return false;
}

absl::Status ValidatePersonalization(const PersonalizationSpec& spec, double proximal_mu, bool secure_aggregation) {
  if (!(proximal_mu >= 0) || !std::isfinite(proximal_mu)) {
    return absl::InvalidArgumentError("--proximal-mu must be finite and not negative");
  }
  if (spec.steps < 0) return absl::InvalidArgumentError("--personalization-steps must not be negative");
  if (!(spec.ditto_lambda >= 0) || !std::isfinite(spec.ditto_lambda)) {
    return absl::InvalidArgumentError("--ditto-lambda must be finite and not negative");
  }
  if (spec.mode == PersonalizationMode::kDitto && spec.ditto_lambda <= 0) {
    return absl::InvalidArgumentError("ditto needs --ditto-lambda > 0 (its pull toward the global model)");
  }
  if (spec.mode == PersonalizationMode::kFinetune && spec.steps <= 0) {
    return absl::InvalidArgumentError("finetune needs --personalization-steps > 0");
  }
  if (spec.mode == PersonalizationMode::kFedPer && secure_aggregation) {
    return absl::InvalidArgumentError("fedper keeps layers private, which secure aggregation's sum cannot skip");
  }
  if (spec.mode != PersonalizationMode::kFedPer && !spec.private_layers.empty()) {
    return absl::InvalidArgumentError("--private-layers is for fedper only");
  }
  return absl::OkStatus();
}

ModelWeights SharedTensors(const ModelWeights& weights, const PersonalizationSpec& spec) {
  ModelWeights out;
  for (const NamedTensor& t : weights.tensors) {
    if (!IsPrivateTensor(spec, t.name())) out.tensors.push_back(t);
  }
  return out;
}

ModelWeights MergeTensors(ModelWeights base, const ModelWeights& update) {
  for (NamedTensor& t : base.tensors) {
    if (const NamedTensor* u = update.Find(t.name()); u != nullptr) t = *u;
  }
  return base;
}

std::vector<std::string> LastLayerPrefix(const ModelWeights& weights) {
  if (weights.tensors.empty()) return {};
  const std::string& last = weights.tensors.back().name();
  const size_t dot = last.rfind('.');
  return {dot == std::string::npos ? last : last.substr(0, dot + 1)};
}

}  // namespace tessera::core
