#include "security/secagg/wire.h"

#include <cstring>

#include "core/status.h"
#include "core/strings.h"
#include "tessera/v1/tessera.pb.h"

namespace tessera::security::secagg {
namespace {

using core::StrCat;

std::string KeyBytes(const PublicKey& k) { return std::string(reinterpret_cast<const char*>(k.data()), k.size()); }

absl::StatusOr<PublicKey> ParseKey(const std::string& bytes) {
  PublicKey k;
  if (bytes.size() != k.size()) return absl::InvalidArgumentError(StrCat("public key of ", bytes.size(), " bytes"));
  std::memcpy(k.data(), bytes.data(), k.size());
  return k;
}

void ToProto(const AdvertiseKeys& k, v1::SecAggKeys* p) {
  p->set_c_pk(KeyBytes(k.c_pk));
  p->set_s_pk(KeyBytes(k.s_pk));
}

absl::StatusOr<AdvertiseKeys> FromProto(const v1::SecAggKeys& p) {
  AdvertiseKeys k;
  TESSERA_ASSIGN_OR_RETURN(k.c_pk, ParseKey(p.c_pk()));
  TESSERA_ASSIGN_OR_RETURN(k.s_pk, ParseKey(p.s_pk()));
  return k;
}

void ToProto(const ShamirShare& s, v1::SecAggShare* p) {
  p->set_x(s.x);
  for (uint64_t y : s.y) p->add_y(y);
}

ShamirShare FromProto(const v1::SecAggShare& p) {
  ShamirShare s;
  s.x = p.x();
  s.y.assign(p.y().begin(), p.y().end());
  return s;
}

void ToProto(const std::map<ParticipantId, std::vector<uint8_t>>& sealed, v1::SecAggSealed* p) {
  for (const auto& [id, bytes] : sealed) {
    (*p->mutable_sealed())[id] = std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
}

std::map<ParticipantId, std::vector<uint8_t>> FromProto(const v1::SecAggSealed& p) {
  std::map<ParticipantId, std::vector<uint8_t>> out;
  for (const auto& [id, bytes] : p.sealed()) out[id].assign(bytes.begin(), bytes.end());
  return out;
}

}  // namespace

std::string SerializeRequest(const StageRequest& request) {
  v1::SecAggRequest p;
  switch (request.stage()) {
    case Stage::kAdvertiseKeys: ToProto(std::get<0>(request.body), p.mutable_advertise_keys()); break;
    case Stage::kShareKeys: ToProto(std::get<1>(request.body).sealed_shares, p.mutable_share_keys()); break;  // sets it
    case Stage::kMaskedInput: {
      const auto& v = std::get<2>(request.body).masked;
      // Little-endian on the wire, as on every machine Tessera builds for (x86-64, arm64).
      p.set_masked_input(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(uint64_t)));
      break;
    }
    case Stage::kUnmasking: {
      const auto& r = std::get<3>(request.body);
      p.mutable_unmasking();  // set the oneof even when both maps are empty
      for (const auto& [id, s] : r.self_mask_shares) ToProto(s, &(*p.mutable_unmasking()->mutable_self_mask_shares())[id]);
      for (const auto& [id, s] : r.key_shares) ToProto(s, &(*p.mutable_unmasking()->mutable_key_shares())[id]);
      break;
    }
  }
  return p.SerializeAsString();
}

absl::StatusOr<StageRequest> ParseRequest(std::string_view bytes) {
  v1::SecAggRequest p;
  if (bytes.size() > INT32_MAX || !p.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("secure aggregation request does not parse");
  }
  switch (p.body_case()) {
    case v1::SecAggRequest::kAdvertiseKeys: {
      TESSERA_ASSIGN_OR_RETURN(AdvertiseKeys k, FromProto(p.advertise_keys()));
      return StageRequest{k};
    }
    case v1::SecAggRequest::kShareKeys: return StageRequest{ShareKeys{FromProto(p.share_keys())}};
    case v1::SecAggRequest::kMaskedInput: {
      const std::string& raw = p.masked_input();
      if (raw.size() % sizeof(uint64_t) != 0) return absl::InvalidArgumentError("masked input is not whole uint64s");
      MaskedInput m;
      m.masked.resize(raw.size() / sizeof(uint64_t));
      if (!raw.empty()) std::memcpy(m.masked.data(), raw.data(), raw.size());  // data() may be null
      return StageRequest{std::move(m)};
    }
    case v1::SecAggRequest::kUnmasking: {
      UnmaskingResponse r;
      for (const auto& [id, s] : p.unmasking().self_mask_shares()) r.self_mask_shares[id] = FromProto(s);
      for (const auto& [id, s] : p.unmasking().key_shares()) r.key_shares[id] = FromProto(s);
      return StageRequest{std::move(r)};
    }
    default: return absl::InvalidArgumentError("secure aggregation request has no body");
  }
}

std::string SerializeReply(const StageReply& reply) {
  v1::SecAggReply p;
  switch (reply.body.index()) {
    case 0:
      p.mutable_keys();  // set the oneof even when there are no neighbours
      for (const auto& [id, k] : std::get<0>(reply.body).neighbours) ToProto(k, &(*p.mutable_keys()->mutable_neighbours())[id]);
      break;
    case 1: ToProto(std::get<1>(reply.body).sealed_shares, p.mutable_shares()); break;
    case 2: {
      const auto& r = std::get<2>(reply.body);
      p.mutable_unmasking_request();  // set the oneof even when both lists are empty
      for (ParticipantId id : r.survivors) p.mutable_unmasking_request()->add_survivors(id);
      for (ParticipantId id : r.dropped) p.mutable_unmasking_request()->add_dropped(id);
      break;
    }
    default: p.set_done(true);
  }
  return p.SerializeAsString();
}

absl::StatusOr<StageReply> ParseReply(std::string_view bytes) {
  v1::SecAggReply p;
  if (bytes.size() > INT32_MAX || !p.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("secure aggregation reply does not parse");
  }
  switch (p.body_case()) {
    case v1::SecAggReply::kKeys: {
      KeysBroadcast b;
      for (const auto& [id, k] : p.keys().neighbours()) {
        TESSERA_ASSIGN_OR_RETURN(b.neighbours[id], FromProto(k));
      }
      return StageReply{std::move(b)};
    }
    case v1::SecAggReply::kShares: return StageReply{SharesForClient{FromProto(p.shares())}};
    case v1::SecAggReply::kUnmaskingRequest: {
      UnmaskingRequest r;
      r.survivors.assign(p.unmasking_request().survivors().begin(), p.unmasking_request().survivors().end());
      r.dropped.assign(p.unmasking_request().dropped().begin(), p.unmasking_request().dropped().end());
      return StageReply{std::move(r)};
    }
    case v1::SecAggReply::kDone: return StageReply{std::monostate{}};
    default: return absl::InvalidArgumentError("secure aggregation reply has no body");
  }
}

}  // namespace tessera::security::secagg
