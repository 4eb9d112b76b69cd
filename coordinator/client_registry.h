// ClientRegistry: the clients that registered and when each was last heard from.
// Not thread-safe: the Coordinator guards it with its mutex.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/ids.h"

namespace tessera::coordinator {

struct ClientInfo {
  absl::Time registered_at;
  absl::Time last_seen;
  std::map<std::string, std::string> properties;
};

class ClientRegistry {
 public:
  // A client is live while it was heard from within `liveness_timeout`.
  explicit ClientRegistry(absl::Duration liveness_timeout) : liveness_timeout_(liveness_timeout) {}

  // Registers or re-registers `id` (a restarted client keeps its id). Returns true if new.
  bool Register(const core::ClientId& id, std::map<std::string, std::string> properties, absl::Time now);
  // NOT_FOUND for a client that never registered (or was expired): it must register again.
  absl::Status Touch(const core::ClientId& id, absl::Time now);
  // Forgets `id` (a revoked client). Returns true if it was registered.
  bool Remove(const core::ClientId& id) { return clients_.erase(id) > 0; }
  bool Contains(const core::ClientId& id) const { return clients_.contains(id); }
  // Live clients, sorted by id so that sampling from them is deterministic.
  std::vector<core::ClientId> Available(absl::Time now) const;
  // Removes clients not heard from within the liveness timeout and returns them.
  std::vector<core::ClientId> ExpireStale(absl::Time now);
  size_t size() const { return clients_.size(); }

 private:
  absl::Duration liveness_timeout_;
  std::map<core::ClientId, ClientInfo> clients_;
};

}  // namespace tessera::coordinator
