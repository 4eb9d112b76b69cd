// ModelStore: the global model's versions. Version 0 is the initial model; each completed round
// publishes the next version. Versions only move forward.
//
// With a directory, each version is written atomically as model_vNNNNNN.safetensors (with its
// round and metrics in the metadata) before it becomes current, so a crash never leaves a
// half-written current model. Thread-safe: Current() may be called from any thread.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "core/federation.h"
#include "core/ids.h"
#include "core/tensor.h"

namespace tessera::coordinator {

// One immutable published version, shared with in-flight downloads.
struct ModelBlob {
  core::ModelVersion version = 0;
  core::RoundNumber round = 0;  // the round that produced it (0 for the initial model)
  std::shared_ptr<const core::ModelWeights> weights;
  std::string serialized;  // tessera.v1.Model bytes, streamed in chunks to clients
  std::string sha256;      // of `serialized`
};

class ModelStore {
 public:
  // `dir` may be empty (in memory only). Writes version 0 when a directory is given.
  static absl::StatusOr<std::unique_ptr<ModelStore>> Create(std::string dir, core::ModelWeights initial,
                                                            const std::string& run_id);
  // Reopens `dir` at `version` (a restarted coordinator): reads its file, which must hold the
  // layout of `layout` and serialize to `expected_sha256`. DATA_LOSS when it does not.
  static absl::StatusOr<std::unique_ptr<ModelStore>> Reopen(std::string dir, const std::string& run_id,
                                                            core::ModelVersion version, core::RoundNumber round,
                                                            const std::string& expected_sha256,
                                                            const core::ModelWeights& layout);

  std::shared_ptr<const ModelBlob> Current() const;
  // Writes and installs version Current()->version + 1.
  absl::Status Publish(core::ModelWeights weights, core::RoundNumber round, const core::Metrics& metrics);
  // Path of a version's file ("" without a directory).
  std::string PathFor(core::ModelVersion version) const;

 private:
  ModelStore(std::string dir, std::string run_id) : dir_(std::move(dir)), run_id_(std::move(run_id)) {}
  // Writes the version's file unless `write` is false (it is already there), then makes it current.
  absl::Status Install(core::ModelVersion version, core::RoundNumber round, core::ModelWeights weights,
                       const core::Metrics& metrics, bool write = true);

  const std::string dir_;
  const std::string run_id_;
  mutable std::mutex mu_;
  std::shared_ptr<const ModelBlob> current_;  // GUARDED_BY(mu_)
};

}  // namespace tessera::coordinator
