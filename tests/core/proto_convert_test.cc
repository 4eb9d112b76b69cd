#include "core/proto_convert.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "core/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"

namespace tessera::core {
namespace {

using ::testing::HasSubstr;

NamedTensor Filled(std::string name, std::vector<int64_t> shape, DType dtype, uint8_t salt) {
  NamedTensor t(std::move(name), std::move(shape), dtype);
  auto b = t.mutable_bytes();
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(salt * 31 + i * 13);
  return t;
}

ModelWeights AllDtypes() {
  ModelWeights w;
  w.tensors.push_back(Filled("f32", {2, 3}, DType::kFloat32, 1));
  w.tensors.push_back(Filled("f64", {4}, DType::kFloat64, 2));
  w.tensors.push_back(Filled("i64", {}, DType::kInt64, 3));
  w.tensors.push_back(Filled("i32", {1, 1, 2}, DType::kInt32, 4));
  w.tensors.push_back(Filled("u8", {5}, DType::kUInt8, 5));
  w.tensors.push_back(Filled("empty", {0, 3}, DType::kFloat32, 6));
  return w;
}

void ExpectBitEqual(const ModelWeights& got, const ModelWeights& want) {
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (size_t i = 0; i < want.tensors.size(); ++i) {
    SCOPED_TRACE(want.tensors[i].name());
    EXPECT_EQ(got.tensors[i].name(), want.tensors[i].name());
    EXPECT_EQ(got.tensors[i].shape(), want.tensors[i].shape());
    EXPECT_EQ(got.tensors[i].dtype(), want.tensors[i].dtype());
    ASSERT_EQ(got.tensors[i].byte_size(), want.tensors[i].byte_size());
    EXPECT_EQ(std::memcmp(got.tensors[i].bytes().data(), want.tensors[i].bytes().data(), want.tensors[i].byte_size()),
              0);
  }
}

v1::Model ValidProto() {
  v1::Model m;
  ToProto(AllDtypes(), &m);
  return m;
}

TEST(ProtoConvertTest, ModelRoundTripsThroughProtoBitExactly) {
  const ModelWeights w = AllDtypes();
  v1::Model m;
  ToProto(w, &m);
  ASSERT_EQ(m.tensors_size(), 6);
  EXPECT_EQ(m.tensors(0).dtype(), v1::DTYPE_FLOAT32);
  EXPECT_EQ(m.tensors(1).dtype(), v1::DTYPE_FLOAT64);
  EXPECT_EQ(m.tensors(2).dtype(), v1::DTYPE_INT64);
  EXPECT_EQ(m.tensors(3).dtype(), v1::DTYPE_INT32);
  EXPECT_EQ(m.tensors(4).dtype(), v1::DTYPE_UINT8);
  EXPECT_EQ(m.tensors(0).data().size(), 24u);
  ASSERT_OK_AND_ASSIGN(ModelWeights back, FromProto(m));
  ExpectBitEqual(back, w);
}

TEST(ProtoConvertTest, ToProtoReplacesPreviousTensors) {
  v1::Model m = ValidProto();
  ModelWeights one;
  one.tensors.push_back(Filled("only", {1}, DType::kFloat32, 9));
  ToProto(one, &m);
  EXPECT_EQ(m.tensors_size(), 1);
}

TEST(ProtoConvertTest, SerializeParseRoundTrip) {
  const ModelWeights w = AllDtypes();
  ASSERT_OK_AND_ASSIGN(ModelWeights back, ParseModel(SerializeModel(w)));
  ExpectBitEqual(back, w);
  ASSERT_OK_AND_ASSIGN(ModelWeights empty, ParseModel(SerializeModel(ModelWeights{})));
  EXPECT_TRUE(empty.tensors.empty());
}

TEST(ProtoConvertTest, FromProtoRejectsUnknownDtype) {
  v1::Model m = ValidProto();
  m.mutable_tensors(2)->set_dtype(v1::DTYPE_UNSPECIFIED);
  EXPECT_CODE(FromProto(m), absl::StatusCode::kInvalidArgument);
  // A value from a newer peer's enum (proto3 keeps unknown enum values).
  m.mutable_tensors(2)->set_dtype(static_cast<v1::DType>(42));
  EXPECT_CODE(FromProto(m), absl::StatusCode::kInvalidArgument);
}

TEST(ProtoConvertTest, FromProtoRejectsDuplicateNames) {
  v1::Model m = ValidProto();
  m.mutable_tensors(4)->set_name("f32");
  auto r = FromProto(m);
  EXPECT_CODE(r, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("f32"));
}

TEST(ProtoConvertTest, FromProtoRejectsEmptyName) {
  v1::Model m = ValidProto();
  m.mutable_tensors(0)->set_name("");
  EXPECT_CODE(FromProto(m), absl::StatusCode::kInvalidArgument);
}

TEST(ProtoConvertTest, FromProtoRejectsByteSizeThatDisagreesWithShape) {
  v1::Model m = ValidProto();
  m.mutable_tensors(0)->mutable_data()->pop_back();
  EXPECT_CODE(FromProto(m), absl::StatusCode::kInvalidArgument);
  m = ValidProto();
  m.mutable_tensors(1)->mutable_data()->push_back('x');
  EXPECT_CODE(FromProto(m), absl::StatusCode::kInvalidArgument);
  m = ValidProto();
  m.mutable_tensors(0)->set_shape(1, 4);  // [2,4] needs 32 bytes, data has 24
  EXPECT_CODE(FromProto(m), absl::StatusCode::kInvalidArgument);
}

TEST(ProtoConvertTest, FromProtoRejectsNegativeShape) {
  v1::Model m;
  v1::Tensor* t = m.add_tensors();
  t->set_name("w");
  t->set_dtype(v1::DTYPE_FLOAT32);
  t->add_shape(-1);
  t->add_shape(-4);
  t->set_data(std::string(16, 'x'));
  EXPECT_CODE(FromProto(m), absl::StatusCode::kInvalidArgument);
}

TEST(ProtoConvertTest, ParseModelRejectsGarbage) {
  // A length-delimited field 1 whose length runs past the end.
  EXPECT_CODE(ParseModel(std::string("\x0a\xff\x01", 3)), absl::StatusCode::kInvalidArgument);
  // An invalid wire type.
  EXPECT_CODE(ParseModel(std::string("\x0f\x00\x00\x00", 4)), absl::StatusCode::kInvalidArgument);
  // A valid serialization cut in the middle.
  const std::string good = SerializeModel(AllDtypes());
  EXPECT_CODE(ParseModel(std::string_view(good).substr(0, good.size() - 3)), absl::StatusCode::kInvalidArgument);
  // Parses as a proto, but the tensor inside is inconsistent.
  v1::Model m = ValidProto();
  m.mutable_tensors(0)->mutable_data()->pop_back();
  EXPECT_CODE(ParseModel(m.SerializeAsString()), absl::StatusCode::kInvalidArgument);
}

TEST(ProtoConvertTest, TrainTaskRoundTrips) {
  TrainTask task;
  task.ref = {"run-42", 7, "run-42/7/client-3"};
  task.model_version = 6;
  task.model_bytes = 123456789;
  task.model_sha256 = Sha256Digest("model");  // raw bytes, may hold NULs
  task.config = {3, 64, 0.125, 0xdeadbeefcafeull};
  task.deadline = absl::FromUnixMillis(1'700'000'123'456);

  v1::TrainTask p;
  ToProto(task, &p);
  EXPECT_EQ(p.deadline_unix_ms(), 1'700'000'123'456);
  const TrainTask back = FromProto(p);
  EXPECT_EQ(back.ref, task.ref);
  EXPECT_EQ(back.model_version, 6u);
  EXPECT_EQ(back.model_bytes, 123456789u);
  EXPECT_EQ(back.model_sha256, task.model_sha256);
  EXPECT_EQ(back.config.local_epochs, 3);
  EXPECT_EQ(back.config.batch_size, 64);
  EXPECT_EQ(back.config.learning_rate, 0.125);
  EXPECT_EQ(back.config.seed, 0xdeadbeefcafeull);
  EXPECT_EQ(back.deadline, task.deadline);

  // Through bytes on the wire too.
  v1::TrainTask parsed;
  ASSERT_TRUE(parsed.ParseFromString(p.SerializeAsString()));
  const TrainTask wire = FromProto(parsed);
  EXPECT_EQ(wire.ref, task.ref);
  EXPECT_EQ(wire.deadline, task.deadline);
}

TEST(ProtoConvertTest, TrainTaskWithoutDeadlineRoundTrips) {
  TrainTask task;
  task.ref = {"r", 1, "t"};
  ASSERT_EQ(task.deadline, absl::InfiniteFuture());
  v1::TrainTask p;
  ToProto(task, &p);
  EXPECT_EQ(p.deadline_unix_ms(), 0);
  EXPECT_EQ(FromProto(p).deadline, absl::InfiniteFuture());
}

TEST(ProtoConvertTest, RoundRefRoundTrips) {
  const RoundRef ref{"run", 18446744073709551615ull, "task"};
  v1::RoundRef p;
  ToProto(ref, &p);
  EXPECT_EQ(FromProto(p), ref);
}

// Regression (found by the model fuzzer): "__metadata__" parsed as a tensor name, and the
// safetensors file written from such a model did not decode.
TEST(ProtoConvertTest, ReservedSafetensorsNameIsRefused) {
  v1::Model m;
  v1::Tensor* t = m.add_tensors();
  t->set_name("__metadata__");
  t->set_dtype(v1::DTYPE_FLOAT32);
  t->add_shape(1);
  t->set_data(std::string(4, '\0'));
  auto w = FromProto(m);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("reserved"));
}

}  // namespace
}  // namespace tessera::core
