// ModelCard: what travels with an exported model so that someone without Tessera can use it
// (ARCHITECTURE.md, "State and formats"): the architecture and its input, the preprocessing the
// trainer applied to raw inputs, the class labels, and where the weights came from (run, round,
// version, parent version, contributing clients, metrics, digest).
//
// Plain data plus a JSON encoding ("tessera.model_card/1"); no libtorch. Thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/federation.h"
#include "core/ids.h"

namespace tessera::core {

// The value of ModelCard::format; FromJson refuses any other.
inline constexpr char kModelCardFormat[] = "tessera.model_card/1";

// The framework's version ("0.1.0"), from CMake's project() version.
std::string_view FrameworkVersion();

struct ModelCard {
  // How raw inputs become model inputs: x' = (x * scale - mean) / stddev, per element, in
  // float64 then rounded to float32 (as the data readers do).
  struct Preprocessing {
    double scale = 1.0;
    double mean = 0.0;
    double stddev = 1.0;
    // True when an exported module applies it itself (callers pass raw inputs); false when the
    // caller must apply it before calling the model.
    bool in_module = false;
    bool operator==(const Preprocessing&) const = default;
  };
  // Where an export wrote the model (absent for a card of a stored version).
  struct Export {
    std::string format;  // "torchscript" or "safetensors"
    std::string file;    // the file's name (no directory)
    std::string sha256;  // hex SHA-256 of the file's bytes
    std::string exported_at;  // RFC 3339 UTC
    bool operator==(const Export&) const = default;
  };

  std::string framework_version;  // Tessera's version that wrote the card
  std::string architecture;       // "logreg", "mlp", "cnn" or the TorchScript file's name
  std::vector<int64_t> input_shape;  // one example, without the batch dimension
  std::string input_description;     // e.g. "raw pixel values in [0, 255], float32"
  Preprocessing preprocessing;
  int num_classes = 0;
  std::vector<std::string> class_labels;  // empty or num_classes names, in label order
  std::string dataset;                    // "fashion-mnist" or "" when unknown

  std::string run_id;
  ModelVersion version = 0;
  RoundNumber round = 0;                       // the round that produced it (0: initial model)
  std::optional<ModelVersion> parent_version;  // absent for version 0
  std::optional<int64_t> contributing_clients;  // results folded into it, when known
  Metrics metrics;                              // the version's metrics (server evaluation)
  std::string created_at;                       // RFC 3339 UTC: when the version was written
  std::string weights_file;                     // the version's safetensors file name
  std::string weights_sha256;                   // hex SHA-256 of that file's bytes
  int64_t num_parameters = 0;                   // float elements of the weights
  std::optional<Export> exported;

  bool operator==(const ModelCard&) const = default;
};

// The card as a JSON object (pretty-printed, 2-space indent, keys sorted). Optional fields that
// are absent are written as null.
std::string ModelCardToJson(const ModelCard& card);

// Parses a card. INVALID_ARGUMENT for malformed JSON, another format, a missing or mistyped
// field, or class_labels whose count is neither 0 nor num_classes.
absl::StatusOr<ModelCard> ModelCardFromJson(std::string_view json);

// RFC 3339 UTC, seconds precision ("2026-11-22T18:00:00Z").
std::string FormatUtc(absl::Time t);

}  // namespace tessera::core
