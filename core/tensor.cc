#include "core/tensor.h"

#include <cmath>
#include <cstring>

#include "core/strings.h"

namespace tessera::core {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
    case DType::kInt64: return 8;
    case DType::kInt32: return 4;
    case DType::kUInt8: return 1;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "F32";
    case DType::kFloat64: return "F64";
    case DType::kInt64: return "I64";
    case DType::kInt32: return "I32";
    case DType::kUInt8: return "U8";
  }
  return "?";
}

absl::StatusOr<DType> DTypeFromName(std::string_view name) {
  for (DType d : {DType::kFloat32, DType::kFloat64, DType::kInt64, DType::kInt32, DType::kUInt8}) {
    if (DTypeName(d) == name) return d;
  }
  return absl::InvalidArgumentError(StrCat("unsupported dtype '", name, "'"));
}

namespace {
absl::StatusOr<int64_t> CheckedNumel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError("negative dimension in tensor shape");
    if (d != 0 && n > (int64_t{1} << 40) / d) {
      return absl::InvalidArgumentError("tensor shape too large");
    }
    n *= d;
  }
  return n;
}
}  // namespace

NamedTensor::NamedTensor(std::string name, std::vector<int64_t> shape, DType dtype)
    : name_(std::move(name)), shape_(std::move(shape)), dtype_(dtype) {
  data_.assign(static_cast<size_t>(numel()) * DTypeSize(dtype_), 0);
}

absl::StatusOr<NamedTensor> NamedTensor::FromBytes(std::string name, std::vector<int64_t> shape,
                                                   DType dtype, std::string_view data) {
  auto n = CheckedNumel(shape);
  if (!n.ok()) return absl::InvalidArgumentError(StrCat(n.status().message(), ": ", name));
  const uint64_t expected = static_cast<uint64_t>(*n) * DTypeSize(dtype);
  if (data.size() != expected) {
    return absl::InvalidArgumentError(StrCat("tensor '", name, "' of shape ",
                                                   ShapeString(shape), " needs ", expected,
                                                   " bytes, got ", data.size()));
  }
  NamedTensor t;
  t.name_ = std::move(name);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.data_.assign(data.begin(), data.end());
  return t;
}

NamedTensor NamedTensor::FromFloats(std::string name, std::vector<int64_t> shape,
                                    std::span<const float> values) {
  NamedTensor t(std::move(name), std::move(shape), DType::kFloat32);
  if (values.size() != static_cast<size_t>(t.numel())) std::abort();  // caller's invariant
  if (!values.empty()) std::memcpy(t.data_.data(), values.data(), values.size_bytes());
  return t;
}

int64_t NamedTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

std::span<const float> NamedTensor::f32() const {
  if (dtype_ != DType::kFloat32) std::abort();
  return {reinterpret_cast<const float*>(data_.data()), data_.size() / 4};
}

std::span<float> NamedTensor::mutable_f32() {
  if (dtype_ != DType::kFloat32) std::abort();
  return {reinterpret_cast<float*>(data_.data()), data_.size() / 4};
}

int64_t ModelWeights::num_elements() const {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

size_t ModelWeights::byte_size() const {
  size_t n = 0;
  for (const auto& t : tensors) n += t.byte_size();
  return n;
}

const NamedTensor* ModelWeights::Find(std::string_view name) const {
  for (const auto& t : tensors) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

absl::Status ModelWeights::CheckSameLayout(const ModelWeights& other) const {
  if (tensors.size() != other.tensors.size()) {
    return absl::InvalidArgumentError(StrCat("expected ", other.tensors.size(),
                                                   " tensors, got ", tensors.size()));
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedTensor& a = tensors[i];
    const NamedTensor& b = other.tensors[i];
    if (a.name() != b.name()) {
      return absl::InvalidArgumentError(
          StrCat("tensor ", i, " is '", a.name(), "', expected '", b.name(), "'"));
    }
    if (a.dtype() != b.dtype()) {
      return absl::InvalidArgumentError(StrCat("tensor '", a.name(), "' has dtype ",
                                                     DTypeName(a.dtype()), ", expected ",
                                                     DTypeName(b.dtype())));
    }
    if (a.shape() != b.shape()) {
      return absl::InvalidArgumentError(StrCat(
          "tensor '", a.name(), "' has shape ", ShapeString(a.shape()), ", expected ",
          ShapeString(b.shape())));
    }
  }
  return absl::OkStatus();
}

absl::Status ModelWeights::CheckFinite() const {
  for (const auto& t : tensors) {
    if (t.dtype() == DType::kFloat32) {
      for (float v : t.f32()) {
        if (!std::isfinite(v)) {
          return absl::InvalidArgumentError(
              StrCat("tensor '", t.name(), "' contains NaN or Inf"));
        }
      }
    } else if (t.dtype() == DType::kFloat64) {
      const auto* p = reinterpret_cast<const double*>(t.bytes().data());
      for (int64_t i = 0; i < t.numel(); ++i) {
        if (!std::isfinite(p[i])) {
          return absl::InvalidArgumentError(
              StrCat("tensor '", t.name(), "' contains NaN or Inf"));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> MaxAbsDiff(const ModelWeights& a, const ModelWeights& b) {
  if (auto s = a.CheckSameLayout(b); !s.ok()) return s;
  double m = 0;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    if (a.tensors[i].dtype() != DType::kFloat32) continue;
    auto x = a.tensors[i].f32();
    auto y = b.tensors[i].f32();
    for (size_t j = 0; j < x.size(); ++j) {
      m = std::max(m, std::abs(static_cast<double>(x[j]) - y[j]));
    }
  }
  return m;
}

}  // namespace tessera::core
