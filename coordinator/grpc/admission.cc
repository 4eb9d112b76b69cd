#include "coordinator/grpc/admission.h"

#include <algorithm>

#include "core/strings.h"

namespace tessera::coordinator {

RetryQueue::RetryQueue(int slots, AdmissionHints hints)
    : slots_(std::max(1, slots)), hints_(hints), stream_time_(hints.initial_stream_time) {}

absl::Duration RetryQueue::Refused(const core::ClientId& client, absl::Time now) {
  Expire(now);
  auto [it, added] = waiting_.try_emplace(client, Ticket{next_ticket_, now});
  if (added) ++next_ticket_;
  it->second.last_refused = now;
  const uint64_t ahead = it->second.number > left_ ? it->second.number - left_ : 0;
  const double waves = 1.0 + static_cast<double>(ahead) / slots_;
  return std::clamp(stream_time_ * waves, absl::Milliseconds(10), hints_.max_retry_after);
}

void RetryQueue::Admitted(const core::ClientId& client) {
  if (waiting_.erase(client) > 0) ++left_;
}

void RetryQueue::Expire(absl::Time now) {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (now - it->second.last_refused > 2 * hints_.max_retry_after) {
      it = waiting_.erase(it);
      ++left_;
    } else {
      ++it;
    }
  }
}

absl::Status Busy(const char* what, int in_flight, size_t waiting, absl::Duration retry_after) {
  return absl::UnavailableError(core::StrCat("coordinator busy (", in_flight, " ", what, " in flight, ", waiting,
                                             " clients waiting): retry after ",
                                             absl::ToInt64Milliseconds(retry_after), " ms"));
}

StreamGate::StreamGate(const char* what, int max_concurrent, AdmissionHints hints, const core::Clock* clock)
    : what_(what), max_concurrent_(max_concurrent), clock_(clock), queue_(max_concurrent, hints) {}

absl::Status StreamGate::Enter(const core::ClientId& client, absl::Duration* retry_after) {
  std::lock_guard lock(mu_);
  if (in_flight_ >= max_concurrent_) {
    ++refused_;
    const absl::Duration hint = queue_.Refused(client, clock_->Now());
    if (retry_after != nullptr) *retry_after = hint;
    return Busy(what_, in_flight_, queue_.waiting(), hint);
  }
  queue_.Admitted(client);
  ++in_flight_;
  return absl::OkStatus();
}

void StreamGate::Leave(absl::Duration took) {
  std::lock_guard lock(mu_);
  --in_flight_;
  if (took > absl::ZeroDuration()) queue_.Completed(took);
}

int StreamGate::in_flight() const {
  std::lock_guard lock(mu_);
  return in_flight_;
}

uint64_t StreamGate::refused() const {
  std::lock_guard lock(mu_);
  return refused_;
}

}  // namespace tessera::coordinator
