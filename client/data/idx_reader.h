// Readers for the IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/).
//
// An IDX file is a 4-byte magic (0x00 0x00 type rank), `rank` big-endian uint32 dimensions and
// the row-major data. Only the unsigned-byte type (0x08) is supported: images have rank 3
// (magic 0x00000803: count, rows, cols), labels rank 1 (magic 0x00000801: count). Files may be
// gzipped (detected by the 1f 8b magic, whatever their name) or raw.
//
// The files are untrusted input: every declared size is checked against the bytes actually
// present before anything is allocated from it, and no file may hold (or inflate to) more than
// kMaxIdxBytes. Functions are thread-safe (they share no state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/data/dataset.h"

namespace tessera::client {

// Upper bound on an IDX file's size, compressed or after decompression (2 GiB).
inline constexpr size_t kMaxIdxBytes = size_t{2} << 30;

// One decoded IDX array of unsigned bytes.
struct IdxArray {
  std::vector<int64_t> dims;  // e.g. {60000, 28, 28}
  std::string data;           // product(dims) bytes, row-major
};

// Reads the file at `path` and inflates it when it is gzipped; returns the raw bytes.
// NOT_FOUND when the file does not exist; DATA_LOSS for a corrupt or truncated gzip stream;
// RESOURCE_EXHAUSTED when it would exceed `max_bytes`.
absl::StatusOr<std::string> ReadMaybeGzippedFile(const std::string& path,
                                                 size_t max_bytes = kMaxIdxBytes);

// Decodes an unsigned-byte IDX array of the given rank from `bytes`; `path` only names the
// file in error messages. INVALID_ARGUMENT for a bad magic (wrong type or rank) or a zero
// dimension; DATA_LOSS when the data is shorter or longer than the header declares.
absl::StatusOr<IdxArray> ParseIdx(std::string_view bytes, int rank, const std::string& path);

// Reads an image file (rank 3) and a label file (rank 1) into a Dataset with example_shape
// {1, rows, cols} and features (pixel * pre.scale - pre.mean) / pre.stddev.
// `num_classes` > 0 bounds the labels (INVALID_ARGUMENT naming the first label out of range);
// 0 takes max label + 1. class_names is left empty.
// Errors name the file: NOT_FOUND (missing file), INVALID_ARGUMENT (bad magic, zero dimension,
// image and label counts differ, label out of range, stddev not positive), DATA_LOSS (truncated
// or corrupt file).
absl::StatusOr<Dataset> ReadIdxDataset(const std::string& images_path,
                                       const std::string& labels_path, const Preprocessing& pre,
                                       int num_classes = 0);

// The Fashion-MNIST normalization: pixels scaled to [0, 1], then standardized with the
// training set's mean and standard deviation.
Preprocessing FashionMnistPreprocessing();

// The ten Fashion-MNIST class names, in label order ("T-shirt/top", ..., "Ankle boot").
const std::vector<std::string>& FashionMnistClassNames();

// Loads the "train" (60000 examples) or "test" (10000, files prefixed t10k-) split of
// Fashion-MNIST from `dir`, which holds <prefix>-images-idx3-ubyte[.gz] and
// <prefix>-labels-idx1-ubyte[.gz] (the .gz file is preferred when both exist).
// Returns 1x28x28 examples, FashionMnistPreprocessing(), 10 classes with their names.
// INVALID_ARGUMENT for another split name or images that are not 28x28; NOT_FOUND when `dir`
// or one of the files is missing; the errors of ReadIdxDataset otherwise.
absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, std::string_view split);

}  // namespace tessera::client
