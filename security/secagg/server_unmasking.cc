// Stage 3 of the server: rebuild the survivors' self-mask seeds and the dropped participants'
// mask keys from t shares each, and strip every mask that does not cancel from the sum.
#include <algorithm>
#include <thread>

#include "core/status.h"
#include "core/strings.h"
#include "security/secagg/fixed_point.h"
#include "security/secagg/server.h"

namespace tessera::security::secagg {

using core::StrCat;

absl::Status SecAggServer::OnUnmasking(ParticipantId from, const UnmaskingResponse& msg) {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ServerStage::kUnmasking));
  TESSERA_RETURN_IF_ERROR(CheckParticipant(from));
  auto req = requests_.find(from);
  if (req == requests_.end()) return absl::FailedPreconditionError(StrCat("participant ", from, " was not asked to unmask"));
  if (responses_.contains(from)) return absl::FailedPreconditionError(StrCat("participant ", from, " already answered"));
  // The answer must be exactly what was asked: b shares of survivors, s_sk shares of the dropped.
  const auto& r = req->second;
  std::set<ParticipantId> survivors(r.survivors.begin(), r.survivors.end());
  std::set<ParticipantId> dropped(r.dropped.begin(), r.dropped.end());
  if (msg.self_mask_shares.size() != survivors.size() || msg.key_shares.size() != dropped.size()) {
    return absl::InvalidArgumentError(StrCat("participant ", from, " answered a different unmasking request"));
  }
  for (const auto& [p, share] : msg.self_mask_shares) {
    if (!survivors.contains(p) || share.x != from) {
      return absl::InvalidArgumentError(StrCat("participant ", from, " sent a self-mask share it was not asked for"));
    }
  }
  for (const auto& [p, share] : msg.key_shares) {
    if (!dropped.contains(p) || share.x != from) {
      return absl::InvalidArgumentError(StrCat("participant ", from, " sent a key share it was not asked for"));
    }
  }
  responses_[from] = msg;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> SecAggServer::CloseUnmasking() {
  TESSERA_RETURN_IF_ERROR(ExpectStage(ServerStage::kUnmasking));
  const uint64_t mask = params_.modulus_mask();
  // Gather shares by owner.
  std::map<ParticipantId, std::vector<ShamirShare>> seed_shares;  // of survivors' b
  std::map<ParticipantId, std::vector<ShamirShare>> key_shares;   // of dropped s_sk
  for (const auto& [from, resp] : responses_) {
    for (const auto& [p, share] : resp.self_mask_shares) seed_shares[p].push_back(share);
    for (const auto& [p, share] : resp.key_shares) key_shares[p].push_back(share);
  }
  // First every mask key (cheap: Shamir, X25519, HKDF), then the masks (all the time goes
  // there: one keystream the length of the vector each), spread over the cores.
  struct MaskJob {
    SecretBytes key;
    bool add;  // add (true) or subtract the mask's stream
  };
  std::vector<MaskJob> jobs;
  // Each survivor's self mask is subtracted.
  for (ParticipantId u : u3_) {
    auto& shares = seed_shares[u];
    if (static_cast<int>(shares.size()) < params_.threshold) {
      return AbortWith(StrCat("only ", shares.size(), " shares of participant ", u, "'s self mask, threshold is ",
                              params_.threshold));
    }
    auto seed = ShamirCombine(shares, params_.threshold, 32);
    if (!seed.ok()) return AbortWith(StrCat("cannot rebuild the self mask of ", u, ": ", seed.status().message()));
    auto key = SelfMaskKey(seed->span(), u, session_id_);
    if (!key.ok()) return AbortWith(std::string(key.status().message()));
    jobs.push_back({*std::move(key), /*add=*/false});
  }
  // The pairwise masks survivors shared with participants that dropped after ShareKeys: u added
  // +PRG(s_uv) if u > v, else -PRG(s_uv); undo it.
  for (ParticipantId v : u2_) {
    if (u3_.contains(v)) continue;
    std::vector<ParticipantId> masked_with;
    for (ParticipantId u : graph_.Neighbours(v)) {
      if (u3_.contains(u)) masked_with.push_back(u);
    }
    if (masked_with.empty()) continue;
    auto& shares = key_shares[v];
    if (static_cast<int>(shares.size()) < params_.threshold) {
      return AbortWith(StrCat("only ", shares.size(), " shares of dropped participant ", v, "'s key, threshold is ",
                              params_.threshold));
    }
    auto sk = ShamirCombine(shares, params_.threshold, 32);
    if (!sk.ok()) return AbortWith(StrCat("cannot rebuild the key of ", v, ": ", sk.status().message()));
    auto pair = X25519KeyPair::FromPrivate(sk->span());
    if (!pair.ok()) return AbortWith(std::string(pair.status().message()));
    if (pair->public_key() != keys_.at(v).s_pk) {
      return AbortWith(StrCat("the rebuilt key of ", v, " does not match its advertised key"));
    }
    for (ParticipantId u : masked_with) {
      auto key = PairwiseMaskKey(*pair, v, keys_.at(u).s_pk, u, session_id_);
      if (!key.ok()) return AbortWith(std::string(key.status().message()));
      jobs.push_back({*std::move(key), /*add=*/u < v});
    }
  }
  // Thread i applies jobs i, i + T, ... into its own accumulator (thread 0 into the sum itself);
  // the accumulators are added at the end. Addition mod 2^k is associative: the sum is exact
  // whatever the split.
  const int threads = static_cast<int>(std::clamp<size_t>(std::thread::hardware_concurrency(), 1,
                                                          std::max<size_t>(jobs.size() / 8, 1)));
  std::vector<std::vector<uint64_t>> partial(threads - 1, std::vector<uint64_t>(sum_.size(), 0));
  std::vector<absl::Status> status(threads);
  auto work = [&](int t) {
    std::span<uint64_t> acc = t == 0 ? std::span<uint64_t>(sum_) : std::span<uint64_t>(partial[t - 1]);
    for (size_t j = t; j < jobs.size(); j += threads) {
      if (absl::Status s = ApplyMask(acc, jobs[j].key.span(), jobs[j].add, mask); !s.ok()) {
        status[t] = s;
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
  for (const absl::Status& s : status) {
    if (!s.ok()) return AbortWith(std::string(s.message()));
  }
  for (const auto& p : partial) AddMod(sum_, p, params_.modulus_bits);
  stage_ = ServerStage::kDone;
  responses_.clear();
  return std::move(sum_);
}

}  // namespace tessera::security::secagg
