#include "coordinator/grpc/upload_buffers.h"

#include <algorithm>

#include "core/strings.h"

namespace tessera::coordinator {

using core::StrCat;

UploadBuffers::UploadBuffers(UploadLimits limits, const core::Clock* clock)
    : limits_(limits), clock_(clock), queue_(limits.max_concurrent, limits.hints) {}

uint64_t UploadBuffers::Held(const core::ClientId& client, const UploadKey& key) {
  std::lock_guard lock(mu_);
  ExpireLocked(clock_->Now());
  auto it = by_client_.find(client);
  if (it == by_client_.end() || !(it->second->key == key)) return 0;
  return it->second->bytes.size();
}

absl::StatusOr<std::string> UploadBuffers::Admit(const core::ClientId& client, const UploadKey& key,
                                                 uint64_t offset, absl::Duration* retry_after) {
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
  if (streaming_.contains(client)) {
    // One stream per client: a retry that overtook its broken predecessor (the coordinator has
    // not seen that one end yet) comes back once it has, and then resumes from its bytes.
    ++shed_;
    const absl::Duration wait = limits_.hints.initial_stream_time;
    if (retry_after != nullptr) *retry_after = wait;
    return absl::UnavailableError(StrCat("an upload of this client is still in flight: retry after ",
                                         absl::ToInt64Milliseconds(wait), " ms"));
  }
  // The client's own partial stops counting as partial once admitted: it becomes this stream's.
  const bool over_streams = in_flight_ >= limits_.max_concurrent;
  // Partials of others are a cache: evicting them is better than shedding a live upload.
  const bool over_bytes = !over_streams && !MakeRoomLocked(key.total_bytes, &client);
  if (over_streams || over_bytes) {
    ++shed_;
    const absl::Duration wait = queue_.Refused(client, now);
    if (retry_after != nullptr) *retry_after = wait;
    return Busy("uploads", in_flight_, queue_.waiting(), wait);
  }
  queue_.Admitted(client);
  std::string bytes;
  if (it != by_client_.end()) {
    if (matches) bytes = std::move(it->second->bytes);
    DropPartialLocked(client);
  }
  bytes.resize(offset);  // a resume from an earlier byte than held drops the rest
  if (offset > 0) ++resumed_;
  ++in_flight_;
  reserved_bytes_ += key.total_bytes;
  streaming_.insert(client);
  return bytes;
}

void UploadBuffers::Release(const core::ClientId& client, const UploadKey& key, std::string partial,
                            absl::Duration took) {
  std::lock_guard lock(mu_);
  --in_flight_;
  reserved_bytes_ -= key.total_bytes;
  streaming_.erase(client);
  // A stream that ran to its end tells how long an upload takes (for the retry hint).
  if (took > absl::ZeroDuration()) queue_.Completed(took);
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
  queue_.Expire(now);
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

}  // namespace tessera::coordinator
