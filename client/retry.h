// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff and Jitter"),
// transport-free so that it is tested without sockets or sleeps.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "core/rng.h"

namespace tessera::client {

struct RetryPolicy {
  int max_attempts = 8;  // including the first
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(10);
  double multiplier = 2.0;
  // Refusals that carry a retry-after hint (a coordinator shedding load: it will serve the call,
  // later) do not use up max_attempts; they are retried for at most this long in all.
  absl::Duration max_shed_wait = absl::Minutes(15);
};

// A server's retry-after hint travels with the status as a payload under this type URL.
inline constexpr char kRetryAfterPayload[] = "type.tessera.dev/retry-after-ms";

inline absl::Status WithRetryAfter(absl::Status status, absl::Duration hint) {
  status.SetPayload(kRetryAfterPayload, absl::Cord(std::to_string(absl::ToInt64Milliseconds(hint))));
  return status;
}

// The hint `status` carries, if any (a malformed one counts as none).
inline std::optional<absl::Duration> RetryAfter(const absl::Status& status) {
  auto payload = status.GetPayload(kRetryAfterPayload);
  if (!payload) return std::nullopt;
  int64_t ms = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &ms) || ms < 0) return std::nullopt;
  return absl::Milliseconds(ms);
}

// Whether an RPC that failed with `status` may be tried again (the coordinator's operations are
// idempotent: results by task id). RESOURCE_EXHAUSTED is not: the coordinator answers it for a
// message above its size limit, which a retry cannot fix (an overloaded coordinator sheds load
// with UNAVAILABLE).
inline bool IsRetryable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) || absl::IsAborted(status);
}

// Delays between attempts: attempt k (from 1) waits uniform[0, min(max, initial * mult^(k-1))].
// Not thread-safe.
class Backoff {
 public:
  Backoff(RetryPolicy policy, uint64_t seed) : policy_(policy), rng_(seed) {}
  // The delay before the next attempt, or nullopt-like InfiniteDuration when attempts ran out.
  absl::Duration Next() {
    if (++attempt_ >= policy_.max_attempts) return absl::InfiniteDuration();
    absl::Duration cap = policy_.initial_backoff;
    for (int i = 1; i < attempt_ && cap < policy_.max_backoff; ++i) cap = cap * policy_.multiplier;
    cap = std::min(cap, policy_.max_backoff);
    return cap * rng_.UniformDouble();
  }
  // The delay before retrying a refusal that came with a retry-after `hint`: the hint plus up to
  // half of it again as jitter, so that the clients shed together do not come back together. It
  // is not an attempt; InfiniteDuration once the waits would exceed max_shed_wait.
  absl::Duration NextAfterHint(absl::Duration hint) {
    const absl::Duration d = hint * (1.0 + 0.5 * rng_.UniformDouble());
    if (shed_waited_ + d > policy_.max_shed_wait) return absl::InfiniteDuration();
    shed_waited_ += d;
    ++sheds_;
    return d;
  }
  // The delay before the retry of a failed `status`: NextAfterHint when it carries a hint.
  absl::Duration NextFor(const absl::Status& status) {
    const auto hint = RetryAfter(status);
    return hint ? NextAfterHint(*hint) : Next();
  }
  int attempts() const { return attempt_; }
  int sheds() const { return sheds_; }

 private:
  RetryPolicy policy_;
  core::Rng rng_;
  int attempt_ = 0;
  int sheds_ = 0;
  absl::Duration shed_waited_;
};

}  // namespace tessera::client
