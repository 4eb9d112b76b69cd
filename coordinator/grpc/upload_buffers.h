// UploadBuffers: what the coordinator service holds in memory for uploads, and the admission
// rule that bounds it. Transport-free (tested without sockets, with a FakeClock).
//
// Two kinds of bytes count against one budget:
//   - in-flight uploads: an admitted stream reserves its declared total_bytes (the assembler
//     reserves that much up front), whether it starts at 0 or resumes;
//   - partial uploads: the bytes of a stream that broke before its end, kept so that the client
//     resumes instead of starting over. At most one per client (a client holds one task at a
//     time); a newer one replaces it. They expire after a TTL and are evicted oldest first when
//     an admission or a newer partial needs the room. Keyed by the authenticated client id, so a
//     client never sees or resumes another's partial upload.
// Beyond the cap on concurrent streams or on bytes, Admit sheds the upload with UNAVAILABLE and
// a retry-after hint that grows with the number of clients waiting ahead of it (RetryQueue).
//
// Thread-safe: one mutex around everything.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <set>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/grpc/admission.h"
#include "core/clock.h"
#include "core/ids.h"

namespace tessera::coordinator {

struct UploadLimits {
  int max_concurrent = 16;                         // upload streams admitted at once
  uint64_t memory_bytes = 0;                       // in-flight reservations + partial uploads (0: from the model)
  absl::Duration partial_ttl = absl::Minutes(10);  // a partial upload nobody resumed is dropped
  // The hint for a shed upload: about one upload's time per "wave" of max_concurrent waiting
  // clients ahead of it (RetryQueue).
  AdmissionHints hints;
};

// Which upload a partial belongs to: a partial resumes only an upload with the same key.
struct UploadKey {
  std::string task_id;
  uint64_t total_bytes = 0;
  std::string sha256;
  bool operator==(const UploadKey&) const = default;
};

class UploadBuffers {
 public:
  // `clock` is borrowed and must outlive this.
  UploadBuffers(UploadLimits limits, const core::Clock* clock);

  // Bytes of `key` held for `client`: where its upload may resume (0: none, or another key).
  uint64_t Held(const core::ClientId& client, const UploadKey& key);

  // Admits `client`'s upload stream of `key` that starts at `offset`, and reserves
  // key.total_bytes. Returns the first `offset` bytes (taken out of the partial store) for the
  // stream to continue from. Errors: INVALID_ARGUMENT for offset > total_bytes; OUT_OF_RANGE for
  // an offset beyond the bytes held for this key; UNAVAILABLE when over a cap, with the hint in
  // `*retry_after` (and in the message), also while another upload of the same client is in
  // flight (one stream per client). A starting upload (offset 0) drops the client's older partial.
  // Each success must be matched by one Release.
  absl::StatusOr<std::string> Admit(const core::ClientId& client, const UploadKey& key, uint64_t offset,
                                    absl::Duration* retry_after);

  // Ends an admitted stream: frees its reservation, and keeps `partial` (the bytes received, in
  // order from 0) for a resume when it is non-empty, short of the total, and fits the budget.
  // `took` > 0: the stream received every byte in that time (it paces the retry hint).
  void Release(const core::ClientId& client, const UploadKey& key, std::string partial, absl::Duration took);

  struct Stats {
    int in_flight = 0;
    uint64_t reserved_bytes = 0;
    uint64_t partial_bytes = 0;
    size_t partials = 0;
    uint64_t shed = 0;      // uploads refused for load, since the start
    uint64_t resumed = 0;   // uploads admitted at an offset > 0
  };
  Stats stats() const;

 private:
  struct Partial {
    core::ClientId client;
    UploadKey key;
    std::string bytes;
    absl::Time stored;
  };
  using PartialList = std::list<Partial>;  // oldest first

  void ExpireLocked(absl::Time now);                     // requires mu_
  // Evicts the oldest partials (never `spare`'s, whose bytes do not count) until `bytes` more fit
  // the budget; false if they cannot. Requires mu_.
  bool MakeRoomLocked(uint64_t bytes, const core::ClientId* spare);
  void DropPartialLocked(const core::ClientId& client);  // requires mu_

  const UploadLimits limits_;
  const core::Clock* clock_;
  mutable std::mutex mu_;
  int in_flight_ = 0;                                        // GUARDED_BY(mu_)
  uint64_t reserved_bytes_ = 0;                              // GUARDED_BY(mu_)
  uint64_t partial_bytes_ = 0;                               // GUARDED_BY(mu_)
  PartialList partials_;                                     // GUARDED_BY(mu_)
  std::map<core::ClientId, PartialList::iterator> by_client_;  // GUARDED_BY(mu_)
  RetryQueue queue_;                                         // GUARDED_BY(mu_): shed, not yet admitted
  std::set<core::ClientId> streaming_;                       // GUARDED_BY(mu_): clients with a stream in
  uint64_t shed_ = 0;                                        // GUARDED_BY(mu_)
  uint64_t resumed_ = 0;                                     // GUARDED_BY(mu_)
};

}  // namespace tessera::coordinator
