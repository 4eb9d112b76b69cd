// NamedTensor and ModelWeights: the model representation every module shares.
//
// A tensor owns its bytes (row-major, little-endian, as on the wire and in safetensors).
// Float tensors are accessed through f32(); other dtypes are carried but not averaged.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::core {

enum class DType : uint8_t { kFloat32, kFloat64, kInt64, kInt32, kUInt8 };

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);  // safetensors spelling: "F32", "F64", "I64", ...
absl::StatusOr<DType> DTypeFromName(std::string_view name);

class NamedTensor {
 public:
  NamedTensor() = default;
  // Zero-filled tensor of the given layout.
  NamedTensor(std::string name, std::vector<int64_t> shape, DType dtype = DType::kFloat32);

  // Validates that `data` holds exactly numel(shape) * DTypeSize(dtype) bytes and that no
  // dimension is negative. INVALID_ARGUMENT otherwise.
  static absl::StatusOr<NamedTensor> FromBytes(std::string name, std::vector<int64_t> shape,
                                               DType dtype, std::string_view data);
  static NamedTensor FromFloats(std::string name, std::vector<int64_t> shape,
                                std::span<const float> values);

  const std::string& name() const { return name_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  int64_t numel() const;
  size_t byte_size() const { return data_.size(); }

  std::span<const uint8_t> bytes() const { return data_; }
  std::span<uint8_t> mutable_bytes() { return data_; }
  // Float view; the tensor must be kFloat32 (checked).
  std::span<const float> f32() const;
  std::span<float> mutable_f32();

  bool SameLayout(const NamedTensor& other) const {
    return name_ == other.name_ && shape_ == other.shape_ && dtype_ == other.dtype_;
  }

 private:
  std::string name_;
  std::vector<int64_t> shape_;
  DType dtype_ = DType::kFloat32;
  // operator new aligns to 16 bytes, so f32() views are aligned.
  std::vector<uint8_t> data_;
};

// An ordered list of named tensors (the order is the model's state-dict order).
struct ModelWeights {
  std::vector<NamedTensor> tensors;

  int64_t num_elements() const;
  size_t byte_size() const;
  const NamedTensor* Find(std::string_view name) const;
  // OK when both have the same tensor names, shapes and dtypes in the same order;
  // INVALID_ARGUMENT naming the first difference otherwise.
  absl::Status CheckSameLayout(const ModelWeights& other) const;
  // INVALID_ARGUMENT naming the first tensor with a NaN or Inf.
  absl::Status CheckFinite() const;
};

// Max |a - b| over all float elements; the layouts must match (checked).
absl::StatusOr<double> MaxAbsDiff(const ModelWeights& a, const ModelWeights& b);

}  // namespace tessera::core
