// The SecAgg+ protocol end to end in process: every client and the server as state machines,
// messages handed over by the test. The unmasked sum must equal the plaintext modular sum of
// the inputs that made it into the session (U3), bit for bit, whatever drops out where, and the
// session must abort, releasing nothing, when fewer than t remain.
#include <gtest/gtest.h>

#include <random>

#include "security/secagg/client.h"
#include "security/secagg/config.h"
#include "security/secagg/server.h"
#include "security/secagg/wire.h"
#include "tests/testing/status_macros.h"

namespace tessera::security::secagg {
namespace {

// The stage before which a participant drops out (kNever: it stays to the end).
enum DropBefore { kAdvertise = 0, kShare = 1, kMasked = 2, kUnmask = 3, kNever = 4 };

struct Session {
  SessionParams params;
  std::vector<std::vector<uint64_t>> inputs;  // index p - 1
  std::map<ParticipantId, DropBefore> drops;
};

struct Outcome {
  absl::StatusOr<std::vector<uint64_t>> sum = absl::UnknownError("not run");
  std::set<ParticipantId> input_set;
};

SessionParams Params(int n, int k, int t, int length, int modulus_bits = 64) {
  SessionParams p;
  p.run_id = "run-test";
  p.round = 3;
  for (int i = 0; i < n; ++i) p.participants.push_back("client-" + std::to_string(i));
  p.neighbours = k;
  p.threshold = t;
  p.graph_seed = 42;
  p.vector_length = length;
  p.modulus_bits = modulus_bits;
  return p;
}

std::vector<std::vector<uint64_t>> RandomInputs(const SessionParams& p, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<uint64_t>> out(p.num_participants(), std::vector<uint64_t>(p.vector_length));
  for (auto& v : out) {
    for (auto& x : v) x = rng() & p.modulus_mask();
  }
  return out;
}

std::vector<uint64_t> PlainSum(const Session& s, const std::set<ParticipantId>& who) {
  std::vector<uint64_t> sum(s.params.vector_length, 0);
  for (ParticipantId p : who) {
    for (int i = 0; i < s.params.vector_length; ++i) sum[i] = (sum[i] + s.inputs[p - 1][i]) & s.params.modulus_mask();
  }
  return sum;
}

bool Stays(const Session& s, ParticipantId p, DropBefore stage) {
  auto it = s.drops.find(p);
  return it == s.drops.end() || it->second > stage;
}

// Runs the whole protocol; a stage's server close failing ends the run with its status.
Outcome RunSession(const Session& s) {
  Outcome out;
  const int n = s.params.num_participants();
  auto server = SecAggServer::Create(s.params).value();
  std::map<ParticipantId, std::unique_ptr<SecAggClient>> clients;
  for (int p = 1; p <= n; ++p) clients[p] = SecAggClient::Create(s.params, p).value();

  for (auto& [p, c] : clients) {
    if (!Stays(s, p, kAdvertise)) continue;
    EXPECT_OK(server->OnAdvertiseKeys(p, c->AdvertiseKeysStage().value()));
  }
  auto broadcasts = server->CloseAdvertiseKeys();
  if (!broadcasts.ok()) return {broadcasts.status(), {}};
  std::vector<ParticipantId> sharing;
  for (auto& [p, b] : *broadcasts) {
    if (!Stays(s, p, kShare)) continue;
    auto shares = clients[p]->ShareKeysStage(b);
    if (!shares.ok()) continue;  // the client aborted (too few neighbours): it drops
    EXPECT_OK(server->OnShareKeys(p, *shares));
  }
  auto relays = server->CloseShareKeys();
  if (!relays.ok()) return {relays.status(), {}};
  for (auto& [p, r] : *relays) {
    if (!Stays(s, p, kMasked)) continue;
    auto masked = clients[p]->MaskedInputStage(r, s.inputs[p - 1]);
    if (!masked.ok()) continue;
    EXPECT_OK(server->OnMaskedInput(p, *masked));
  }
  auto requests = server->CloseMaskedInput();
  if (!requests.ok()) return {requests.status(), {}};
  for (auto& [p, r] : *requests) {
    if (!Stays(s, p, kUnmask)) continue;
    auto resp = clients[p]->UnmaskingStage(r);
    EXPECT_OK(resp.status());
    if (resp.ok()) EXPECT_OK(server->OnUnmasking(p, *resp));
  }
  out.input_set = server->input_set();
  out.sum = server->CloseUnmasking();
  return out;
}

void ExpectExactSum(const Session& s) {
  Outcome o = RunSession(s);
  ASSERT_OK(o.sum.status());
  std::set<ParticipantId> expected_inputs;
  for (int p = 1; p <= s.params.num_participants(); ++p) {
    if (Stays(s, p, kMasked)) expected_inputs.insert(p);
  }
  EXPECT_EQ(o.input_set, expected_inputs);
  EXPECT_EQ(*o.sum, PlainSum(s, o.input_set));
}

TEST(SecAggProtocolTest, MaskedSumEqualsPlaintextSumBitForBit) {
  for (int n : {2, 3, 10}) {
    Session s{Params(n, n - 1, n == 2 ? 1 : n / 2 + 1, 257), {}, {}};
    s.inputs = RandomInputs(s.params, n);
    SCOPED_TRACE(n);
    ExpectExactSum(s);
  }
}

TEST(SecAggProtocolTest, HundredClientsSecAggPlusBitForBit) {
  auto cfg = ResolveConfig(SecAggConfig{}, 100).value();
  EXPECT_LT(cfg.neighbours, 99);  // a sparse graph, not classic SecAgg
  Session s{Params(100, cfg.neighbours, cfg.threshold, 1000), {}, {}};
  s.inputs = RandomInputs(s.params, 100);
  ExpectExactSum(s);
}

TEST(SecAggProtocolTest, ModulusBelow64BitsWrapsCorrectly) {
  Session s{Params(10, 9, 6, 500, 20), {}, {}};
  s.inputs = RandomInputs(s.params, 7);
  ExpectExactSum(s);
}

TEST(SecAggProtocolTest, TwentyPercentDropAfterMaskedInputStillSumsTheirInputs) {
  auto cfg = ResolveConfig(SecAggConfig{}, 100).value();
  Session s{Params(100, cfg.neighbours, cfg.threshold, 300), {}, {}};
  s.inputs = RandomInputs(s.params, 11);
  for (ParticipantId p = 1; p <= 100; p += 5) s.drops[p] = kUnmask;  // 20 of 100
  ExpectExactSum(s);
}

TEST(SecAggProtocolTest, DropoutsAtEveryStage) {
  auto cfg = ResolveConfig(SecAggConfig{}, 60).value();
  Session s{Params(60, cfg.neighbours, cfg.threshold, 200), {}, {}};
  s.inputs = RandomInputs(s.params, 13);
  for (ParticipantId p : {3u, 17u}) s.drops[p] = kAdvertise;
  for (ParticipantId p : {5u, 29u}) s.drops[p] = kShare;
  for (ParticipantId p : {8u, 41u, 52u}) s.drops[p] = kMasked;  // pairwise masks must be removed
  for (ParticipantId p : {11u, 44u}) s.drops[p] = kUnmask;
  ExpectExactSum(s);
}

TEST(SecAggProtocolTest, ClassicSecAggWithDropsAfterShareKeys) {
  Session s{Params(12, 11, 7, 100), {}, {}};
  s.inputs = RandomInputs(s.params, 17);
  s.drops[2] = kMasked;
  s.drops[9] = kMasked;
  s.drops[4] = kUnmask;
  ExpectExactSum(s);
}

TEST(SecAggProtocolTest, TooManyDropoutsAbortAndReleaseNothing) {
  Session s{Params(10, 9, 6, 50), {}, {}};
  s.inputs = RandomInputs(s.params, 19);
  for (ParticipantId p : {1u, 2u, 3u, 4u, 5u}) s.drops[p] = kMasked;  // 5 inputs left, t = 6
  Outcome o = RunSession(s);
  EXPECT_CODE(o.sum, absl::StatusCode::kAborted);
}

TEST(SecAggProtocolTest, TooFewUnmaskingAnswersAbort) {
  Session s{Params(10, 9, 6, 50), {}, {}};
  s.inputs = RandomInputs(s.params, 23);
  for (ParticipantId p : {1u, 2u, 3u, 4u, 5u}) s.drops[p] = kUnmask;  // 5 answers, t = 6
  Outcome o = RunSession(s);
  EXPECT_CODE(o.sum, absl::StatusCode::kAborted);
}

TEST(SecAggProtocolTest, TooFewAdvertisedKeysAbort) {
  Session s{Params(6, 5, 4, 10), {}, {}};
  s.inputs = RandomInputs(s.params, 29);
  for (ParticipantId p : {1u, 2u, 3u}) s.drops[p] = kAdvertise;
  Outcome o = RunSession(s);
  EXPECT_CODE(o.sum, absl::StatusCode::kAborted);
}

// ---- The client refuses a dishonest or broken server ----

struct ThreeClients {
  SessionParams params = Params(4, 3, 2, 8);
  std::unique_ptr<SecAggServer> server = SecAggServer::Create(params).value();
  std::map<ParticipantId, std::unique_ptr<SecAggClient>> clients;
  std::map<ParticipantId, SharesForClient> relays;

  // Runs everyone up to the unmasking request of each client; participant 4 drops after sharing.
  std::map<ParticipantId, UnmaskingRequest> UpToUnmasking() {
    for (ParticipantId p = 1; p <= 4; ++p) {
      clients[p] = SecAggClient::Create(params, p).value();
      EXPECT_OK(server->OnAdvertiseKeys(p, clients[p]->AdvertiseKeysStage().value()));
    }
    auto closed1 = server->CloseAdvertiseKeys().value();
    for (auto& [p, b] : closed1) {
      EXPECT_OK(server->OnShareKeys(p, clients[p]->ShareKeysStage(b).value()));
    }
    relays = server->CloseShareKeys().value();
    for (ParticipantId p = 1; p <= 3; ++p) {
      EXPECT_OK(server->OnMaskedInput(p, clients[p]->MaskedInputStage(relays[p], std::vector<uint64_t>(8, p)).value()));
    }
    return server->CloseMaskedInput().value();
  }
};

TEST(SecAggClientTest, RefusesAPeerListedBothAsSurvivorAndDropped) {
  ThreeClients t;
  auto req = t.UpToUnmasking();
  UnmaskingRequest evil = req[1];
  evil.survivors.push_back(4);  // 4 is in dropped: asking for both of its secrets
  EXPECT_CODE(t.clients[1]->UnmaskingStage(evil), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.clients[1]->stage(), ClientStage::kAborted);
  // Aborted for good: even the honest request is refused now.
  EXPECT_CODE(t.clients[1]->UnmaskingStage(req[1]), absl::StatusCode::kFailedPrecondition);
}

TEST(SecAggClientTest, RefusesUnknownIdsRepeatsAndIncompleteLists) {
  ThreeClients t;
  auto req = t.UpToUnmasking();
  UnmaskingRequest unknown = req[1];
  unknown.dropped.push_back(77);
  EXPECT_CODE(t.clients[1]->UnmaskingStage(unknown), absl::StatusCode::kInvalidArgument);
  UnmaskingRequest repeated = req[2];
  repeated.survivors.push_back(repeated.survivors.front() == 2 ? repeated.survivors.back() : repeated.survivors.front());
  EXPECT_CODE(t.clients[2]->UnmaskingStage(repeated), absl::StatusCode::kInvalidArgument);
  UnmaskingRequest incomplete = req[3];
  incomplete.dropped.clear();
  EXPECT_CODE(t.clients[3]->UnmaskingStage(incomplete), absl::StatusCode::kInvalidArgument);
}

TEST(SecAggClientTest, AnswersOnceAndNeverRevealsBothSharesOfAPeer) {
  ThreeClients t;
  auto req = t.UpToUnmasking();
  ASSERT_OK_AND_ASSIGN(UnmaskingResponse resp, t.clients[1]->UnmaskingStage(req[1]));
  for (const auto& [p, share] : resp.key_shares) EXPECT_FALSE(resp.self_mask_shares.contains(p));
  EXPECT_TRUE(resp.key_shares.contains(4));
  // A second request, now claiming 4 survived, gets nothing.
  UnmaskingRequest flipped;
  flipped.survivors = {2, 3, 4};
  EXPECT_CODE(t.clients[1]->UnmaskingStage(flipped), absl::StatusCode::kFailedPrecondition);
}

TEST(SecAggClientTest, TamperedShareCiphertextIsRejected) {
  SessionParams params = Params(3, 2, 2, 4);
  auto server = SecAggServer::Create(params).value();
  std::map<ParticipantId, std::unique_ptr<SecAggClient>> clients;
  for (ParticipantId p = 1; p <= 3; ++p) {
    clients[p] = SecAggClient::Create(params, p).value();
    ASSERT_OK(server->OnAdvertiseKeys(p, clients[p]->AdvertiseKeysStage().value()));
  }
  auto closed2 = server->CloseAdvertiseKeys().value();
  for (auto& [p, b] : closed2) {
    ASSERT_OK(server->OnShareKeys(p, clients[p]->ShareKeysStage(b).value()));
  }
  auto relays = server->CloseShareKeys().value();
  SharesForClient tampered = relays[1];
  tampered.sealed_shares.begin()->second[20] ^= 0x01;
  EXPECT_CODE(clients[1]->MaskedInputStage(tampered, std::vector<uint64_t>(4, 1)), absl::StatusCode::kDataLoss);
  // A ciphertext moved to another recipient does not open either (the AAD binds the pair).
  SharesForClient moved;
  moved.sealed_shares[3] = relays[1].sealed_shares.at(3);
  EXPECT_CODE(clients[2]->MaskedInputStage(moved, std::vector<uint64_t>(4, 1)), absl::StatusCode::kDataLoss);
}

TEST(SecAggClientTest, StagesOutOfOrderAreFailedPrecondition) {
  auto client = SecAggClient::Create(Params(3, 2, 2, 4), 1).value();
  EXPECT_CODE(client->ShareKeysStage(KeysBroadcast{}), absl::StatusCode::kFailedPrecondition);
  ASSERT_OK(client->AdvertiseKeysStage().status());
  EXPECT_CODE(client->AdvertiseKeysStage(), absl::StatusCode::kFailedPrecondition);
}

TEST(SecAggClientTest, RefusesKeysOfNonNeighboursAndRepeatedKeys) {
  SessionParams params = Params(20, 4, 3, 4);
  auto client = SecAggClient::Create(params, 1).value();
  ASSERT_OK(client->AdvertiseKeysStage().status());
  NeighbourGraph g = GraphOf(params);
  KeysBroadcast b;
  for (ParticipantId p = 2; p <= 20; ++p) {
    if (g.AreNeighbours(1, p)) continue;
    auto k1 = X25519KeyPair::Generate().value();
    auto k2 = X25519KeyPair::Generate().value();
    b.neighbours[p] = {k1.public_key(), k2.public_key()};
    break;
  }
  EXPECT_CODE(client->ShareKeysStage(b), absl::StatusCode::kInvalidArgument);
}

// ---- The server refuses malformed input ----

TEST(SecAggServerTest, RefusesWrongLengthOutOfRangeAndDuplicateInputs) {
  SessionParams params = Params(3, 2, 2, 4, 16);
  auto server = SecAggServer::Create(params).value();
  std::map<ParticipantId, std::unique_ptr<SecAggClient>> clients;
  for (ParticipantId p = 1; p <= 3; ++p) {
    clients[p] = SecAggClient::Create(params, p).value();
    ASSERT_OK(server->OnAdvertiseKeys(p, clients[p]->AdvertiseKeysStage().value()));
  }
  EXPECT_CODE(server->OnAdvertiseKeys(1, AdvertiseKeys{}), absl::StatusCode::kFailedPrecondition);
  EXPECT_CODE(server->OnAdvertiseKeys(9, AdvertiseKeys{}), absl::StatusCode::kInvalidArgument);
  auto closed3 = server->CloseAdvertiseKeys().value();
  for (auto& [p, b] : closed3) {
    ASSERT_OK(server->OnShareKeys(p, clients[p]->ShareKeysStage(b).value()));
  }
  auto relays = server->CloseShareKeys().value();
  EXPECT_CODE(server->OnMaskedInput(1, MaskedInput{std::vector<uint64_t>(5, 0)}), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(server->OnMaskedInput(1, MaskedInput{std::vector<uint64_t>(4, 1u << 16)}),
              absl::StatusCode::kInvalidArgument);
  ASSERT_OK(server->OnMaskedInput(1, clients[1]->MaskedInputStage(relays[1], std::vector<uint64_t>(4, 1)).value()));
  EXPECT_CODE(server->OnMaskedInput(1, MaskedInput{std::vector<uint64_t>(4, 0)}), absl::StatusCode::kFailedPrecondition);
}

// ---- Parameters ----

TEST(SecAggConfigTest, DefaultsForHundredClientsAreSparseAndSafe) {
  ASSERT_OK_AND_ASSIGN(SecAggConfig c, ResolveConfig(SecAggConfig{}, 100));
  EXPECT_GE(c.neighbours, 20);
  EXPECT_LT(c.neighbours, 99);
  EXPECT_GT(c.threshold, c.neighbours / 2.0 + c.dishonest_fraction * c.neighbours);
  EXPECT_LE(c.threshold, c.neighbours * (1 - c.expected_dropout));
}

TEST(SecAggConfigTest, RefusesImpossibleParameters) {
  SecAggConfig low_t;
  low_t.neighbours = 10;
  low_t.threshold = 5;  // not above k/2
  EXPECT_CODE(ResolveConfig(low_t, 100), absl::StatusCode::kInvalidArgument);
  SecAggConfig high_dropout;
  high_dropout.neighbours = 10;
  high_dropout.expected_dropout = 0.6;  // at most 4 neighbours left, but t must exceed 5
  EXPECT_CODE(ResolveConfig(high_dropout, 100), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(ResolveConfig(SecAggConfig{}, 1), absl::StatusCode::kInvalidArgument);
  SecAggConfig overflow;
  overflow.fixed_point.modulus_bits = 24;  // cannot hold 16-bit values times 2^16 weights
  EXPECT_CODE(ResolveConfig(overflow, 100), absl::StatusCode::kInvalidArgument);
}

// Regression: k and t were once checked against the average number of surviving neighbours, so
// at n = 1000 and 30% dropout some client almost always kept fewer than t and the round aborted.
// The chosen k must now keep the chance that any client falls short below the target, checked
// here by drawing dropouts on the real graph.
TEST(SecAggConfigTest, ChosenParametersSurviveRandomDropoutsOnTheRealGraph) {
  for (double dropout : {0.1, 0.3}) {
    SecAggConfig requested;
    requested.expected_dropout = dropout;
    ASSERT_OK_AND_ASSIGN(SecAggConfig c, ResolveConfig(requested, 1000));
    EXPECT_LE(AbortProbability(1000, c.neighbours, c.threshold, dropout), requested.max_abort_probability);
    NeighbourGraph g = NeighbourGraph::Build(1000, c.neighbours, 5);
    std::mt19937_64 rng(11);
    std::bernoulli_distribution drops(dropout);
    int aborted = 0;
    const int draws = 100;
    for (int d = 0; d < draws; ++d) {
      std::vector<bool> alive(1001);
      for (int p = 1; p <= 1000; ++p) alive[p] = !drops(rng);
      for (ParticipantId p = 1; p <= 1000; ++p) {
        int live = 0;
        for (ParticipantId q : g.Neighbours(p)) live += alive[q] ? 1 : 0;
        if (alive[p] && live < c.threshold) {
          ++aborted;
          break;
        }
      }
    }
    EXPECT_LE(aborted, 5) << "dropout " << dropout << ": k " << c.neighbours << ", t " << c.threshold;
  }
}

TEST(NeighbourGraphTest, RingIsRegularSymmetricAndCompleteWhenKIsLarge) {
  NeighbourGraph g = NeighbourGraph::Build(50, 8, 3);
  for (ParticipantId p = 1; p <= 50; ++p) {
    EXPECT_EQ(g.Neighbours(p).size(), 8u);
    EXPECT_FALSE(g.Neighbours(p).contains(p));
    for (ParticipantId q : g.Neighbours(p)) EXPECT_TRUE(g.AreNeighbours(q, p));
  }
  NeighbourGraph other = NeighbourGraph::Build(50, 8, 4);
  bool differs = false;
  for (ParticipantId p = 1; p <= 50; ++p) differs |= g.Neighbours(p) != other.Neighbours(p);
  EXPECT_TRUE(differs);
  NeighbourGraph full = NeighbourGraph::Build(7, 6, 3);
  for (ParticipantId p = 1; p <= 7; ++p) EXPECT_EQ(full.Neighbours(p).size(), 6u);
}

}  // namespace
}  // namespace tessera::security::secagg

namespace tessera::security::secagg {
namespace {

// Regression (found by the wire fuzzer): empty messages were serialized without their oneof
// body and did not parse back; an empty masked input memcpy'd from a null pointer.
TEST(SecAggWireTest, EveryRequestAndReplyRoundTripsIncludingEmptyOnes) {
  for (const StageRequest& r : {StageRequest{AdvertiseKeys{}}, StageRequest{ShareKeys{}}, StageRequest{MaskedInput{}},
                                StageRequest{UnmaskingResponse{}}, StageRequest{MaskedInput{{1, 2, ~uint64_t{0}}}}}) {
    ASSERT_OK_AND_ASSIGN(StageRequest back, ParseRequest(SerializeRequest(r)));
    EXPECT_EQ(back.stage(), r.stage());
    if (r.stage() == Stage::kMaskedInput) {
      EXPECT_EQ(std::get<2>(back.body).masked, std::get<2>(r.body).masked);
    }
  }
  for (const StageReply& r : {StageReply{KeysBroadcast{}}, StageReply{SharesForClient{}}, StageReply{UnmaskingRequest{}},
                              StageReply{std::monostate{}}, StageReply{UnmaskingRequest{{1, 2}, {3}}}}) {
    ASSERT_OK_AND_ASSIGN(StageReply back, ParseReply(SerializeReply(r)));
    EXPECT_EQ(back.body.index(), r.body.index());
  }
  EXPECT_CODE(ParseRequest("\\xff\\xff garbage"), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(ParseRequest(""), absl::StatusCode::kInvalidArgument);  // no body
}

}  // namespace
}  // namespace tessera::security::secagg
