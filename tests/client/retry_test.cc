#include "client/retry.h"

#include <algorithm>
#include <vector>

#include "gtest/gtest.h"

namespace tessera::client {
namespace {

// The delays one Backoff hands out until its attempts run out (the final InfiniteDuration
// excluded), at most `limit` of them.
std::vector<absl::Duration> Delays(const RetryPolicy& policy, uint64_t seed, int limit = 100) {
  Backoff backoff(policy, seed);
  std::vector<absl::Duration> out;
  for (int i = 0; i < limit; ++i) {
    absl::Duration d = backoff.Next();
    if (d == absl::InfiniteDuration()) break;
    out.push_back(d);
  }
  return out;
}

RetryPolicy Policy(int max_attempts, absl::Duration initial, absl::Duration max, double multiplier = 2.0) {
  RetryPolicy p;
  p.max_attempts = max_attempts;
  p.initial_backoff = initial;
  p.max_backoff = max;
  p.multiplier = multiplier;
  return p;
}

TEST(BackoffTest, DelaysLieWithinACapThatDoublesFromInitialToMax) {
  // Caps: 100, 200, 400, 800, then 1000 ms (max_backoff) for every later attempt.
  const RetryPolicy policy = Policy(10, absl::Milliseconds(100), absl::Seconds(1));
  const std::vector<absl::Duration> caps = {
      absl::Milliseconds(100), absl::Milliseconds(200), absl::Milliseconds(400), absl::Milliseconds(800),
      absl::Seconds(1),        absl::Seconds(1),        absl::Seconds(1),        absl::Seconds(1),
      absl::Seconds(1)};
  // Over many seeds, every delay of attempt k is in [0, cap_k] and the largest one comes close
  // to cap_k: the cap really is cap_k, not something smaller.
  std::vector<absl::Duration> largest(caps.size(), absl::ZeroDuration());
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    const auto delays = Delays(policy, seed);
    ASSERT_EQ(delays.size(), caps.size()) << "seed " << seed;
    for (size_t k = 0; k < delays.size(); ++k) {
      EXPECT_GE(delays[k], absl::ZeroDuration()) << "attempt " << k + 1 << " seed " << seed;
      EXPECT_LE(delays[k], caps[k]) << "attempt " << k + 1 << " seed " << seed;
      largest[k] = std::max(largest[k], delays[k]);
    }
  }
  for (size_t k = 0; k < caps.size(); ++k) {
    EXPECT_GE(largest[k], caps[k] * 0.95) << "attempt " << k + 1 << ": the cap is never approached";
  }
}

TEST(BackoffTest, FullJitterSpreadsDelaysOverTheWholeRange) {
  // Uniform in [0, cap]: the mean is about cap / 2 and small delays occur too.
  const RetryPolicy policy = Policy(2, absl::Seconds(1), absl::Seconds(10));
  double sum_ms = 0;
  double smallest_ms = 1e9;
  const int n = 2000;
  for (int seed = 0; seed < n; ++seed) {
    const auto delays = Delays(policy, static_cast<uint64_t>(seed));
    ASSERT_EQ(delays.size(), 1u);
    const double ms = absl::ToDoubleMilliseconds(delays[0]);
    sum_ms += ms;
    smallest_ms = std::min(smallest_ms, ms);
  }
  EXPECT_NEAR(sum_ms / n, 500.0, 40.0);
  EXPECT_LT(smallest_ms, 50.0);
}

TEST(BackoffTest, AttemptsRunOutAfterMaxAttemptsMinusOneDelays) {
  Backoff backoff(Policy(4, absl::Milliseconds(10), absl::Seconds(1)), 7);
  for (int i = 1; i <= 3; ++i) {
    const absl::Duration d = backoff.Next();
    EXPECT_NE(d, absl::InfiniteDuration()) << "delay " << i;
    EXPECT_EQ(backoff.attempts(), i);
  }
  EXPECT_EQ(backoff.Next(), absl::InfiniteDuration());
  EXPECT_EQ(backoff.attempts(), 4);
  // Once exhausted, it stays exhausted.
  EXPECT_EQ(backoff.Next(), absl::InfiniteDuration());
}

TEST(BackoffTest, OneAttemptMeansNoRetry) {
  Backoff backoff(Policy(1, absl::Milliseconds(10), absl::Seconds(1)), 7);
  EXPECT_EQ(backoff.Next(), absl::InfiniteDuration());
  EXPECT_EQ(backoff.attempts(), 1);
}

TEST(BackoffTest, DefaultPolicyAllowsSevenRetriesCappedAtTenSeconds) {
  const RetryPolicy policy;
  const auto delays = Delays(policy, 11);
  ASSERT_EQ(delays.size(), static_cast<size_t>(policy.max_attempts - 1));
  for (const auto& d : delays) EXPECT_LE(d, absl::Seconds(10));
}

TEST(BackoffTest, TheSameSeedGivesTheSameDelays) {
  const RetryPolicy policy = Policy(8, absl::Milliseconds(100), absl::Seconds(5));
  EXPECT_EQ(Delays(policy, 42), Delays(policy, 42));
  EXPECT_NE(Delays(policy, 42), Delays(policy, 43));
}

TEST(BackoffTest, AMultiplierOfThreeTriplesTheCap) {
  // Caps 10, 30, 90, 100 ms.
  const RetryPolicy policy = Policy(5, absl::Milliseconds(10), absl::Milliseconds(100), 3.0);
  const std::vector<absl::Duration> caps = {absl::Milliseconds(10), absl::Milliseconds(30), absl::Milliseconds(90),
                                            absl::Milliseconds(100)};
  std::vector<absl::Duration> largest(caps.size(), absl::ZeroDuration());
  for (uint64_t seed = 0; seed < 300; ++seed) {
    const auto delays = Delays(policy, seed);
    ASSERT_EQ(delays.size(), caps.size());
    for (size_t k = 0; k < caps.size(); ++k) {
      EXPECT_LE(delays[k], caps[k]);
      largest[k] = std::max(largest[k], delays[k]);
    }
  }
  for (size_t k = 0; k < caps.size(); ++k) EXPECT_GE(largest[k], caps[k] * 0.95) << "attempt " << k + 1;
}

TEST(IsRetryableTest, TransientFailuresAreRetried) {
  EXPECT_TRUE(IsRetryable(absl::UnavailableError("connection refused")));
  EXPECT_TRUE(IsRetryable(absl::DeadlineExceededError("slow")));
  EXPECT_TRUE(IsRetryable(absl::AbortedError("conflict")));
}

TEST(IsRetryableTest, PermanentFailuresAndSuccessAreNotRetried) {
  EXPECT_FALSE(IsRetryable(absl::OkStatus()));
  EXPECT_FALSE(IsRetryable(absl::InvalidArgumentError("bad")));
  EXPECT_FALSE(IsRetryable(absl::NotFoundError("unknown client")));
  EXPECT_FALSE(IsRetryable(absl::PermissionDeniedError("wrong certificate")));
  // Regression: an oversized upload (RESOURCE_EXHAUSTED) was re-sent whole up to 8 times.
  EXPECT_FALSE(IsRetryable(absl::ResourceExhaustedError("declared size exceeds the limit")));
  EXPECT_FALSE(IsRetryable(absl::FailedPreconditionError("round moved on")));
}

TEST(RetryAfterTest, TheHintTravelsWithTheStatus) {
  const absl::Status shed = WithRetryAfter(absl::UnavailableError("busy"), absl::Milliseconds(1500));
  EXPECT_EQ(RetryAfter(shed), absl::Milliseconds(1500));
  EXPECT_EQ(shed.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RetryAfter(absl::UnavailableError("connection refused")), std::nullopt);
}

TEST(BackoffTest, WaitsForAHintAreAtLeastTheHintWithJitterAndDoNotUseUpAttempts) {
  RetryPolicy policy = Policy(2, absl::Milliseconds(10), absl::Milliseconds(10));
  policy.max_shed_wait = absl::Seconds(100);
  Backoff backoff(policy, 7);
  const absl::Status shed = WithRetryAfter(absl::UnavailableError("busy"), absl::Milliseconds(400));
  absl::Duration lo = absl::InfiniteDuration(), hi = absl::ZeroDuration();
  for (int i = 0; i < 200; ++i) {  // 200 sheds: far more than max_attempts
    const absl::Duration d = backoff.NextFor(shed);
    ASSERT_NE(d, absl::InfiniteDuration()) << "shed " << i;
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_GE(lo, absl::Milliseconds(400));
  EXPECT_LE(hi, absl::Milliseconds(600));
  EXPECT_GT(hi - lo, absl::Milliseconds(50)) << "jitter spreads the shed clients";
  EXPECT_EQ(backoff.attempts(), 0);
  EXPECT_EQ(backoff.sheds(), 200);
  EXPECT_NE(backoff.NextFor(absl::UnavailableError("reset")), absl::InfiniteDuration());  // attempt 1 of 2
  EXPECT_EQ(backoff.NextFor(absl::UnavailableError("reset")), absl::InfiniteDuration());
}

TEST(BackoffTest, WaitsForHintsStopAtTheirBudget) {
  RetryPolicy policy = Policy(8, absl::Milliseconds(10), absl::Milliseconds(10));
  policy.max_shed_wait = absl::Seconds(10);
  Backoff backoff(policy, 7);
  const absl::Status shed = WithRetryAfter(absl::UnavailableError("busy"), absl::Seconds(1));
  int waits = 0;
  while (backoff.NextFor(shed) != absl::InfiniteDuration()) ++waits;
  EXPECT_GE(waits, 6);   // 10 s of waits of 1-1.5 s each
  EXPECT_LE(waits, 10);
}

}  // namespace
}  // namespace tessera::client
