// Personalizer: one client's personal model under the federation's PersonalizationSpec.
//
//   finetune  after each round the received global model is fine-tuned on the local data for
//             spec.steps SGD steps; that is the personal model.
//   fedper    (Arivazhagan et al. 2019) tensors named by spec.private_layers (e.g. the classifier
//             head) never leave the client: each round trains the global shared layers with the
//             client's own private ones, uploads only the shared ones, and keeps the private ones.
//   ditto     (Li et al. 2021) a personal model beside the federated one, trained each round
//             with lambda/2 ||v - global||^2 added to its loss (spec.steps steps, or the round's
//             epochs), starting from where it was.
//
// The personal model is written atomically to `state_dir`/personal.safetensors after every
// round and read back when the client starts again; it is never sent anywhere. Not
// thread-safe: a client's runtime calls it one round at a time.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "client/trainer.h"
#include "core/federation.h"
#include "core/tensor.h"

namespace tessera::client {

class Personalizer {
 public:
  // `state_dir` "" keeps the personal model in memory only. A saved personal model is loaded;
  // DATA_LOSS when the file is damaged (it is not silently replaced).
  static absl::StatusOr<std::unique_ptr<Personalizer>> Open(std::string state_dir);

  // What a round trains from: the global model, with fedper's private tensors replaced by this
  // client's own once it has them.
  core::ModelWeights StartFor(const core::ModelWeights& global, const core::PersonalizationSpec& spec) const;

  // After a round's federated training (`trained`, from StartFor(global)): updates the personal
  // model as the spec says and saves it. `config` is the round's (seed, learning rate, batch).
  absl::Status AfterRound(const core::ModelWeights& global, const core::ModelWeights& trained,
                          const core::TrainConfig& config, core::RoundNumber round, Trainer& trainer);

  // The personal model to serve or evaluate given the latest global model: finetune fine-tunes
  // `global` now; fedper combines its shared layers with the private ones; ditto returns its
  // personal model (the global one before it has any).
  absl::StatusOr<core::ModelWeights> PersonalModel(const core::ModelWeights& global, const core::TrainConfig& config,
                                                   Trainer& trainer) const;

  // The personal model as last saved (nullptr before the first round).
  const core::ModelWeights* saved() const { return personal_ ? &*personal_ : nullptr; }
  core::RoundNumber saved_round() const { return round_; }

 private:
  explicit Personalizer(std::string state_dir) : state_dir_(std::move(state_dir)) {}
  absl::Status Save();
  // The training config of a personalization pass: spec.steps steps if set, the proximal weight.
  static core::TrainConfig PassConfig(const core::TrainConfig& round, double proximal_mu);

  const std::string state_dir_;
  std::optional<core::ModelWeights> personal_;
  core::PersonalizationMode mode_ = core::PersonalizationMode::kNone;  // of `personal_`
  core::RoundNumber round_ = 0;
};

}  // namespace tessera::client
