#include "coordinator/grpc/upload_buffers.h"

#include <string>

#include "core/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"

namespace tessera::coordinator {
namespace {

using core::ClientId;
using ::testing::HasSubstr;

const ClientId kAlice{"alice"}, kBob{"bob"}, kCarol{"carol"};

UploadKey Key(uint64_t total, std::string sha = std::string(32, 'a'), std::string task = "t") {
  return UploadKey{std::move(task), total, std::move(sha)};
}

UploadLimits Limits(int streams, uint64_t bytes) {
  UploadLimits l;
  l.max_concurrent = streams;
  l.memory_bytes = bytes;
  l.partial_ttl = absl::Minutes(10);
  l.hints.initial_stream_time = absl::Milliseconds(100);
  return l;
}

// Admits `client`'s upload of `key` from 0 and breaks it off after `kept` bytes.
void Break(UploadBuffers& b, const ClientId& client, const UploadKey& key, uint64_t kept) {
  ASSERT_OK(b.Admit(client, key, 0, nullptr));
  b.Release(client, key, std::string(kept, 'x'), absl::ZeroDuration());
}

TEST(UploadBuffersTest, KeepsABrokenUploadForItsClientAndKeyOnly) {
  core::FakeClock clock;
  UploadBuffers b(Limits(4, 1000), &clock);
  ASSERT_NO_FATAL_FAILURE(Break(b, kAlice, Key(100), 40));
  EXPECT_EQ(b.Held(kAlice, Key(100)), 40u);
  EXPECT_EQ(b.Held(kBob, Key(100)), 0u);
  EXPECT_EQ(b.Held(kAlice, Key(101)), 0u);
  EXPECT_EQ(b.Held(kAlice, Key(100, std::string(32, 'b'))), 0u);
  EXPECT_EQ(b.Held(kAlice, Key(100, std::string(32, 'a'), "other task")), 0u);

  ASSERT_OK_AND_ASSIGN(std::string bytes, b.Admit(kAlice, Key(100), 40, nullptr));
  EXPECT_EQ(bytes, std::string(40, 'x'));
  EXPECT_EQ(b.stats().resumed, 1u);
  EXPECT_EQ(b.stats().partials, 0u);  // taken by the stream
  EXPECT_EQ(b.stats().reserved_bytes, 100u);
}

TEST(UploadBuffersTest, ResumingFromAnEarlierByteDropsTheRest) {
  core::FakeClock clock;
  UploadBuffers b(Limits(4, 1000), &clock);
  ASSERT_NO_FATAL_FAILURE(Break(b, kAlice, Key(100), 40));
  ASSERT_OK_AND_ASSIGN(std::string bytes, b.Admit(kAlice, Key(100), 25, nullptr));
  EXPECT_EQ(bytes.size(), 25u);
}

TEST(UploadBuffersTest, OffsetsBeyondWhatIsHeldOrTheTotalAreRefused) {
  core::FakeClock clock;
  UploadBuffers b(Limits(4, 1000), &clock);
  EXPECT_CODE(b.Admit(kAlice, Key(100), 1, nullptr), absl::StatusCode::kOutOfRange);
  ASSERT_NO_FATAL_FAILURE(Break(b, kAlice, Key(100), 40));
  EXPECT_CODE(b.Admit(kAlice, Key(100), 41, nullptr), absl::StatusCode::kOutOfRange);
  EXPECT_CODE(b.Admit(kAlice, Key(100), 101, nullptr), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(b.Admit(kBob, Key(100), 40, nullptr), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(b.Held(kAlice, Key(100)), 40u) << "refusals leave the partial alone";
  EXPECT_EQ(b.stats().in_flight, 0);
}

TEST(UploadBuffersTest, AStartFromZeroDropsTheClientsOlderPartial) {
  core::FakeClock clock;
  UploadBuffers b(Limits(4, 1000), &clock);
  ASSERT_NO_FATAL_FAILURE(Break(b, kAlice, Key(100), 40));
  ASSERT_OK(b.Admit(kAlice, Key(100, std::string(32, 'b')), 0, nullptr));
  EXPECT_EQ(b.stats().partial_bytes, 0u);
}

TEST(UploadBuffersTest, PartialsExpireAfterTheirTtl) {
  core::FakeClock clock;
  UploadBuffers b(Limits(4, 1000), &clock);
  ASSERT_NO_FATAL_FAILURE(Break(b, kAlice, Key(100), 40));
  clock.Advance(absl::Minutes(9));
  EXPECT_EQ(b.Held(kAlice, Key(100)), 40u);
  clock.Advance(absl::Minutes(1));
  EXPECT_EQ(b.Held(kAlice, Key(100)), 0u);
  EXPECT_EQ(b.stats().partial_bytes, 0u);
}

TEST(UploadBuffersTest, OverTheStreamCapUploadsAreShedWithAHintThatGrowsWithTheQueue) {
  core::FakeClock clock;
  UploadBuffers b(Limits(1, 1000), &clock);
  ASSERT_OK(b.Admit(kAlice, Key(100), 0, nullptr));
  absl::Duration first, second;
  auto s = b.Admit(kBob, Key(100), 0, &first);
  EXPECT_CODE(s, absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("retry after 100 ms"));
  EXPECT_CODE(b.Admit(kCarol, Key(100), 0, &second), absl::StatusCode::kUnavailable);
  EXPECT_EQ(first, absl::Milliseconds(100));
  EXPECT_EQ(second, absl::Milliseconds(200)) << "carol waits behind bob";
  EXPECT_EQ(b.stats().shed, 2u);
  absl::Duration again;
  EXPECT_CODE(b.Admit(kCarol, Key(100), 0, &again), absl::StatusCode::kUnavailable);
  EXPECT_EQ(again, absl::Milliseconds(200)) << "carol keeps her place: not sent to the back";

  b.Release(kAlice, Key(100), {}, absl::Milliseconds(100));
  ASSERT_OK(b.Admit(kBob, Key(100), 0, nullptr));
  EXPECT_EQ(b.stats().in_flight, 1);
  EXPECT_CODE(b.Admit(kCarol, Key(100), 0, &again), absl::StatusCode::kUnavailable);
  EXPECT_EQ(again, absl::Milliseconds(100)) << "bob got in: carol is next";
}

TEST(UploadBuffersTest, OneStreamPerClientARetryThatOvertookItsBrokenPredecessorWaits) {
  core::FakeClock clock;
  UploadBuffers b(Limits(8, 1000), &clock);
  ASSERT_OK(b.Admit(kAlice, Key(100), 0, nullptr));
  absl::Duration hint;
  EXPECT_CODE(b.Admit(kAlice, Key(100), 0, &hint), absl::StatusCode::kUnavailable);
  EXPECT_GT(hint, absl::ZeroDuration());
  // The first stream ends short: its bytes are kept and the retry resumes from them.
  b.Release(kAlice, Key(100), std::string(30, 'x'), absl::ZeroDuration());
  ASSERT_OK_AND_ASSIGN(std::string bytes, b.Admit(kAlice, Key(100), 30, nullptr));
  EXPECT_EQ(bytes.size(), 30u);
}

TEST(UploadBuffersTest, OverTheByteCapOthersPartialsAreEvictedOldestFirstBeforeShedding) {
  core::FakeClock clock;
  UploadBuffers b(Limits(8, 300), &clock);
  ASSERT_NO_FATAL_FAILURE(Break(b, kAlice, Key(100), 90));
  clock.Advance(absl::Seconds(1));
  ASSERT_NO_FATAL_FAILURE(Break(b, kBob, Key(100), 90));
  // carol's 200 bytes fit once alice's (older) partial is gone.
  ASSERT_OK(b.Admit(kCarol, Key(200), 0, nullptr));
  EXPECT_EQ(b.Held(kAlice, Key(100)), 0u);
  EXPECT_EQ(b.Held(kBob, Key(100)), 90u);
  // Now 200 reserved + 90 partial: bob resuming his own 100 fits (his partial becomes his stream).
  ASSERT_OK(b.Admit(kBob, Key(100), 90, nullptr));
  // A fourth upload of 100 bytes does not fit and nothing can be evicted: shed.
  absl::Duration shed;
  EXPECT_CODE(b.Admit(ClientId{"dave"}, Key(100), 0, &shed), absl::StatusCode::kUnavailable);
  EXPECT_GT(shed, absl::ZeroDuration());
  EXPECT_EQ(b.stats().reserved_bytes, 300u);
}

}  // namespace
}  // namespace tessera::coordinator
