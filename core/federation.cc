#include "core/federation.h"

#include "core/strings.h"

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
