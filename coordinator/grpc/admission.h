// Admission of transfer streams under a cap, with fair retry-after hints for those refused.
// Transport-free (a FakeClock tests it).
//
// A refused client takes a ticket (once: it keeps it while it comes back); its hint is about one
// stream's time for each wave of `slots` clients ahead of it, so the hint grows with the queue
// and shrinks as the queue drains. A ticket leaves the queue when its client gets in, or when it
// has not come back for twice the longest hint.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/clock.h"
#include "core/ids.h"

namespace tessera::coordinator {

struct AdmissionHints {
  // A stream's time before any was measured, and the cap on a hint.
  absl::Duration initial_stream_time = absl::Milliseconds(200);
  absl::Duration max_retry_after = absl::Seconds(5);  // a shed call costs a header: come back and requeue
};

// The queue of refused clients. Not thread-safe (its owner's mutex guards it).
class RetryQueue {
 public:
  RetryQueue(int slots, AdmissionHints hints);
  // `client` was refused at `now`: its hint.
  absl::Duration Refused(const core::ClientId& client, absl::Time now);
  // `client` got in: it leaves the queue.
  void Admitted(const core::ClientId& client);
  // A stream ran to its end in `took`: it paces the hints.
  void Completed(absl::Duration took) { stream_time_ = (stream_time_ * 7 + took) / 8; }
  void Expire(absl::Time now);
  size_t waiting() const { return waiting_.size(); }

 private:
  struct Ticket {
    uint64_t number;
    absl::Time last_refused;
  };
  const int slots_;
  const AdmissionHints hints_;
  std::map<core::ClientId, Ticket> waiting_;
  uint64_t next_ticket_ = 0;
  uint64_t left_ = 0;  // tickets that left the queue
  absl::Duration stream_time_;
};

// At most `max_concurrent` streams at once; the others are refused with UNAVAILABLE and a hint.
// Thread-safe.
class StreamGate {
 public:
  // `clock` is borrowed and must outlive this.
  StreamGate(const char* what, int max_concurrent, AdmissionHints hints, const core::Clock* clock);
  // OK: the stream is in and must Leave once. UNAVAILABLE (the hint in *retry_after and in the
  // message) when max_concurrent streams are in.
  absl::Status Enter(const core::ClientId& client, absl::Duration* retry_after);
  // `took` > 0: the stream ran to its end in that time.
  void Leave(absl::Duration took);
  int in_flight() const;
  uint64_t refused() const;

 private:
  const char* what_;
  const int max_concurrent_;
  const core::Clock* clock_;
  mutable std::mutex mu_;
  RetryQueue queue_;   // GUARDED_BY(mu_)
  int in_flight_ = 0;  // GUARDED_BY(mu_)
  uint64_t refused_ = 0;  // GUARDED_BY(mu_)
};

// The refusal both gates give: UNAVAILABLE, naming the hint.
absl::Status Busy(const char* what, int in_flight, size_t waiting, absl::Duration retry_after);

}  // namespace tessera::coordinator
