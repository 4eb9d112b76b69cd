#include "core/safetensors.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"
#include "tests/testing/temp_dir.h"

namespace tessera::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A tensor of `dtype` whose bytes follow a pattern distinct per tensor (`salt`).
NamedTensor Patterned(std::string name, std::vector<int64_t> shape, DType dtype, uint8_t salt) {
  NamedTensor t(std::move(name), std::move(shape), dtype);
  auto bytes = t.mutable_bytes();
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(salt + 37 * i + (i >> 8));
  return t;
}

ModelWeights MixedModel() {
  ModelWeights w;
  w.tensors.push_back(Patterned("layer1.weight", {2, 3}, DType::kFloat32, 1));
  w.tensors.push_back(Patterned("layer1.bias", {3}, DType::kFloat32, 2));
  w.tensors.push_back(Patterned("bn.num_batches_tracked", {}, DType::kInt64, 3));  // scalar
  w.tensors.push_back(Patterned("double_param", {2, 2}, DType::kFloat64, 4));
  w.tensors.push_back(Patterned("counts", {5}, DType::kInt32, 5));
  w.tensors.push_back(Patterned("mask", {3}, DType::kUInt8, 6));
  w.tensors.push_back(Patterned("zzz_empty", {0, 4}, DType::kFloat32, 7));  // zero-size, last
  return w;
}

void ExpectSameTensors(const ModelWeights& got, const ModelWeights& want) {
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (size_t i = 0; i < want.tensors.size(); ++i) {
    const NamedTensor& a = got.tensors[i];
    const NamedTensor& b = want.tensors[i];
    EXPECT_EQ(a.name(), b.name()) << "tensor " << i;
    EXPECT_EQ(a.shape(), b.shape()) << b.name();
    EXPECT_EQ(a.dtype(), b.dtype()) << b.name();
    ASSERT_EQ(a.byte_size(), b.byte_size()) << b.name();
    EXPECT_EQ(std::memcmp(a.bytes().data(), b.bytes().data(), b.byte_size()), 0) << b.name();
  }
}

std::string LittleEndian64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

// A file with header `json_text` (unpadded) followed by `data`.
std::string FileWithHeader(const std::string& json_text, const std::string& data) {
  return LittleEndian64(json_text.size()) + json_text + data;
}

TEST(SafetensorsTest, RoundTripsMixedDtypesAndShapesBitExactly) {
  const ModelWeights w = MixedModel();
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"round", "7"}, {"note", "\"quoted\" \\ text"}};
  const std::string bytes = EncodeSafetensors(w, meta);
  ASSERT_OK_AND_ASSIGN(SafetensorsFile file, DecodeSafetensors(bytes));
  ExpectSameTensors(file.weights, w);
  EXPECT_EQ(file.metadata, meta);
}

TEST(SafetensorsTest, RoundTripsWithoutMetadata) {
  const ModelWeights w = MixedModel();
  ASSERT_OK_AND_ASSIGN(SafetensorsFile file, DecodeSafetensors(EncodeSafetensors(w)));
  ExpectSameTensors(file.weights, w);
  EXPECT_TRUE(file.metadata.empty());
}

TEST(SafetensorsTest, RoundTripsEmptyModel) {
  ASSERT_OK_AND_ASSIGN(SafetensorsFile file, DecodeSafetensors(EncodeSafetensors(ModelWeights{})));
  EXPECT_TRUE(file.weights.tensors.empty());
}

// Regression: a zero-size tensor shares its begin offset with the tensor written after it. The
// decoder sorts by begin only (JSON keys come back alphabetically) and then sees [0,0] after
// [0,8] as an overlap, so our own encoder's output does not decode.
TEST(SafetensorsTest, RoundTripsZeroSizeTensorWrittenBeforeAnother) {
  ModelWeights w;
  w.tensors.push_back(Patterned("z_empty", {0}, DType::kFloat32, 1));
  w.tensors.push_back(Patterned("a_weight", {2}, DType::kFloat32, 2));
  ASSERT_OK_AND_ASSIGN(SafetensorsFile file, DecodeSafetensors(EncodeSafetensors(w)));
  ExpectSameTensors(file.weights, w);
}

// Same bug, zero-size tensor in the middle: {"a":[0,8], "m_empty":[8,8], "b":[8,16]}.
TEST(SafetensorsTest, RoundTripsZeroSizeTensorInTheMiddle) {
  ModelWeights w;
  w.tensors.push_back(Patterned("a", {2}, DType::kFloat32, 1));
  w.tensors.push_back(Patterned("m_empty", {3, 0}, DType::kFloat32, 2));
  w.tensors.push_back(Patterned("b", {2}, DType::kFloat32, 3));
  ASSERT_OK_AND_ASSIGN(SafetensorsFile file, DecodeSafetensors(EncodeSafetensors(w)));
  ExpectSameTensors(file.weights, w);
}

TEST(SafetensorsTest, HeaderHasTheStandardLayout) {
  const ModelWeights w = MixedModel();
  const std::string bytes = EncodeSafetensors(w, {{"format", "pt"}});
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ((8 + n) % 8, 0u) << "tensor data must start 8-byte aligned";
  EXPECT_EQ(bytes.size(), 8 + n + w.byte_size()) << "nothing but the header and the tensor bytes";

  const std::string header_text = bytes.substr(8, n);
  EXPECT_EQ(header_text.front(), '{');
  // Padding, if any, is spaces (what the reference writer uses), so any JSON parser accepts it.
  const size_t last = header_text.find_last_not_of(' ');
  ASSERT_NE(last, std::string::npos);
  EXPECT_EQ(header_text[last], '}');
  EXPECT_LT(header_text.size() - last - 1, 8u);

  const nlohmann::json header = nlohmann::json::parse(header_text, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(header.is_object());
  ASSERT_TRUE(header.contains("__metadata__"));
  EXPECT_EQ(header["__metadata__"], nlohmann::json({{"format", "pt"}}));
  EXPECT_EQ(header.size(), w.tensors.size() + 1);

  const std::string_view data = std::string_view(bytes).substr(8 + n);
  uint64_t expected_begin = 0;
  for (const NamedTensor& t : w.tensors) {
    SCOPED_TRACE(t.name());
    ASSERT_TRUE(header.contains(t.name()));
    const nlohmann::json& e = header[t.name()];
    EXPECT_EQ(e["dtype"].get<std::string>(), std::string(DTypeName(t.dtype())));
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), t.shape());
    ASSERT_EQ(e["data_offsets"].size(), 2u);
    const uint64_t begin = e["data_offsets"][0].get<uint64_t>();
    const uint64_t end = e["data_offsets"][1].get<uint64_t>();
    // Written in state-dict order, contiguous, no gaps.
    EXPECT_EQ(begin, expected_begin);
    EXPECT_EQ(end - begin, t.byte_size());
    ASSERT_LE(end, data.size());
    EXPECT_EQ(data.substr(begin, end - begin),
              std::string_view(reinterpret_cast<const char*>(t.bytes().data()), t.byte_size()));
    expected_begin = end;
  }
}

TEST(SafetensorsTest, DtypeNamesAreTheSafetensorsSpelling) {
  EXPECT_EQ(DTypeName(DType::kFloat32), "F32");
  EXPECT_EQ(DTypeName(DType::kFloat64), "F64");
  EXPECT_EQ(DTypeName(DType::kInt64), "I64");
  EXPECT_EQ(DTypeName(DType::kInt32), "I32");
  EXPECT_EQ(DTypeName(DType::kUInt8), "U8");
}

// A file as Python's safetensors writes it: metadata first, keys sorted, header padded with
// spaces, little-endian data.
TEST(SafetensorsTest, DecodesAHandWrittenReferenceFile) {
  std::string header =
      R"({"__metadata__":{"format":"pt"},"bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("step":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})";
  header.append((8 - (8 + header.size()) % 8) % 8, ' ');
  std::string data;
  const float bias[2] = {1.5f, -2.25f};
  data.append(reinterpret_cast<const char*>(bias), sizeof(bias));
  const int64_t step = 1234567890123;
  data.append(reinterpret_cast<const char*>(&step), sizeof(step));

  ASSERT_OK_AND_ASSIGN(SafetensorsFile file, DecodeSafetensors(FileWithHeader(header, data)));
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(file.weights.tensors.size(), 2u);
  const NamedTensor* b = file.weights.Find("bias");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype(), DType::kFloat32);
  EXPECT_THAT(b->f32(), ElementsAre(1.5f, -2.25f));
  const NamedTensor* s = file.weights.Find("step");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->dtype(), DType::kInt64);
  EXPECT_TRUE(s->shape().empty());
  int64_t got_step = 0;
  std::memcpy(&got_step, s->bytes().data(), 8);
  EXPECT_EQ(got_step, step);
  // File-offset order.
  EXPECT_EQ(file.weights.tensors[0].name(), "bias");
  EXPECT_EQ(file.weights.tensors[1].name(), "step");
}

TEST(SafetensorsTest, ReturnsTensorsInFileOffsetOrder) {
  // Keys sort as a, b, c but the data lies c, a, b.
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
      R"("b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},)"
      R"("c":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  ASSERT_OK_AND_ASSIGN(SafetensorsFile file, DecodeSafetensors(FileWithHeader(header, "CAB")));
  ASSERT_EQ(file.weights.tensors.size(), 3u);
  EXPECT_EQ(file.weights.tensors[0].name(), "c");
  EXPECT_EQ(file.weights.tensors[1].name(), "a");
  EXPECT_EQ(file.weights.tensors[2].name(), "b");
  EXPECT_EQ(file.weights.tensors[0].bytes()[0], 'C');
}

// ---- Decoding untrusted bytes ----

TEST(SafetensorsDecodeTest, FileShorterThanLengthPrefixIsDataLoss) {
  EXPECT_CODE(DecodeSafetensors(""), absl::StatusCode::kDataLoss);
  EXPECT_CODE(DecodeSafetensors(std::string("\x10\0\0", 3)), absl::StatusCode::kDataLoss);
  EXPECT_CODE(DecodeSafetensors(std::string(7, '\0')), absl::StatusCode::kDataLoss);
}

TEST(SafetensorsDecodeTest, HeaderLongerThanFileIsDataLoss) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  std::string bytes = LittleEndian64(header.size() + 100) + header + "x";
  EXPECT_CODE(DecodeSafetensors(bytes), absl::StatusCode::kDataLoss);
  // A valid file cut inside its header.
  const std::string good = EncodeSafetensors(MixedModel());
  EXPECT_CODE(DecodeSafetensors(std::string_view(good).substr(0, 20)), absl::StatusCode::kDataLoss);
}

TEST(SafetensorsDecodeTest, AbsurdHeaderLengthIsRefusedWithoutOverflow) {
  // 2^64 - 1 must not wrap around when added to 8.
  std::string bytes = LittleEndian64(~uint64_t{0}) + "{}";
  auto r = DecodeSafetensors(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().code() == absl::StatusCode::kInvalidArgument ||
              r.status().code() == absl::StatusCode::kDataLoss)
      << r.status();
}

TEST(SafetensorsDecodeTest, DataCutShortIsDataLoss) {
  const std::string good = EncodeSafetensors(MixedModel());
  EXPECT_CODE(DecodeSafetensors(std::string_view(good).substr(0, good.size() - 1)), absl::StatusCode::kDataLoss);
}

TEST(SafetensorsDecodeTest, BadJsonIsInvalidArgument) {
  EXPECT_CODE(DecodeSafetensors(FileWithHeader("{not json", "")), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(DecodeSafetensors(FileWithHeader("", "")), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(DecodeSafetensors(FileWithHeader("[1,2,3]", "")), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(DecodeSafetensors(FileWithHeader(R"("a string")", "")), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(DecodeSafetensors(FileWithHeader(R"({"a":{"dtype":"U8")", "")), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsDecodeTest, UnknownDtypeIsInvalidArgument) {
  for (const char* dtype : {"BF16", "F16", "f32", "", "F8_E4M3"}) {
    SCOPED_TRACE(dtype);
    const std::string header =
        std::string(R"({"a":{"dtype":")") + dtype + R"(","shape":[2],"data_offsets":[0,4]}})";
    EXPECT_CODE(DecodeSafetensors(FileWithHeader(header, "abcd")), absl::StatusCode::kInvalidArgument);
  }
}

TEST(SafetensorsDecodeTest, MalformedEntriesAreInvalidArgument) {
  const std::vector<std::string> headers = {
      R"({"a":{"shape":[1],"data_offsets":[0,4]}})",                              // no dtype
      R"({"a":{"dtype":"F32","data_offsets":[0,4]}})",                            // no shape
      R"({"a":{"dtype":"F32","shape":[1]}})",                                     // no offsets
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})",                  // one offset
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})",              // three offsets
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})",               // negative offset
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}})",            // strings
      R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",               // negative dim
      R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})",              // fractional dim
      R"({"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})",                  // shape not array
      R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})",                    // dtype not string
      R"({"a":[1,2,3]})",                                                         // entry not object
      R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",  // non-string meta
      R"({"__metadata__":["k"],"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",   // meta not object
  };
  for (const std::string& h : headers) {
    SCOPED_TRACE(h);
    EXPECT_CODE(DecodeSafetensors(FileWithHeader(h, "abcd")), absl::StatusCode::kInvalidArgument);
  }
}

TEST(SafetensorsDecodeTest, OffsetsBeyondTheDataAreDataLoss) {
  // The header names more bytes than the file holds: the file was cut short.
  EXPECT_CODE(DecodeSafetensors(FileWithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd")),
              absl::StatusCode::kDataLoss);
  EXPECT_CODE(DecodeSafetensors(FileWithHeader(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[9,9]}})", "abcd")),
              absl::StatusCode::kDataLoss);
  // Offsets near 2^64 must not wrap around into range.
  EXPECT_CODE(DecodeSafetensors(FileWithHeader(
                  R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}})",
                  "abcd")),
              absl::StatusCode::kDataLoss);
}

// begin > end inside the file is a malformed header, not a truncated file: the header comment
// (core/safetensors.h:24-26) and STYLE.md give INVALID_ARGUMENT for malformed input.
TEST(SafetensorsDecodeTest, ReversedOffsetsAreInvalidArgument) {
  EXPECT_CODE(DecodeSafetensors(FileWithHeader(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[3,1]}})", "abcd")),
              absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsDecodeTest, SizeThatDisagreesWithShapeIsInvalidArgument) {
  // F32 [3] needs 12 bytes, the range holds 8.
  EXPECT_CODE(DecodeSafetensors(
                  FileWithHeader(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(16, 'x'))),
              absl::StatusCode::kInvalidArgument);
  // F64 [1] needs 8 bytes, the range holds 4.
  EXPECT_CODE(DecodeSafetensors(
                  FileWithHeader(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,4]}})", std::string(8, 'x'))),
              absl::StatusCode::kInvalidArgument);
  // Shape whose element count overflows.
  EXPECT_CODE(DecodeSafetensors(FileWithHeader(
                  R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", "")),
              absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsDecodeTest, OverlappingRangesAreInvalidArgument) {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_CODE(DecodeSafetensors(FileWithHeader(header, std::string(12, 'x'))), absl::StatusCode::kInvalidArgument);
  // The same range twice.
  const std::string same =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_CODE(DecodeSafetensors(FileWithHeader(same, std::string(8, 'x'))), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsDecodeTest, ErrorsNameTheTensor) {
  auto r = DecodeSafetensors(
      FileWithHeader(R"({"fc.weight":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 'x')));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("fc.weight"));
}

// ---- Files ----

TEST(SafetensorsFileTest, WritesAndReadsAFile) {
  testutil::ScopedTempDir dir;
  const std::string path = dir.Join("model.safetensors");
  const ModelWeights w = MixedModel();
  ASSERT_OK(WriteSafetensorsFile(path, w, {{"round", "3"}}));
  ASSERT_OK_AND_ASSIGN(SafetensorsFile file, ReadSafetensorsFile(path));
  ExpectSameTensors(file.weights, w);
  EXPECT_EQ(file.metadata.at("round"), "3");
  EXPECT_EQ(dir.List(), std::vector<std::string>{"model.safetensors"});
}

TEST(SafetensorsFileTest, MissingFileIsNotFound) {
  testutil::ScopedTempDir dir;
  EXPECT_CODE(ReadSafetensorsFile(dir.Join("absent.safetensors")), absl::StatusCode::kNotFound);
}

TEST(SafetensorsFileTest, CorruptFileErrorNamesThePath) {
  testutil::ScopedTempDir dir;
  const std::string path = dir.Join("bad.safetensors");
  ASSERT_OK(WriteSafetensorsFile(path, MixedModel()));
  {
    // Cut the data short.
    std::string bytes = EncodeSafetensors(MixedModel());
    bytes.resize(bytes.size() - 3);
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  auto r = ReadSafetensorsFile(path);
  EXPECT_CODE(r, absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(path));
}

}  // namespace
}  // namespace tessera::core
