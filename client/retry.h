// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff and Jitter"),
// transport-free so that it is tested without sockets or sleeps.
#pragma once

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/rng.h"

namespace tessera::client {

struct RetryPolicy {
  int max_attempts = 8;  // including the first
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(10);
  double multiplier = 2.0;
};

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
  int attempts() const { return attempt_; }

 private:
  RetryPolicy policy_;
  core::Rng rng_;
  int attempt_ = 0;
};

}  // namespace tessera::client
