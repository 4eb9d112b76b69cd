#include "core/model_card.h"

#include <nlohmann/json.hpp>

#include "absl/time/time.h"
#include "core/strings.h"

#ifndef TESSERA_VERSION
#error "TESSERA_VERSION must be defined by the build (core/CMakeLists.txt)"
#endif

namespace tessera::core {
namespace {

using nlohmann::json;

template <typename T>
json Nullable(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

template <typename T>
std::optional<T> OptionalField(const json& j, const char* key) {
  const json& v = j.at(key);
  if (v.is_null()) return std::nullopt;
  return v.get<T>();
}

}  // namespace

std::string_view FrameworkVersion() { return TESSERA_VERSION; }

std::string FormatUtc(absl::Time t) { return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone()); }

std::string ModelCardToJson(const ModelCard& c) {
  json metrics = json::object();
  for (const auto& [k, v] : c.metrics) metrics[k] = v;
  json exported = nullptr;
  if (c.exported) {
    exported = {{"format", c.exported->format},
                {"file", c.exported->file},
                {"sha256", c.exported->sha256},
                {"exported_at", c.exported->exported_at}};
  }
  const auto& p = c.preprocessing;
  json j = {
      {"format", kModelCardFormat},
      {"framework_version", c.framework_version},
      {"architecture", c.architecture},
      {"input", {{"shape", c.input_shape}, {"dtype", "float32"}, {"description", c.input_description}}},
      {"preprocessing",
       {{"formula", "x' = (x * scale - mean) / stddev"},
        {"scale", p.scale},
        {"mean", p.mean},
        {"stddev", p.stddev},
        {"in_module", p.in_module}}},
      {"output", {{"description", "logits [batch, num_classes]"}, {"num_classes", c.num_classes}}},
      {"class_labels", c.class_labels},
      {"dataset", c.dataset},
      {"run_id", c.run_id},
      {"version", c.version},
      {"round", c.round},
      {"parent_version", Nullable(c.parent_version)},
      {"contributing_clients", Nullable(c.contributing_clients)},
      {"metrics", metrics},
      {"created_at", c.created_at},
      {"weights", {{"file", c.weights_file}, {"sha256", c.weights_sha256}, {"num_parameters", c.num_parameters}}},
      {"export", exported},
  };
  return j.dump(2);
}

absl::StatusOr<ModelCard> ModelCardFromJson(std::string_view text) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::InvalidArgumentError("a model card must be a JSON object");
  try {
    if (j.at("format").get<std::string>() != kModelCardFormat) {
      return absl::InvalidArgumentError(
          StrCat("unknown model card format '", j.at("format").get<std::string>(), "', expected ", kModelCardFormat));
    }
    ModelCard c;
    c.framework_version = j.at("framework_version").get<std::string>();
    c.architecture = j.at("architecture").get<std::string>();
    const json& input = j.at("input");
    c.input_shape = input.at("shape").get<std::vector<int64_t>>();
    c.input_description = input.at("description").get<std::string>();
    const json& p = j.at("preprocessing");
    c.preprocessing.scale = p.at("scale").get<double>();
    c.preprocessing.mean = p.at("mean").get<double>();
    c.preprocessing.stddev = p.at("stddev").get<double>();
    c.preprocessing.in_module = p.at("in_module").get<bool>();
    c.num_classes = j.at("output").at("num_classes").get<int>();
    c.class_labels = j.at("class_labels").get<std::vector<std::string>>();
    c.dataset = j.at("dataset").get<std::string>();
    c.run_id = j.at("run_id").get<std::string>();
    c.version = j.at("version").get<ModelVersion>();
    c.round = j.at("round").get<RoundNumber>();
    c.parent_version = OptionalField<ModelVersion>(j, "parent_version");
    c.contributing_clients = OptionalField<int64_t>(j, "contributing_clients");
    for (const auto& [k, v] : j.at("metrics").items()) c.metrics[k] = v.get<double>();
    c.created_at = j.at("created_at").get<std::string>();
    const json& w = j.at("weights");
    c.weights_file = w.at("file").get<std::string>();
    c.weights_sha256 = w.at("sha256").get<std::string>();
    c.num_parameters = w.at("num_parameters").get<int64_t>();
    if (const json& e = j.at("export"); !e.is_null()) {
      c.exported = ModelCard::Export{e.at("format").get<std::string>(), e.at("file").get<std::string>(),
                                     e.at("sha256").get<std::string>(), e.at("exported_at").get<std::string>()};
    }
    if (!c.class_labels.empty() && static_cast<int>(c.class_labels.size()) != c.num_classes) {
      return absl::InvalidArgumentError(StrCat("the model card has ", c.class_labels.size(), " class labels for ",
                                               c.num_classes, " classes"));
    }
    return c;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(StrCat("malformed model card: ", e.what()));
  }
}

}  // namespace tessera::core
