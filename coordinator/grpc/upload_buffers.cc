#include "coordinator/grpc/upload_buffers.h"

#include <algorithm>

#include "core/strings.h"

namespace tessera::coordinator {

using core::StrCat;

UploadBuffers::UploadBuffers(UploadLimits limits, const core::Clock* clock)
    : limits_(limits), clock_(clock), upload_time_(limits.initial_upload_time) {}

uint64_t UploadBuffers::Held(const core::ClientId& client, const UploadKey& key) {
  std::lock_guard lock(mu_);
  ExpireLocked(clock_->Now());
  auto it = by_client_.find(client);
  if (it == by_client_.end() || !(it->second->key == key)) return 0;
  return it->second->bytes.size();
}

absl::StatusOr<std::string> UploadBuffers::Admit(const core::ClientId& client, const UploadKey& key,
                                                 uint64_t offset, Shed* shed) {
  if (offset > key.total_bytes) {
    return absl::InvalidArgumentError(
        StrCat("upload offset ", offset, " is beyond the declared size of ", key.total_bytes, " bytes"));
  }
  std::lock_guard lock(mu_);
  const absl::Time now = clock_->Now();
  ExpireLocked(now);
  auto it = by_client_.find(client);
  const bool matches = it != by_client_.end() && it->second->key == key;
  const uint64_t held = matches ? it->second->bytes.size() : 0;
  if (offset > held) {
    return absl::OutOfRangeError(StrCat("upload offset ", offset, " is beyond the ", held,
                                        " bytes the coordinator holds of this upload; ask QueryUpload"));
  }
  // The client's own partial stops counting as partial once admitted: it becomes this stream's.
  const bool over_streams = in_flight_ >= limits_.max_concurrent;
  // Partials of others are a cache: evicting them is better than shedding a live upload.
  const bool over_bytes = !over_streams && !MakeRoomLocked(key.total_bytes, &client);
  if (over_streams || over_bytes) {
    ++shed_;
    const absl::Duration wait = RetryAfterLocked(client, now);
    if (shed != nullptr) shed->retry_after = wait;
    return absl::UnavailableError(StrCat("coordinator busy (", in_flight_, " uploads in flight, ",
                                         waiting_.size(), " clients waiting): retry after ",
                                         absl::ToInt64Milliseconds(wait), " ms"));
  }
  waiting_.erase(client);
  std::string bytes;
  if (it != by_client_.end()) {
    if (matches) bytes = std::move(it->second->bytes);
    DropPartialLocked(client);
  }
  bytes.resize(offset);  // a resume from an earlier byte than held drops the rest
  if (offset > 0) ++resumed_;
  ++in_flight_;
  reserved_bytes_ += key.total_bytes;
  return bytes;
}

void UploadBuffers::Release(const core::ClientId& client, const UploadKey& key, std::string partial,
                            absl::Duration took) {
  std::lock_guard lock(mu_);
  --in_flight_;
  reserved_bytes_ -= key.total_bytes;
  // A stream that ran to its end tells how long an upload takes (for the retry hint).
  if (took > absl::ZeroDuration()) upload_time_ = (upload_time_ * 7 + took) / 8;
  if (partial.empty()) return;
  if (partial.size() >= key.total_bytes) return;  // complete: nothing to resume
  DropPartialLocked(client);
  if (!MakeRoomLocked(partial.size(), nullptr)) return;  // no room: the client starts over
  partial_bytes_ += partial.size();
  partials_.push_back({client, key, std::move(partial), clock_->Now()});
  by_client_[client] = std::prev(partials_.end());
}

UploadBuffers::Stats UploadBuffers::stats() const {
  std::lock_guard lock(mu_);
  return Stats{in_flight_, reserved_bytes_, partial_bytes_, partials_.size(), shed_, resumed_};
}

void UploadBuffers::ExpireLocked(absl::Time now) {
  while (!partials_.empty() && now - partials_.front().stored >= limits_.partial_ttl) {
    DropPartialLocked(partials_.front().client);
  }
  // A waiting client that did not come back within the longest hint left the queue.
  for (auto w = waiting_.begin(); w != waiting_.end();) {
    w = now - w->second > 2 * limits_.max_retry_after ? waiting_.erase(w) : std::next(w);
  }
}

bool UploadBuffers::MakeRoomLocked(uint64_t bytes, const core::ClientId* spare) {
  auto spared = spare != nullptr ? by_client_.find(*spare) : by_client_.end();
  const uint64_t own = spared != by_client_.end() ? spared->second->bytes.size() : 0;
  auto next = partials_.begin();
  while (reserved_bytes_ + (partial_bytes_ - own) + bytes > limits_.memory_bytes) {
    if (next != partials_.end() && spared != by_client_.end() && next == spared->second) ++next;
    if (next == partials_.end()) return false;
    const core::ClientId victim = (next++)->client;
    DropPartialLocked(victim);
  }
  return true;
}

void UploadBuffers::DropPartialLocked(const core::ClientId& client) {
  auto it = by_client_.find(client);
  if (it == by_client_.end()) return;
  partial_bytes_ -= it->second->bytes.size();
  partials_.erase(it->second);
  by_client_.erase(it);
}

absl::Duration UploadBuffers::RetryAfterLocked(const core::ClientId& client, absl::Time now) {
  waiting_.emplace(client, now);
  // Clients ahead of this one get in max_concurrent at a time, each wave about one upload long.
  const double waves = 1.0 + static_cast<double>(waiting_.size() - 1) / std::max(1, limits_.max_concurrent);
  return std::min(limits_.max_retry_after, std::max(absl::Milliseconds(10), upload_time_ * waves));
}

}  // namespace tessera::coordinator
