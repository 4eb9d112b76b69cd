#include "client/data/idx_reader.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <system_error>

#include "core/file_io.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::client {
namespace {

using core::StrCat;

constexpr uint8_t kIdxUnsignedByte = 0x08;

bool IsGzip(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<uint8_t>(bytes[0]) == 0x1f &&
         static_cast<uint8_t>(bytes[1]) == 0x8b;
}

// Owns a zlib inflate stream.
class Inflater {
 public:
  Inflater() = default;
  ~Inflater() {
    if (initialized_) inflateEnd(&stream_);
  }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  // 15 + 16: a gzip wrapper (not zlib, not raw deflate) with the largest window.
  bool Init() {
    initialized_ = inflateInit2(&stream_, 15 + 16) == Z_OK;
    return initialized_;
  }
  z_stream* get() { return &stream_; }

 private:
  z_stream stream_{};
  bool initialized_ = false;
};

absl::StatusOr<std::string> Gunzip(std::string_view in, const std::string& path, size_t max_bytes) {
  Inflater inflater;
  if (!inflater.Init()) return absl::InternalError(StrCat("cannot initialize zlib for ", path));
  z_stream* zs = inflater.get();
  // Input and output are handed to zlib in pieces that fit its 32-bit counters.
  constexpr size_t kMaxPiece = size_t{1} << 30;
  // The gzip trailer's ISIZE (size mod 2^32) sizes the buffer; deflate cannot expand more than
  // ~1032x, so a hostile ISIZE still allocates in proportion to the bytes present.
  size_t hint = 1 << 16;
  if (in.size() >= 18) {
    const auto* t = reinterpret_cast<const uint8_t*>(in.data() + in.size() - 4);
    hint = (size_t{t[0]} | size_t{t[1]} << 8 | size_t{t[2]} << 16 | size_t{t[3]} << 24) + 1;
  }
  // One byte beyond max_bytes tells "exactly max_bytes" from "more".
  const size_t limit = max_bytes == std::numeric_limits<size_t>::max() ? max_bytes : max_bytes + 1;
  hint = std::clamp<size_t>(hint, 1, std::min(limit, in.size() * 1032 + 1024));
  std::string out;
  out.resize(hint);
  size_t in_pos = 0;
  size_t out_pos = 0;
  for (;;) {
    if (zs->avail_in == 0 && in_pos < in.size()) {
      const size_t piece = std::min(kMaxPiece, in.size() - in_pos);
      zs->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + in_pos));
      zs->avail_in = static_cast<uInt>(piece);
      in_pos += piece;
    }
    if (out_pos > max_bytes) {
      return absl::ResourceExhaustedError(
          StrCat(path, ": inflates to more than the limit of ", max_bytes, " bytes"));
    }
    if (out_pos == out.size()) out.resize(std::min(limit, out.size() * 2));
    const size_t out_piece = std::min(kMaxPiece, out.size() - out_pos);
    zs->next_out = reinterpret_cast<Bytef*>(out.data() + out_pos);
    zs->avail_out = static_cast<uInt>(out_piece);
    const int rc = inflate(zs, Z_NO_FLUSH);
    out_pos += out_piece - zs->avail_out;
    if (rc == Z_STREAM_END) {
      const size_t unread = zs->avail_in + (in.size() - in_pos);
      if (unread == 0) break;
      // gzip allows several concatenated members; anything else after a member is garbage.
      std::string_view rest = in.substr(in.size() - unread);
      if (!IsGzip(rest)) {
        return absl::DataLossError(
            StrCat(path, ": ", unread, " bytes of garbage after the gzip stream"));
      }
      if (inflateReset(zs) != Z_OK) {
        return absl::InternalError(StrCat("cannot reset zlib for ", path));
      }
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && zs->avail_in == 0 && in_pos == in.size()) {
      return absl::DataLossError(
          StrCat(path, ": truncated gzip stream (ends after ", in.size(), " bytes)"));
    }
    if (rc == Z_BUF_ERROR) continue;  // no progress possible this call; more output space comes
    if (rc == Z_MEM_ERROR) {
      return absl::ResourceExhaustedError(StrCat(path, ": out of memory while inflating"));
    }
    return absl::DataLossError(
        StrCat(path, ": corrupt gzip stream (", zs->msg != nullptr ? zs->msg : "zlib error", ")"));
  }
  if (out_pos > max_bytes) {
    return absl::ResourceExhaustedError(
        StrCat(path, ": inflates to more than the limit of ", max_bytes, " bytes"));
  }
  out.resize(out_pos);
  if (out.capacity() > out_pos + out_pos / 4 + (1 << 16)) out.shrink_to_fit();
  return out;
}

uint32_t ReadBigEndian32(std::string_view bytes, size_t offset) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data() + offset);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string DimsString(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += "x";
    s += std::to_string(dims[i]);
  }
  return s;
}

// "<dir>/<name>.gz" if it exists, else "<dir>/<name>" if it exists, else NOT_FOUND.
absl::StatusOr<std::string> FindDataFile(const std::filesystem::path& dir,
                                         const std::string& name) {
  std::error_code ec;
  for (const std::string& candidate : {name + ".gz", name}) {
    std::filesystem::path p = dir / candidate;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
  }
  return absl::NotFoundError(
      StrCat("Fashion-MNIST file ", (dir / name).string(), "[.gz] not found"));
}

}  // namespace

absl::StatusOr<std::string> ReadMaybeGzippedFile(const std::string& path, size_t max_bytes) {
  auto bytes = core::ReadFile(path, max_bytes);
  if (!bytes.ok()) {
    if (absl::IsInvalidArgument(bytes.status())) {  // ReadFile's "larger than the limit"
      return absl::ResourceExhaustedError(std::string(bytes.status().message()));
    }
    return bytes.status();
  }
  if (!IsGzip(*bytes)) return std::move(bytes).value();
  return Gunzip(*bytes, path, max_bytes);
}

absl::StatusOr<IdxArray> ParseIdx(std::string_view bytes, int rank, const std::string& path) {
  const char* kind = rank == 3 ? "images" : rank == 1 ? "labels" : "array";
  const uint32_t expected_magic = (uint32_t{kIdxUnsignedByte} << 8) | static_cast<uint32_t>(rank);
  if (bytes.size() < 4) {
    return absl::DataLossError(
        StrCat(path, ": ", bytes.size(), " bytes, too short for an IDX header"));
  }
  const uint32_t magic = ReadBigEndian32(bytes, 0);
  if (magic != expected_magic) {
    char buf[2][16];
    std::snprintf(buf[0], sizeof(buf[0]), "0x%08x", magic);
    std::snprintf(buf[1], sizeof(buf[1]), "0x%08x", expected_magic);
    return absl::InvalidArgumentError(StrCat(path, ": bad IDX magic ", buf[0], ", expected ",
                                             buf[1], " (unsigned-byte ", kind, ")"));
  }
  const size_t header_bytes = 4 + 4 * static_cast<size_t>(rank);
  if (bytes.size() < header_bytes) {
    return absl::DataLossError(
        StrCat(path, ": truncated IDX header (", bytes.size(), " of ", header_bytes, " bytes)"));
  }
  IdxArray out;
  // Dimensions are < 2^32 each; the product is checked against the bytes present as it grows,
  // so it cannot overflow and nothing is allocated from the header alone.
  const uint64_t available = bytes.size() - header_bytes;
  uint64_t numel = 1;
  bool exceeds = false;
  for (int i = 0; i < rank; ++i) {
    const uint32_t d = ReadBigEndian32(bytes, 4 + 4 * static_cast<size_t>(i));
    if (d == 0) {
      return absl::InvalidArgumentError(StrCat(path, ": IDX dimension ", i, " is zero"));
    }
    out.dims.push_back(d);
    if (!exceeds && numel > available / d) exceeds = true;
    if (!exceeds) numel *= d;
  }
  if (exceeds || numel > available) {
    return absl::DataLossError(StrCat(path, ": truncated IDX file: header declares ", kind, " ",
                                      DimsString(out.dims), " but only ", available,
                                      " data bytes follow"));
  }
  if (numel < available) {
    return absl::DataLossError(StrCat(path, ": IDX file has ", available - numel,
                                      " bytes more than its header (", kind, " ",
                                      DimsString(out.dims), ") declares"));
  }
  out.data.assign(bytes.substr(header_bytes));
  return out;
}

absl::StatusOr<Dataset> ReadIdxDataset(const std::string& images_path,
                                       const std::string& labels_path, const Preprocessing& pre,
                                       int num_classes) {
  if (!(pre.stddev > 0) || !std::isfinite(pre.stddev) || !std::isfinite(pre.scale) ||
      !std::isfinite(pre.mean)) {
    return absl::InvalidArgumentError(
        StrCat("preprocessing needs finite scale and mean and a positive stddev, got scale ",
               pre.scale, " mean ", pre.mean, " stddev ", pre.stddev));
  }
  if (num_classes < 0 || num_classes > 256) {
    return absl::InvalidArgumentError(
        StrCat("num_classes must be in [0, 256] for byte labels, got ", num_classes));
  }
  IdxArray images;
  {
    TESSERA_ASSIGN_OR_RETURN(std::string bytes, ReadMaybeGzippedFile(images_path));
    TESSERA_ASSIGN_OR_RETURN(images, ParseIdx(bytes, 3, images_path));
  }
  IdxArray labels;
  {
    TESSERA_ASSIGN_OR_RETURN(std::string bytes, ReadMaybeGzippedFile(labels_path));
    TESSERA_ASSIGN_OR_RETURN(labels, ParseIdx(bytes, 1, labels_path));
  }
  const int64_t count = images.dims[0];
  if (labels.dims[0] != count) {
    return absl::InvalidArgumentError(StrCat(images_path, " holds ", count, " images but ",
                                             labels_path, " holds ", labels.dims[0], " labels"));
  }
  Dataset out;
  out.labels.resize(static_cast<size_t>(count));
  int max_label = -1;
  for (int64_t i = 0; i < count; ++i) {
    const int label = static_cast<uint8_t>(labels.data[static_cast<size_t>(i)]);
    if (num_classes > 0 && label >= num_classes) {
      return absl::InvalidArgumentError(StrCat(labels_path, ": label ", label, " of example ", i,
                                               " is out of range [0, ", num_classes, ")"));
    }
    max_label = std::max(max_label, label);
    out.labels[static_cast<size_t>(i)] = label;
  }
  out.num_classes = num_classes > 0 ? num_classes : max_label + 1;
  out.example_shape = {1, images.dims[1], images.dims[2]};
  out.preprocessing = pre;

  // 256 possible pixel values: normalize through a table.
  std::array<float, 256> table;
  for (int v = 0; v < 256; ++v) {
    table[static_cast<size_t>(v)] = static_cast<float>((v * pre.scale - pre.mean) / pre.stddev);
  }
  out.features.resize(images.data.size());
  const auto* src = reinterpret_cast<const uint8_t*>(images.data.data());
  for (size_t i = 0; i < images.data.size(); ++i) out.features[i] = table[src[i]];
  return out;
}

Preprocessing FashionMnistPreprocessing() {
  Preprocessing pre;
  pre.scale = 1.0 / 255.0;
  pre.mean = 0.2860;
  pre.stddev = 0.3530;
  return pre;
}

const std::vector<std::string>& FashionMnistClassNames() {
  static const auto* const kNames =
      new std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return *kNames;
}

absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, std::string_view split) {
  std::string prefix;
  if (split == "train") {
    prefix = "train";
  } else if (split == "test") {
    prefix = "t10k";
  } else {
    return absl::InvalidArgumentError(
        StrCat("unknown Fashion-MNIST split '", split, "', expected 'train' or 'test'"));
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(StrCat("Fashion-MNIST directory ", dir, " not found"));
  }
  TESSERA_ASSIGN_OR_RETURN(std::string images_path,
                           FindDataFile(dir, prefix + "-images-idx3-ubyte"));
  TESSERA_ASSIGN_OR_RETURN(std::string labels_path,
                           FindDataFile(dir, prefix + "-labels-idx1-ubyte"));
  const std::vector<std::string>& names = FashionMnistClassNames();
  TESSERA_ASSIGN_OR_RETURN(Dataset data,
                           ReadIdxDataset(images_path, labels_path, FashionMnistPreprocessing(),
                                          static_cast<int>(names.size())));
  if (data.example_shape != std::vector<int64_t>{1, 28, 28}) {
    return absl::InvalidArgumentError(StrCat(images_path, ": Fashion-MNIST images are 28x28, got ",
                                             data.example_shape[1], "x", data.example_shape[2]));
  }
  data.class_names = names;
  return data;
}

}  // namespace tessera::client
