#include "core/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/strings.h"
#include "core/file_io.h"
#include "core/status.h"

namespace tessera::core {

using nlohmann::json;

namespace {
// A header larger than this is refused before it is parsed (the format's own readers use 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
}  // namespace

std::string EncodeSafetensors(const ModelWeights& weights,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& t : weights.tensors) {
    header[t.name()] = {{"dtype", DTypeName(t.dtype())},
                        {"shape", t.shape()},
                        {"data_offsets", {offset, offset + t.byte_size()}}};
    offset += t.byte_size();
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  // Pad the header with spaces so the data starts 8-byte aligned (as the reference writer does).
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out;
  out.resize(8 + h.size() + offset);
  uint64_t hlen = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((hlen >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, h.data(), h.size());
  char* p = out.data() + 8 + h.size();
  for (const auto& t : weights.tensors) {
    if (t.byte_size() > 0) std::memcpy(p, t.bytes().data(), t.byte_size());  // data() of an empty tensor may be null
    p += t.byte_size();
  }
  return out;
}

absl::StatusOr<SafetensorsFile> DecodeSafetensors(std::string_view bytes) {
  if (bytes.size() < 8) return absl::DataLossError("safetensors: file shorter than its 8-byte header length");
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  if (hlen > kMaxHeaderBytes) return absl::InvalidArgumentError("safetensors: header too large");
  if (hlen > bytes.size() - 8) return absl::DataLossError("safetensors: header runs past the end of the file");
  json header = json::parse(bytes.substr(8, hlen), nullptr, /*allow_exceptions=*/false);
  if (!header.is_object()) return absl::InvalidArgumentError("safetensors: header is not a JSON object");
  const std::string_view data = bytes.substr(8 + hlen);

  SafetensorsFile file;
  struct Entry { uint64_t begin, end; NamedTensor tensor; };
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return absl::InvalidArgumentError("safetensors: __metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) return absl::InvalidArgumentError("safetensors: metadata values must be strings");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const json& e = it.value();
    if (!e.is_object() || !e.contains("dtype") || !e["dtype"].is_string() || !e.contains("shape") ||
        !e["shape"].is_array() || !e.contains("data_offsets") || !e["data_offsets"].is_array() ||
        e["data_offsets"].size() != 2 || !e["data_offsets"][0].is_number_unsigned() ||
        !e["data_offsets"][1].is_number_unsigned()) {
      return absl::InvalidArgumentError(StrCat("safetensors: malformed entry for '", it.key(), "'"));
    }
    TESSERA_ASSIGN_OR_RETURN(DType dtype, DTypeFromName(e["dtype"].get<std::string>()));
    std::vector<int64_t> shape;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) return absl::InvalidArgumentError(StrCat("safetensors: bad shape for '", it.key(), "'"));
      shape.push_back(d.get<int64_t>());
    }
    uint64_t begin = e["data_offsets"][0].get<uint64_t>();
    uint64_t end = e["data_offsets"][1].get<uint64_t>();
    if (begin > end) {
      return absl::InvalidArgumentError(StrCat("safetensors: data_offsets of '", it.key(), "' are reversed"));
    }
    if (end > data.size()) {
      return absl::DataLossError(StrCat("safetensors: data of '", it.key(), "' lies outside the file"));
    }
    TESSERA_ASSIGN_OR_RETURN(NamedTensor t, NamedTensor::FromBytes(it.key(), std::move(shape), dtype,
                                                                 data.substr(begin, end - begin)));
    entries.push_back({begin, end, std::move(t)});
  }
  // File order; a zero-size tensor sorts before a tensor that starts at the same offset, which is
  // where the writer puts it.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].begin < entries[i - 1].end) {
      return absl::InvalidArgumentError("safetensors: tensor data ranges overlap");
    }
  }
  for (auto& e : entries) file.weights.tensors.push_back(std::move(e.tensor));
  return file;
}

absl::Status WriteSafetensorsFile(const std::string& path, const ModelWeights& weights,
                                  const std::map<std::string, std::string>& metadata) {
  return WriteFileAtomic(path, EncodeSafetensors(weights, metadata));
}

absl::StatusOr<SafetensorsFile> ReadSafetensorsFile(const std::string& path) {
  TESSERA_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  auto file = DecodeSafetensors(bytes);
  if (!file.ok()) {
    return absl::Status(file.status().code(), StrCat(path, ": ", file.status().message()));
  }
  return file;
}

}  // namespace tessera::core
