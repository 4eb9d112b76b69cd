#include "coordinator/model_store.h"

#include <cstdio>
#include <filesystem>

#include "core/proto_convert.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::coordinator {

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Create(std::string dir, core::ModelWeights initial,
                                                               const std::string& run_id) {
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::PermissionDeniedError(core::StrCat("cannot create model directory ", dir, ": ", ec.message()));
  }
  std::unique_ptr<ModelStore> store(new ModelStore(std::move(dir), run_id));
  TESSERA_RETURN_IF_ERROR(store->Install(0, 0, std::move(initial), {}));
  return store;
}

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Reopen(std::string dir, const std::string& run_id,
                                                               core::ModelVersion version, core::RoundNumber round,
                                                               const std::string& expected_sha256,
                                                               const core::ModelWeights& layout) {
  if (dir.empty()) return absl::InvalidArgumentError("reopening a model store needs its directory");
  std::unique_ptr<ModelStore> store(new ModelStore(std::move(dir), run_id));
  const std::string path = store->PathFor(version);
  auto file = core::ReadSafetensorsFile(path);
  if (!file.ok()) {
    return absl::DataLossError(core::StrCat("the current model version ", version, " cannot be read from ", path, ": ",
                                            file.status().message()));
  }
  if (absl::Status s = layout.CheckSameLayout(file->weights); !s.ok()) {
    return absl::FailedPreconditionError(
        core::StrCat(path, " does not have the layout of this coordinator's model: ", s.message()));
  }
  TESSERA_RETURN_IF_ERROR(store->Install(version, round, std::move(file->weights), {}, /*write=*/false));
  if (store->Current()->sha256 != expected_sha256) {
    return absl::DataLossError(core::StrCat(path, " is not the model version ", version, " the state database recorded"));
  }
  return store;
}

std::shared_ptr<const ModelBlob> ModelStore::Current() const {
  std::lock_guard lock(mu_);
  return current_;
}

std::string ModelStore::PathFor(core::ModelVersion version) const {
  if (dir_.empty()) return "";
  char name[64];
  std::snprintf(name, sizeof(name), "model_v%06llu.safetensors", static_cast<unsigned long long>(version));
  return (std::filesystem::path(dir_) / name).string();
}

absl::Status ModelStore::Publish(core::ModelWeights weights, core::RoundNumber round, const core::Metrics& metrics) {
  return Install(Current()->version + 1, round, std::move(weights), metrics);
}

absl::Status ModelStore::Install(core::ModelVersion version, core::RoundNumber round, core::ModelWeights weights,
                                 const core::Metrics& metrics, bool write) {
  auto blob = std::make_shared<ModelBlob>();
  blob->version = version;
  blob->round = round;
  blob->serialized = core::SerializeModel(weights);
  blob->sha256 = core::Sha256Digest(blob->serialized);
  if (!dir_.empty() && write) {
    std::map<std::string, std::string> meta = {{"format", "tessera"},
                                               {"run_id", run_id_},
                                               {"version", std::to_string(version)},
                                               {"round", std::to_string(round)}};
    for (const auto& [k, v] : metrics) meta["metric." + k] = core::StrCat(v);
    TESSERA_RETURN_IF_ERROR(core::WriteSafetensorsFile(PathFor(version), weights, meta));
  }
  blob->weights = std::make_shared<const core::ModelWeights>(std::move(weights));
  std::lock_guard lock(mu_);
  current_ = std::move(blob);
  return absl::OkStatus();
}

}  // namespace tessera::coordinator
