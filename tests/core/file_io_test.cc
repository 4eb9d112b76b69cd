#include "core/file_io.h"

#include <sys/stat.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"
#include "tests/testing/temp_dir.h"

namespace tessera::core {
namespace {

using ::testing::HasSubstr;

std::string BinaryData(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + 7) & 0xff);
  return s;
}

TEST(FileIoTest, WriteThenReadReturnsTheSameBytes) {
  testutil::ScopedTempDir dir;
  const std::string path = dir.Join("blob.bin");
  const std::string data = BinaryData(300000);  // includes NULs, crosses page boundaries
  ASSERT_OK(WriteFileAtomic(path, data));
  ASSERT_OK_AND_ASSIGN(std::string back, ReadFile(path));
  EXPECT_TRUE(back == data);
}

TEST(FileIoTest, EmptyFile) {
  testutil::ScopedTempDir dir;
  const std::string path = dir.Join("empty");
  ASSERT_OK(WriteFileAtomic(path, ""));
  ASSERT_OK_AND_ASSIGN(std::string back, ReadFile(path));
  EXPECT_EQ(back, "");
}

TEST(FileIoTest, ReadingAMissingFileIsNotFound) {
  testutil::ScopedTempDir dir;
  auto r = ReadFile(dir.Join("nope"));
  EXPECT_CODE(r, absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("nope"));
}

TEST(FileIoTest, FileOverMaxBytesIsInvalidArgument) {
  testutil::ScopedTempDir dir;
  const std::string path = dir.Join("hundred");
  ASSERT_OK(WriteFileAtomic(path, std::string(100, 'x')));
  EXPECT_CODE(ReadFile(path, 99), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(ReadFile(path, 0), absl::StatusCode::kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(std::string at_limit, ReadFile(path, 100));
  EXPECT_EQ(at_limit.size(), 100u);
}

TEST(FileIoTest, ReplacesAnExistingFileWholeAndLeavesNoTempFile) {
  testutil::ScopedTempDir dir;
  const std::string path = dir.Join("model.bin");
  ASSERT_OK(WriteFileAtomic(path, std::string(10000, 'L')));
  ASSERT_OK(WriteFileAtomic(path, "short"));
  ASSERT_OK_AND_ASSIGN(std::string back, ReadFile(path));
  EXPECT_EQ(back, "short");  // no tail of the longer old content
  EXPECT_EQ(dir.List(), std::vector<std::string>{"model.bin"});
}

TEST(FileIoTest, ReplaceIsARenameNotAnInPlaceRewrite) {
  // A reader holding the old file keeps seeing the old content: the new one is a new inode.
  testutil::ScopedTempDir dir;
  const std::string path = dir.Join("f");
  ASSERT_OK(WriteFileAtomic(path, "old"));
  struct stat before {};
  ASSERT_EQ(::stat(path.c_str(), &before), 0);
  ASSERT_OK(WriteFileAtomic(path, "new"));
  struct stat after {};
  ASSERT_EQ(::stat(path.c_str(), &after), 0);
  EXPECT_NE(before.st_ino, after.st_ino);
}

TEST(FileIoTest, WritingIntoAMissingDirectoryFailsAndLeavesNothing) {
  testutil::ScopedTempDir dir;
  auto s = WriteFileAtomic(dir.Join("no/such/dir/f"), "x");
  EXPECT_CODE(s, absl::StatusCode::kNotFound);
  EXPECT_TRUE(dir.List().empty());
}

TEST(FileIoTest, ReadingADirectoryFails) {
  testutil::ScopedTempDir dir;
  EXPECT_FALSE(ReadFile(dir.path()).ok());
}

}  // namespace
}  // namespace tessera::core
