#include "core/tensor.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"

namespace tessera::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Bytes(size_t n) { return std::string(n, '\x5a'); }

ModelWeights TwoTensorModel() {
  ModelWeights w;
  const float a[6] = {1, 2, 3, 4, 5, 6};
  const float b[3] = {-1, 0.5f, 2};
  w.tensors.push_back(NamedTensor::FromFloats("fc.weight", {2, 3}, a));
  w.tensors.push_back(NamedTensor::FromFloats("fc.bias", {3}, b));
  return w;
}

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kFloat32), 4u);
  EXPECT_EQ(DTypeSize(DType::kFloat64), 8u);
  EXPECT_EQ(DTypeSize(DType::kInt64), 8u);
  EXPECT_EQ(DTypeSize(DType::kInt32), 4u);
  EXPECT_EQ(DTypeSize(DType::kUInt8), 1u);
  for (DType d : {DType::kFloat32, DType::kFloat64, DType::kInt64, DType::kInt32, DType::kUInt8}) {
    ASSERT_OK_AND_ASSIGN(DType back, DTypeFromName(DTypeName(d)));
    EXPECT_EQ(back, d);
  }
  EXPECT_CODE(DTypeFromName("BF16"), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(DTypeFromName("float32"), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(DTypeFromName(""), absl::StatusCode::kInvalidArgument);
}

TEST(NamedTensorTest, ConstructorZeroFills) {
  NamedTensor t("w", {2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.byte_size(), 96u);
  EXPECT_EQ(t.dtype(), DType::kFloat32);
  for (float v : t.f32()) EXPECT_EQ(v, 0.0f);
  NamedTensor s("step", {}, DType::kInt64);
  EXPECT_EQ(s.numel(), 1);  // a scalar holds one element
  EXPECT_EQ(s.byte_size(), 8u);
  NamedTensor e("empty", {5, 0});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.byte_size(), 0u);
}

TEST(NamedTensorTest, FromBytesAcceptsExactSize) {
  ASSERT_OK_AND_ASSIGN(NamedTensor t, NamedTensor::FromBytes("w", {2, 3}, DType::kFloat64, Bytes(48)));
  EXPECT_EQ(t.name(), "w");
  EXPECT_THAT(t.shape(), ElementsAre(2, 3));
  EXPECT_EQ(t.dtype(), DType::kFloat64);
  EXPECT_EQ(t.byte_size(), 48u);
  EXPECT_EQ(t.bytes()[47], 0x5a);
  EXPECT_OK(NamedTensor::FromBytes("scalar", {}, DType::kInt32, Bytes(4)));
  EXPECT_OK(NamedTensor::FromBytes("empty", {0}, DType::kFloat32, ""));
  EXPECT_OK(NamedTensor::FromBytes("empty2", {7, 0, 3}, DType::kUInt8, ""));
}

TEST(NamedTensorTest, FromBytesRejectsWrongSize) {
  EXPECT_CODE(NamedTensor::FromBytes("w", {2, 3}, DType::kFloat32, Bytes(23)), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(NamedTensor::FromBytes("w", {2, 3}, DType::kFloat32, Bytes(25)), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(NamedTensor::FromBytes("w", {2, 3}, DType::kFloat32, ""), absl::StatusCode::kInvalidArgument);
  // Right element count, wrong dtype width.
  EXPECT_CODE(NamedTensor::FromBytes("w", {2, 3}, DType::kFloat64, Bytes(24)), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(NamedTensor::FromBytes("s", {}, DType::kFloat32, ""), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(NamedTensor::FromBytes("e", {0}, DType::kFloat32, Bytes(4)), absl::StatusCode::kInvalidArgument);
  auto r = NamedTensor::FromBytes("fc.weight", {2, 3}, DType::kFloat32, Bytes(23));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("fc.weight"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("24"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("23"));
}

TEST(NamedTensorTest, FromBytesRejectsNegativeAndOverflowingShapes) {
  EXPECT_CODE(NamedTensor::FromBytes("w", {-1}, DType::kFloat32, ""), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(NamedTensor::FromBytes("w", {-2, -3}, DType::kFloat32, Bytes(24)), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(NamedTensor::FromBytes("w", {0, -1}, DType::kFloat32, ""), absl::StatusCode::kInvalidArgument);
  // numel * size would wrap a 64-bit byte count to 0.
  EXPECT_CODE(NamedTensor::FromBytes("w", {int64_t{1} << 32, int64_t{1} << 32}, DType::kFloat32, ""),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(NamedTensor::FromBytes("w", {std::numeric_limits<int64_t>::max(), 2}, DType::kUInt8, ""),
              absl::StatusCode::kInvalidArgument);
}

TEST(NamedTensorTest, FromFloatsAndViews) {
  const float v[4] = {1.5f, -2, 0, 3.25f};
  NamedTensor t = NamedTensor::FromFloats("w", {2, 2}, v);
  EXPECT_THAT(t.f32(), ElementsAre(1.5f, -2.0f, 0.0f, 3.25f));
  t.mutable_f32()[1] = 7;
  EXPECT_EQ(t.f32()[1], 7.0f);
  float raw;
  std::memcpy(&raw, t.bytes().data() + 4, 4);  // little-endian row-major bytes
  EXPECT_EQ(raw, 7.0f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.f32().data()) % alignof(float), 0u);
}

TEST(ModelWeightsTest, CountsAndFind) {
  ModelWeights w = TwoTensorModel();
  w.tensors.emplace_back("step", std::vector<int64_t>{}, DType::kInt64);
  EXPECT_EQ(w.num_elements(), 6 + 3 + 1);
  EXPECT_EQ(w.byte_size(), 24u + 12u + 8u);
  ASSERT_NE(w.Find("fc.bias"), nullptr);
  EXPECT_EQ(w.Find("fc.bias")->numel(), 3);
  EXPECT_EQ(w.Find("fc"), nullptr);
}

TEST(ModelWeightsTest, CheckSameLayoutAcceptsSameLayoutWithOtherValues) {
  ModelWeights a = TwoTensorModel();
  ModelWeights b = TwoTensorModel();
  b.tensors[0].mutable_f32()[0] = 100;
  EXPECT_OK(a.CheckSameLayout(b));
}

TEST(ModelWeightsTest, CheckSameLayoutNamesTheFirstDifference) {
  const ModelWeights ref = TwoTensorModel();
  {
    ModelWeights fewer = ref;
    fewer.tensors.pop_back();
    auto s = fewer.CheckSameLayout(ref);
    EXPECT_CODE(s, absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("expected 2 tensors, got 1"));
  }
  {
    ModelWeights renamed = ref;
    renamed.tensors[1] = NamedTensor("fc.b", {3});
    auto s = renamed.CheckSameLayout(ref);
    EXPECT_CODE(s, absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("'fc.b'"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("'fc.bias'"));
  }
  {
    ModelWeights swapped;
    swapped.tensors = {ref.tensors[1], ref.tensors[0]};  // same tensors, other order
    EXPECT_CODE(swapped.CheckSameLayout(ref), absl::StatusCode::kInvalidArgument);
  }
  {
    ModelWeights retyped = ref;
    retyped.tensors[1] = NamedTensor("fc.bias", {3}, DType::kFloat64);
    auto s = retyped.CheckSameLayout(ref);
    EXPECT_CODE(s, absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("F64"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("F32"));
  }
  {
    ModelWeights reshaped = ref;
    reshaped.tensors[0] = NamedTensor("fc.weight", {3, 2});  // same numel, other shape
    auto s = reshaped.CheckSameLayout(ref);
    EXPECT_CODE(s, absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("[3,2]"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("[2,3]"));
  }
}

TEST(ModelWeightsTest, CheckFiniteFindsNanAndInfInFloat32) {
  EXPECT_OK(TwoTensorModel().CheckFinite());
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    ModelWeights w = TwoTensorModel();
    w.tensors[1].mutable_f32()[2] = bad;  // the very last element
    auto s = w.CheckFinite();
    EXPECT_CODE(s, absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("fc.bias"));
  }
  // The largest finite float is fine.
  ModelWeights big = TwoTensorModel();
  big.tensors[0].mutable_f32()[0] = std::numeric_limits<float>::max();
  big.tensors[0].mutable_f32()[1] = std::numeric_limits<float>::denorm_min();
  EXPECT_OK(big.CheckFinite());
}

TEST(ModelWeightsTest, CheckFiniteFindsNanAndInfInFloat64) {
  for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity()}) {
    ModelWeights w = TwoTensorModel();
    NamedTensor d("running_var", {3}, DType::kFloat64);
    const double values[3] = {1.0, 2.0, bad};
    std::memcpy(d.mutable_bytes().data(), values, sizeof(values));
    w.tensors.push_back(d);
    auto s = w.CheckFinite();
    EXPECT_CODE(s, absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("running_var"));
  }
  // A large finite double (not representable as float) is fine.
  ModelWeights w = TwoTensorModel();
  NamedTensor d("big", {}, DType::kFloat64);
  const double v = 1e300;
  std::memcpy(d.mutable_bytes().data(), &v, 8);
  w.tensors.push_back(d);
  EXPECT_OK(w.CheckFinite());
}

TEST(ModelWeightsTest, CheckFiniteIgnoresIntegerTensors) {
  ModelWeights w = TwoTensorModel();
  NamedTensor i("counter", {2}, DType::kInt64);
  // 0x7ff8... is a NaN bit pattern as a double, but this is an integer.
  const uint64_t bits[2] = {0x7ff8000000000000ull, 0xffffffffffffffffull};
  std::memcpy(i.mutable_bytes().data(), bits, sizeof(bits));
  w.tensors.push_back(i);
  EXPECT_OK(w.CheckFinite());
}

TEST(ModelWeightsTest, MaxAbsDiff) {
  const ModelWeights a = TwoTensorModel();
  ModelWeights b = TwoTensorModel();
  ASSERT_OK_AND_ASSIGN(double same, MaxAbsDiff(a, b));
  EXPECT_EQ(same, 0.0);
  b.tensors[0].mutable_f32()[4] += 0.25f;
  b.tensors[1].mutable_f32()[0] -= 1.5f;
  ASSERT_OK_AND_ASSIGN(double d, MaxAbsDiff(a, b));
  EXPECT_EQ(d, 1.5);
  ModelWeights other = a;
  other.tensors.pop_back();
  EXPECT_CODE(MaxAbsDiff(a, other), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::core
