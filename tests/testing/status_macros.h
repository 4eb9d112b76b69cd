// Status assertions for gtest (Debian's abseil ships no status matchers).
//
//   ASSERT_OK(s);  EXPECT_OK(s);           s: absl::Status or absl::StatusOr<T>
//   ASSERT_OK_AND_ASSIGN(auto x, MakeX());  x: the value of an OK StatusOr
//   EXPECT_CODE(s, absl::StatusCode::kNotFound);
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace tessera::testutil {

inline const absl::Status& ToStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& ToStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

}  // namespace tessera::testutil

#ifndef ASSERT_OK
#define ASSERT_OK(expr)                                                       \
  do {                                                                        \
    const auto& tessera_s_ = (expr);                                          \
    ASSERT_TRUE(::tessera::testutil::ToStatus(tessera_s_).ok())               \
        << #expr << ": " << ::tessera::testutil::ToStatus(tessera_s_);        \
  } while (0)
#endif
#ifndef EXPECT_OK
#define EXPECT_OK(expr)                                                       \
  do {                                                                        \
    const auto& tessera_s_ = (expr);                                          \
    EXPECT_TRUE(::tessera::testutil::ToStatus(tessera_s_).ok())               \
        << #expr << ": " << ::tessera::testutil::ToStatus(tessera_s_);        \
  } while (0)
#endif

// The status code of `expr` (Status or StatusOr); prints the message when it differs.
#define EXPECT_CODE(expr, code_)                                              \
  do {                                                                        \
    const auto& tessera_s_ = (expr);                                          \
    EXPECT_EQ(::tessera::testutil::ToStatus(tessera_s_).code(), (code_))      \
        << #expr << ": " << ::tessera::testutil::ToStatus(tessera_s_);        \
  } while (0)

#define TESSERA_TEST_CONCAT_INNER_(a, b) a##b
#define TESSERA_TEST_CONCAT_(a, b) TESSERA_TEST_CONCAT_INNER_(a, b)
#ifndef ASSERT_OK_AND_ASSIGN
#define ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  TESSERA_ASSERT_OK_AND_ASSIGN_IMPL_(TESSERA_TEST_CONCAT_(tessera_statusor_, __LINE__), lhs, rexpr)
#define TESSERA_ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, rexpr)             \
  auto statusor = (rexpr);                                                  \
  ASSERT_TRUE(statusor.ok()) << #rexpr << ": " << statusor.status();        \
  lhs = std::move(statusor).value()
#endif
