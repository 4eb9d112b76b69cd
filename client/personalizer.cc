#include "client/personalizer.h"

#include <filesystem>

#include "core/file_io.h"
#include "core/logging.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::client {

using core::PersonalizationMode;

namespace {
std::string PersonalFile(const std::string& dir) {
  return (std::filesystem::path(dir) / "personal.safetensors").string();
}
}  // namespace

absl::StatusOr<std::unique_ptr<Personalizer>> Personalizer::Open(std::string state_dir) {
  std::unique_ptr<Personalizer> p(new Personalizer(std::move(state_dir)));
  if (p->state_dir_.empty()) return p;
  std::error_code ec;
  std::filesystem::create_directories(p->state_dir_, ec);
  if (ec) return absl::PermissionDeniedError(core::StrCat("cannot create ", p->state_dir_, ": ", ec.message()));
  auto file = core::ReadSafetensorsFile(PersonalFile(p->state_dir_));
  if (absl::IsNotFound(file.status())) return p;
  if (!file.ok()) {
    return absl::DataLossError(core::StrCat("the personal model in ", p->state_dir_, " is damaged: ",
                                            file.status().message()));
  }
  auto mode = core::ParsePersonalizationMode(file->metadata["personalization"]);
  if (!mode.ok()) return absl::DataLossError(core::StrCat("the personal model in ", p->state_dir_, ": ", mode.status().message()));
  p->mode_ = *mode;
  p->round_ = std::strtoull(file->metadata["round"].c_str(), nullptr, 10);
  p->personal_ = std::move(file->weights);
  return p;
}

core::TrainConfig Personalizer::PassConfig(const core::TrainConfig& round, double proximal_mu) {
  core::TrainConfig c = round;
  c.max_steps = round.personalization.steps;
  c.proximal_mu = proximal_mu;
  c.seed = core::DeriveSeed(round.seed, {0x706572736f6eULL /* "person" */});
  return c;
}

core::ModelWeights Personalizer::StartFor(const core::ModelWeights& global,
                                          const core::PersonalizationSpec& spec) const {
  if (spec.mode != PersonalizationMode::kFedPer || !personal_ || mode_ != PersonalizationMode::kFedPer ||
      !personal_->CheckSameLayout(global).ok()) {
    return global;
  }
  core::ModelWeights start = global;
  for (size_t i = 0; i < start.tensors.size(); ++i) {
    if (core::IsPrivateTensor(spec, start.tensors[i].name())) start.tensors[i] = personal_->tensors[i];
  }
  return start;
}

absl::Status Personalizer::AfterRound(const core::ModelWeights& global, const core::ModelWeights& trained,
                                      const core::TrainConfig& config, core::RoundNumber round, Trainer& trainer) {
  const core::PersonalizationSpec& spec = config.personalization;
  switch (spec.mode) {
    case PersonalizationMode::kNone: return absl::OkStatus();
    case PersonalizationMode::kFedPer: personal_ = trained; break;
    case PersonalizationMode::kFinetune: {
      TESSERA_ASSIGN_OR_RETURN(TrainOutput out, trainer.Train(global, PassConfig(config, 0)));
      personal_ = std::move(out.weights);
      break;
    }
    case PersonalizationMode::kDitto: {
      const bool have = personal_ && mode_ == PersonalizationMode::kDitto && personal_->CheckSameLayout(global).ok();
      const core::ModelWeights start = have ? *personal_ : global;
      TESSERA_ASSIGN_OR_RETURN(TrainOutput out, trainer.TrainToward(start, global, PassConfig(config, spec.ditto_lambda)));
      personal_ = std::move(out.weights);
      break;
    }
  }
  mode_ = spec.mode;
  round_ = round;
  return Save();
}

absl::StatusOr<core::ModelWeights> Personalizer::PersonalModel(const core::ModelWeights& global,
                                                               const core::TrainConfig& config,
                                                               Trainer& trainer) const {
  const core::PersonalizationSpec& spec = config.personalization;
  switch (spec.mode) {
    case PersonalizationMode::kNone: return global;
    case PersonalizationMode::kFedPer: return StartFor(global, spec);
    case PersonalizationMode::kFinetune: {
      TESSERA_ASSIGN_OR_RETURN(TrainOutput out, trainer.Train(global, PassConfig(config, 0)));
      return std::move(out.weights);
    }
    case PersonalizationMode::kDitto:
      if (personal_ && mode_ == PersonalizationMode::kDitto && personal_->CheckSameLayout(global).ok()) return *personal_;
      return global;
  }
  return global;
}

absl::Status Personalizer::Save() {
  if (state_dir_.empty() || !personal_) return absl::OkStatus();
  const std::map<std::string, std::string> meta = {
      {"format", "tessera.personal"},
      {"personalization", std::string(core::PersonalizationModeName(mode_))},
      {"round", std::to_string(round_)}};
  // WriteSafetensorsFile writes atomically: a crash leaves the previous personal model.
  return core::WriteSafetensorsFile(PersonalFile(state_dir_), *personal_, meta);
}

}  // namespace tessera::client
