#include "coordinator/client_registry.h"

#include "core/strings.h"

namespace tessera::coordinator {

bool ClientRegistry::Register(const core::ClientId& id, std::map<std::string, std::string> properties,
                              absl::Time now) {
  auto [it, inserted] = clients_.try_emplace(id);
  if (inserted) it->second.registered_at = now;
  it->second.last_seen = now;
  it->second.properties = std::move(properties);
  return inserted;
}

absl::Status ClientRegistry::Touch(const core::ClientId& id, absl::Time now) {
  auto it = clients_.find(id);
  if (it == clients_.end()) {
    return absl::NotFoundError(core::StrCat("client '", id.value, "' is not registered"));
  }
  it->second.last_seen = now;
  return absl::OkStatus();
}

std::vector<core::ClientId> ClientRegistry::Available(absl::Time now) const {
  std::vector<core::ClientId> out;
  for (const auto& [id, info] : clients_) {
    if (now - info.last_seen <= liveness_timeout_) out.push_back(id);
  }
  return out;
}

std::vector<core::ClientId> ClientRegistry::ExpireStale(absl::Time now) {
  std::vector<core::ClientId> out;
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (now - it->second.last_seen > liveness_timeout_) {
      out.push_back(it->first);
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

}  // namespace tessera::coordinator
