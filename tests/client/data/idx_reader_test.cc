#include "client/data/idx_reader.h"

#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::client {
namespace {

using ::testing::HasSubstr;

constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

std::string BigEndian32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// An unsigned-byte IDX file: magic 0x000008<rank>, dims, then `data` as is (which may disagree
// with the dims on purpose).
std::string EncodeIdx(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string out = BigEndian32(0x0800u | static_cast<uint32_t>(dims.size()));
  for (uint32_t d : dims) out += BigEndian32(d);
  out.append(data.begin(), data.end());
  return out;
}

std::string Gzip(const std::string& raw) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::string out(deflateBound(&zs, raw.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

class IdxReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("idx_reader_test_") + info->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  // Three 2x4 images with pixels 0, 10, ..., 230 and labels {0, 2, 1}.
  static std::vector<uint8_t> Pixels() {
    std::vector<uint8_t> p(3 * 2 * 4);
    for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>(10 * i);
    return p;
  }
  static std::string Images() { return EncodeIdx({3, 2, 4}, Pixels()); }
  static std::string Labels() { return EncodeIdx({3}, {0, 2, 1}); }

  std::filesystem::path dir_;
};

Preprocessing TestPreprocessing() {
  Preprocessing pre;
  pre.scale = 1.0 / 255.0;
  pre.mean = 0.5;
  pre.stddev = 0.25;
  return pre;
}

void ExpectThreeImages(const Dataset& data) {
  EXPECT_EQ(data.size(), 3);
  EXPECT_EQ(data.example_shape, (std::vector<int64_t>{1, 2, 4}));
  EXPECT_EQ(data.labels, (std::vector<int64_t>{0, 2, 1}));
  EXPECT_EQ(data.num_classes, 3);  // inferred: max label + 1
  ASSERT_EQ(data.features.size(), 24u);
  for (size_t i = 0; i < data.features.size(); ++i) {
    const double expected = (10.0 * i / 255.0 - 0.5) / 0.25;
    EXPECT_NEAR(data.features[i], expected, 1e-6) << "pixel " << i;
  }
  EXPECT_EQ(data.preprocessing.mean, 0.5);
  EXPECT_EQ(data.preprocessing.stddev, 0.25);
}

TEST_F(IdxReaderTest, ReadsRawFiles) {
  auto data =
      ReadIdxDataset(Write("images", Images()), Write("labels", Labels()), TestPreprocessing());
  ASSERT_TRUE(data.ok()) << data.status();
  ExpectThreeImages(*data);
}

TEST_F(IdxReaderTest, ReadsGzippedFilesWhateverTheirName) {
  // The second pair is gzipped without a .gz suffix: detection is by content.
  auto gz = ReadIdxDataset(Write("images.gz", Gzip(Images())), Write("labels.gz", Gzip(Labels())),
                           TestPreprocessing());
  ASSERT_TRUE(gz.ok()) << gz.status();
  ExpectThreeImages(*gz);
  auto unnamed = ReadIdxDataset(Write("images", Gzip(Images())), Write("labels", Labels()),
                                TestPreprocessing());
  ASSERT_TRUE(unnamed.ok()) << unnamed.status();
  ExpectThreeImages(*unnamed);
}

TEST_F(IdxReaderTest, ReadsConcatenatedGzipMembers) {
  const std::string raw = Images();
  const std::string two_members = Gzip(raw.substr(0, 10)) + Gzip(raw.substr(10));
  auto bytes = ReadMaybeGzippedFile(Write("images.gz", two_members));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, raw);
}

TEST_F(IdxReaderTest, BoundsLabelsByNumClasses) {
  auto data = ReadIdxDataset(Write("images", Images()), Write("labels", Labels()),
                             TestPreprocessing(), /*num_classes=*/10);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->num_classes, 10);

  auto out_of_range = ReadIdxDataset(Write("images", Images()), Write("labels", Labels()),
                                     TestPreprocessing(), /*num_classes=*/2);
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out_of_range.status().message(), HasSubstr("label 2 of example 1 is out of range"));
  EXPECT_THAT(out_of_range.status().message(), HasSubstr("labels"));
}

TEST_F(IdxReaderTest, TruncatedImagesAreDataLoss) {
  // The header declares 100 images of 2x4 but the file holds 3.
  const std::string images = Write("images", EncodeIdx({100, 2, 4}, Pixels()));
  auto data = ReadIdxDataset(images, Write("labels", Labels()), TestPreprocessing());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(data.status().message(), HasSubstr(images));
  EXPECT_THAT(data.status().message(), HasSubstr("truncated"));
  EXPECT_THAT(data.status().message(), HasSubstr("100x2x4"));
}

TEST_F(IdxReaderTest, TruncatedHeaderIsDataLoss) {
  const std::string labels = Write("labels", Labels().substr(0, 6));
  auto data = ReadIdxDataset(Write("images", Images()), labels, TestPreprocessing());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(data.status().message(), HasSubstr(labels));
}

TEST_F(IdxReaderTest, TrailingBytesAreDataLoss) {
  const std::string labels = Write("labels", Labels() + "xyz");
  auto data = ReadIdxDataset(Write("images", Images()), labels, TestPreprocessing());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(data.status().message(), HasSubstr("3 bytes more"));
}

TEST_F(IdxReaderTest, HostileHeaderDoesNotAllocate) {
  // 2^32-1 cubed would be ~2^96 bytes; only the 24 bytes present may be considered.
  const std::string images =
      Write("images", EncodeIdx({0xffffffffu, 0xffffffffu, 0xffffffffu}, Pixels()));
  auto data = ReadIdxDataset(images, Write("labels", Labels()), TestPreprocessing());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(data.status().message(), HasSubstr("truncated"));

  const std::string zero = Write("zero", EncodeIdx({3, 0, 4}, {}));
  EXPECT_EQ(ReadIdxDataset(zero, Write("labels", Labels()), TestPreprocessing()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(IdxReaderTest, BadMagicIsInvalidArgument) {
  // A label file where images are expected.
  const std::string images = Write("images", Labels());
  auto data = ReadIdxDataset(images, Write("labels", Labels()), TestPreprocessing());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(images));
  EXPECT_THAT(data.status().message(), HasSubstr("bad IDX magic 0x00000801, expected 0x00000803"));

  // Not IDX at all.
  const std::string text = Write("text", "hello, world\n");
  EXPECT_EQ(ReadIdxDataset(text, Write("labels", Labels()), TestPreprocessing()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(IdxReaderTest, TruncatedGzipIsDataLoss) {
  const std::string gz = Gzip(Images());
  const std::string images = Write("images.gz", gz.substr(0, gz.size() / 2));
  auto data = ReadIdxDataset(images, Write("labels", Labels()), TestPreprocessing());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(data.status().message(), HasSubstr(images));
  EXPECT_THAT(data.status().message(), HasSubstr("truncated gzip"));

  // Without its 8-byte trailer (CRC and size) the stream is truncated too.
  const std::string no_trailer = Write("no_trailer.gz", gz.substr(0, gz.size() - 8));
  EXPECT_EQ(ReadMaybeGzippedFile(no_trailer).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(IdxReaderTest, CorruptGzipIsDataLoss) {
  std::string gz = Gzip(Images());
  gz[gz.size() - 6] ^= 0x5a;  // inside the CRC-32 trailer
  const std::string images = Write("images.gz", gz);
  auto data = ReadIdxDataset(images, Write("labels", Labels()), TestPreprocessing());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(data.status().message(), HasSubstr("corrupt gzip"));
  EXPECT_THAT(data.status().message(), HasSubstr(images));

  const std::string garbage = Write("garbage.gz", Gzip(Images()) + "garbage");
  EXPECT_EQ(ReadMaybeGzippedFile(garbage).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(IdxReaderTest, GzipBombIsBounded) {
  const std::string zeros(size_t{1} << 20, '\0');
  const std::string bomb = Write("bomb.gz", Gzip(zeros));
  auto bytes = ReadMaybeGzippedFile(bomb, /*max_bytes=*/size_t{1} << 16);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(bytes.status().message(), HasSubstr(bomb));
}

TEST_F(IdxReaderTest, MissingFileIsNotFound) {
  const std::string missing = (dir_ / "no-such-file").string();
  auto data = ReadIdxDataset(Write("images", Images()), missing, TestPreprocessing());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(), HasSubstr(missing));
}

TEST_F(IdxReaderTest, CountMismatchIsInvalidArgument) {
  const std::string labels = Write("labels", EncodeIdx({2}, {0, 1}));
  auto data = ReadIdxDataset(Write("images", Images()), labels, TestPreprocessing());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr("holds 3 images"));
  EXPECT_THAT(data.status().message(), HasSubstr("holds 2 labels"));
}

TEST_F(IdxReaderTest, RejectsNonPositiveStddev) {
  Preprocessing pre = TestPreprocessing();
  pre.stddev = 0;
  EXPECT_EQ(
      ReadIdxDataset(Write("images", Images()), Write("labels", Labels()), pre).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(IdxReaderTest, LoadsFashionMnistLayoutFromADirectory) {
  // Two 28x28 images: the train split gzipped, the test split raw.
  std::vector<uint8_t> pixels(2 * 28 * 28);
  std::iota(pixels.begin(), pixels.end(), uint8_t{0});
  Write("train-images-idx3-ubyte.gz", Gzip(EncodeIdx({2, 28, 28}, pixels)));
  Write("train-labels-idx1-ubyte.gz", Gzip(EncodeIdx({2}, {9, 0})));
  Write("t10k-images-idx3-ubyte", EncodeIdx({2, 28, 28}, pixels));
  Write("t10k-labels-idx1-ubyte", EncodeIdx({2}, {3, 4}));
  for (const char* split : {"train", "test"}) {
    auto data = LoadFashionMnist(dir_.string(), split);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(data->size(), 2);
    EXPECT_EQ(data->example_shape, (std::vector<int64_t>{1, 28, 28}));
    EXPECT_EQ(data->num_classes, 10);
    ASSERT_EQ(data->class_names.size(), 10u);
    EXPECT_EQ(data->class_names[0], "T-shirt/top");
    EXPECT_EQ(data->class_names[9], "Ankle boot");
    EXPECT_NEAR(data->preprocessing.scale, 1.0 / 255.0, 1e-12);
    EXPECT_NEAR(data->features[1], (1.0 / 255.0 - 0.2860) / 0.3530, 1e-6);
  }
  EXPECT_EQ(LoadFashionMnist(dir_.string(), "train")->labels, (std::vector<int64_t>{9, 0}));
  EXPECT_EQ(LoadFashionMnist(dir_.string(), "test")->labels, (std::vector<int64_t>{3, 4}));
}

TEST_F(IdxReaderTest, FashionMnistErrorsNameWhatIsMissing) {
  auto no_dir = LoadFashionMnist((dir_ / "absent").string(), "train");
  EXPECT_EQ(no_dir.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_dir.status().message(), HasSubstr("absent"));

  Write("train-images-idx3-ubyte", EncodeIdx({1, 28, 28}, std::vector<uint8_t>(784)));
  auto no_labels = LoadFashionMnist(dir_.string(), "train");
  EXPECT_EQ(no_labels.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_labels.status().message(), HasSubstr("train-labels-idx1-ubyte"));

  EXPECT_EQ(LoadFashionMnist(dir_.string(), "validation").status().code(),
            absl::StatusCode::kInvalidArgument);

  // Labels of an 11-class set do not fit Fashion-MNIST.
  Write("train-labels-idx1-ubyte", EncodeIdx({1}, {10}));
  EXPECT_EQ(LoadFashionMnist(dir_.string(), "train").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(FashionMnistTest, LoadsTheRealDataset) {
  if (!std::filesystem::is_directory(kFashionMnistDir)) {
    GTEST_SKIP() << kFashionMnistDir << " is absent (Debian package dataset-fashion-mnist)";
  }
  auto train = LoadFashionMnist(kFashionMnistDir, "train");
  ASSERT_TRUE(train.ok()) << train.status();
  auto test = LoadFashionMnist(kFashionMnistDir, "test");
  ASSERT_TRUE(test.ok()) << test.status();

  EXPECT_EQ(train->size(), 60000);
  EXPECT_EQ(test->size(), 10000);
  for (const Dataset* data : {&*train, &*test}) {
    EXPECT_EQ(data->example_shape, (std::vector<int64_t>{1, 28, 28}));
    EXPECT_EQ(data->features.size(), static_cast<size_t>(data->size()) * 784);
    EXPECT_EQ(data->num_classes, 10);
    EXPECT_EQ(data->class_names, FashionMnistClassNames());
    std::vector<int64_t> per_class(10, 0);
    for (int64_t label : data->labels) {
      ASSERT_GE(label, 0);
      ASSERT_LT(label, 10);
      ++per_class[label];
    }
    const int64_t expected = data->size() / 10;  // both splits are balanced
    for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], expected) << "class " << c;
  }
  // The normalization constants are the training set's: its features come out standardized.
  double sum = 0, sum_sq = 0;
  for (float x : train->features) {
    sum += x;
    sum_sq += double{x} * x;
  }
  const double n = static_cast<double>(train->features.size());
  const double mean = sum / n;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(std::sqrt(sum_sq / n - mean * mean), 1.0, 0.01);
}

}  // namespace
}  // namespace tessera::client
