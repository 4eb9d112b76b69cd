#include "client/data/csv_reader.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class CsvReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("csv_reader_test_") + info->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& text) {
    const std::string path = (dir_ / "data.csv").string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  std::filesystem::path dir_;
};

TEST_F(CsvReaderTest, ReadsHeaderAndIntegerLabels) {
  auto data = ReadCsvDataset(Write("x1,x2,label\n1,2,0\n3,4.5,2\r\n-1e-3, 7 ,1\n"), CsvOptions());
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->size(), 3);
  EXPECT_EQ(data->example_shape, (std::vector<int64_t>{2}));
  EXPECT_THAT(data->features, ElementsAre(1.0f, 2.0f, 3.0f, 4.5f, -1e-3f, 7.0f));
  EXPECT_THAT(data->labels, ElementsAre(0, 2, 1));
  EXPECT_EQ(data->num_classes, 3);
  EXPECT_TRUE(data->class_names.empty());
}

TEST_F(CsvReaderTest, MapsStringLabelsInOrderOfFirstAppearance) {
  auto data = ReadCsvDataset(Write("a,b,species\n5.1,3.5,setosa\n7.0,3.2,versicolor\n4.9,3.0,"
                                   "setosa\n6.3,3.3,\"virginica\"\n"),
                             CsvOptions());
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->labels, ElementsAre(0, 1, 0, 2));
  EXPECT_THAT(data->class_names, ElementsAre("setosa", "versicolor", "virginica"));
  EXPECT_EQ(data->num_classes, 3);
}

TEST_F(CsvReaderTest, HonoursLabelColumnDelimiterAndNoHeader) {
  CsvOptions options;
  options.label_column = 0;
  options.has_header = false;
  options.delimiter = ';';
  auto data = ReadCsvDataset(Write("1;0.5;\"2\"\n\n0;1.5;3\n"), options);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->example_shape, (std::vector<int64_t>{2}));
  EXPECT_THAT(data->features, ElementsAre(0.5f, 2.0f, 1.5f, 3.0f));
  EXPECT_THAT(data->labels, ElementsAre(1, 0));
  EXPECT_EQ(data->num_classes, 2);
}

TEST_F(CsvReaderTest, RaggedRowNamesItsLine) {
  // Line 3 is blank and skipped; the ragged row is on line 4.
  const std::string path = Write("x1,x2,label\n1,2,0\n\n3,1\n");
  auto data = ReadCsvDataset(path, CsvOptions());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(path + ":4: expected 3 fields"));
  EXPECT_THAT(data.status().message(), HasSubstr("got 2"));
}

TEST_F(CsvReaderTest, NonNumericFeatureNamesLineAndText) {
  const std::string path = Write("x1,x2,label\n1,2,0\n3,abc,1\n");
  auto data = ReadCsvDataset(path, CsvOptions());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(path + ":3: column 2"));
  EXPECT_THAT(data.status().message(), HasSubstr("'abc'"));

  // Missing values and non-finite numbers are not features either.
  EXPECT_EQ(ReadCsvDataset(Write("x,y\n,0\n"), CsvOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadCsvDataset(Write("x,y\nnan,0\n"), CsvOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadCsvDataset(Write("x,y\n1e999,0\n"), CsvOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CsvReaderTest, EmptyFileAndHeaderOnlyAreErrors) {
  auto empty = ReadCsvDataset(Write(""), CsvOptions());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("empty file"));
  auto header_only = ReadCsvDataset(Write("x1,x2,label\n"), CsvOptions());
  EXPECT_EQ(header_only.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(header_only.status().message(), HasSubstr("no data rows"));
}

TEST_F(CsvReaderTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadCsvDataset((dir_ / "absent.csv").string(), CsvOptions()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CsvReaderTest, RejectsNegativeLabelsAndBadLabelColumn) {
  auto negative = ReadCsvDataset(Write("x,y\n1,0\n2,-1\n"), CsvOptions());
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(negative.status().message(), HasSubstr(":3: label -1 is negative"));

  CsvOptions options;
  options.label_column = 5;
  EXPECT_EQ(ReadCsvDataset(Write("x,y\n1,0\n"), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CsvReaderTest, StandardizeGivesZeroMeanUnitVariance) {
  CsvOptions options;
  options.standardize = true;
  auto data = ReadCsvDataset(Write("a,b,c,y\n1,10,5,0\n2,20,5,1\n3,30,5,0\n4,40,5,1\n"), options);
  ASSERT_TRUE(data.ok()) << data.status();
  ColumnStats stats = ComputeColumnStats(*data);
  for (int j = 0; j < 2; ++j) {
    EXPECT_NEAR(stats.mean[j], 0.0, 1e-6);
    EXPECT_NEAR(stats.stddev[j], 1.0, 1e-6);
  }
  // A constant column is centred, not divided by zero.
  for (int64_t i = 0; i < data->size(); ++i) EXPECT_EQ(data->example(i)[2], 0.0f);
  EXPECT_NEAR(data->example(0)[0], -1.5 / std::sqrt(1.25), 1e-6);

  ColumnStats wrong_width;
  wrong_width.mean = {0};
  wrong_width.stddev = {1};
  EXPECT_EQ(ApplyColumnStats(wrong_width, &*data).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::client
