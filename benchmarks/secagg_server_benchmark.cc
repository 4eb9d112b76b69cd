// The SecAgg+ server's unmasking against the mask PRG limit, measured in the same run.
//
// For n = 100, 500 and 1000 clients x the McMahan CNN's 1,663,370 parameters (+1 for the weight:
// vector length 1,663,371) at 0, 10 and 30% dropout, with the default SecAgg+ parameters
// (ResolveConfig with 30% expected dropout), prints:
// - unmask: the time of SecAggServer::CloseUnmasking: Shamir reconstruction of every survivor's
//   seed b and every dropped client's s_sk, then one mask over the whole vector for every
//   survivor (its self mask) and for every (dropped, surviving neighbour) pair (their pairwise
//   mask). Next to it the limit: one MaskPrg::SubtractFrom over the same length (best of several,
//   measured just before the configuration), the bound (survivors + dropped pairs) x that, and
//   bound / actual.
// - masked_input: the total time of the survivors' OnMaskedInput calls (validation + streaming
//   AddMod into the running sum), next to AddMod over the same length measured just before.
//
// The dropouts are the expensive kind: clients that shared keys (stages 0 and 1) but never sent
// their masked input. They are drawn at random among those placements where every client keeps
// at least t surviving neighbours (otherwise the server must abort; the figure of how often a
// plain uniform draw would abort is printed too, see `random_draws_viable`).
//
// Set-up shortcut (not timed, and the server's work is unchanged): the clients run stages 0-3
// for real, but in a session that differs from the server's only in vector_length = 1, so their
// masked inputs cost nothing; the server instead receives, for each survivor, one reused buffer
// filled with xorshift words. The server never opens the sealed shares nor checks what the
// masks were, and everything it derives (Shamir secrets, X25519 keys against the advertised
// ones, mask keys from its own session id) is the same work as in a real session; only the
// output sum is meaningless. Single-threaded, one run per configuration.
//
// Usage: secagg_server_benchmark [--quick] [--max-clients N]
//   --quick          n = 100 only
//   --max-clients N  skip configurations with more than N clients
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "benchmarks/bench_util.h"
#include "core/rng.h"
#include "security/crypto/prg.h"
#include "security/secagg/client.h"
#include "security/secagg/config.h"
#include "security/secagg/fixed_point.h"
#include "security/secagg/graph.h"
#include "security/secagg/server.h"

namespace tessera::security::secagg {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kCnnParameters = 1'663'370;
constexpr int kVectorLength = kCnnParameters + 1;  // + the weight element
constexpr double kExpectedDropout = 0.3;
constexpr int kLimitReps = 11;
constexpr int kViabilityDraws = 200;

double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

using bench::LoadAverage;

void FillXorshift(std::vector<uint64_t>& v, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint64_t& w : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w = x;
  }
}

// The limits, measured just before each configuration: one mask removal and one AddMod over the
// vector, best of kLimitReps (3 x kLimitReps for AddMod).
struct Limits {
  double mask_s = 1e9;
  double addmod_s = 1e9;
};

Limits MeasureLimits(std::vector<uint64_t>& acc, const std::vector<uint64_t>& other) {
  Limits l;
  uint8_t key[kMaskPrgKeyBytes];
  for (size_t i = 0; i < sizeof(key); ++i) key[i] = static_cast<uint8_t>(i * 37 + 11);
  for (int rep = 0; rep < kLimitReps; ++rep) {
    auto prg = MaskPrg::Create(key);  // a fresh stream, like each ApplyMask
    if (!prg.ok()) std::abort();
    const auto start = Clock::now();
    prg->SubtractFrom(acc, ModulusMask(64));
    l.mask_s = std::min(l.mask_s, Seconds(start));
  }
  // AddMod is memory-bound and moves more with the other core's load: more repetitions.
  for (int rep = 0; rep < 3 * kLimitReps; ++rep) {
    const auto start = Clock::now();
    AddMod(acc, other, 64);
    l.addmod_s = std::min(l.addmod_s, Seconds(start));
  }
  return l;
}

// Every survivor, and every dropped participant that masked with a survivor, keeps at least t
// surviving neighbours (so every self-mask seed and every needed key can be rebuilt): the
// condition for the server not to abort.
bool Viable(const NeighbourGraph& g, const std::vector<bool>& dropped, int t) {
  for (int p = 1; p <= g.size(); ++p) {
    int alive = 0;
    for (ParticipantId q : g.Neighbours(p)) alive += dropped[q] ? 0 : 1;
    // A dropped participant with no surviving neighbour left no mask to remove.
    if (alive < t && !(dropped[p] && alive == 0)) return false;
  }
  return true;
}

// `count` participants to drop, at random, such that no participant loses more than k - t
// neighbours (greedy over a random order).
std::set<ParticipantId> ChooseDropped(const NeighbourGraph& g, int count, int t, uint64_t seed) {
  const int n = g.size();
  std::vector<ParticipantId> order(n);
  std::iota(order.begin(), order.end(), 1);
  core::Rng rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int> lost(n + 1, 0);
  std::set<ParticipantId> out;
  for (ParticipantId p : order) {
    if (static_cast<int>(out.size()) == count) break;
    bool ok = true;
    for (ParticipantId q : g.Neighbours(p)) ok = ok && lost[q] + 1 <= g.degree() - t;
    if (!ok) continue;
    for (ParticipantId q : g.Neighbours(p)) ++lost[q];
    out.insert(p);
  }
  return out;
}

// Of kViabilityDraws uniform draws of `count` dropped participants, how many the server survives.
int ViableUniformDraws(const NeighbourGraph& g, int count, int t, uint64_t seed) {
  const int n = g.size();
  std::vector<ParticipantId> order(n);
  std::iota(order.begin(), order.end(), 1);
  core::Rng rng(seed);
  int viable = 0;
  for (int d = 0; d < kViabilityDraws; ++d) {
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<bool> dropped(n + 1, false);
    for (int i = 0; i < count; ++i) dropped[order[i]] = true;
    viable += Viable(g, dropped, t) ? 1 : 0;
  }
  return viable;
}

#define BENCH_CHECK_OK(expr)                                                         \
  do {                                                                               \
    if (absl::Status s_ = (expr); !s_.ok()) {                                        \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, s_.ToString().c_str()); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

template <typename T>
T ValueOrDie(absl::StatusOr<T> v, int line) {
  if (!v.ok()) {
    std::fprintf(stderr, "line %d: %s\n", line, v.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*v);
}
#define VALUE_OR_DIE(expr) ValueOrDie((expr), __LINE__)

uint64_t RunConfig(int n, int dropout_percent, std::vector<uint64_t>& limit_acc, const std::vector<uint64_t>& other) {
  SecAggConfig requested;
  requested.expected_dropout = kExpectedDropout;
  const SecAggConfig cfg = VALUE_OR_DIE(ResolveConfig(requested, n));
  SessionParams params;
  params.run_id = "secagg-server-benchmark";
  params.round = 1;
  for (int i = 0; i < n; ++i) params.participants.push_back("client-" + std::to_string(i));
  params.neighbours = cfg.neighbours;
  params.threshold = cfg.threshold;
  params.graph_seed = 1000 + n;
  params.vector_length = kVectorLength;
  params.modulus_bits = cfg.fixed_point.modulus_bits;
  SessionParams client_params = params;
  client_params.vector_length = 1;  // see the file comment

  const NeighbourGraph graph = GraphOf(params);
  const int k = graph.degree();
  const int t = params.threshold;
  const int num_dropped = static_cast<int>(std::lround(n * dropout_percent / 100.0));
  const std::set<ParticipantId> dropped = ChooseDropped(graph, num_dropped, t, 7 * n + dropout_percent);
  if (static_cast<int>(dropped.size()) != num_dropped) {
    std::fprintf(stderr, "could only place %zu of %d dropouts\n", dropped.size(), num_dropped);
    std::exit(1);
  }
  const int viable_draws = num_dropped == 0 ? kViabilityDraws : ViableUniformDraws(graph, num_dropped, t, 11 * n);

  const auto setup_start = Clock::now();
  auto server = VALUE_OR_DIE(SecAggServer::Create(params));
  std::map<ParticipantId, std::unique_ptr<SecAggClient>> clients;
  for (int p = 1; p <= n; ++p) clients[p] = VALUE_OR_DIE(SecAggClient::Create(client_params, p));
  for (auto& [p, c] : clients) BENCH_CHECK_OK(server->OnAdvertiseKeys(p, VALUE_OR_DIE(c->AdvertiseKeysStage())));
  for (auto& [p, b] : VALUE_OR_DIE(server->CloseAdvertiseKeys())) {
    BENCH_CHECK_OK(server->OnShareKeys(p, VALUE_OR_DIE(clients[p]->ShareKeysStage(b))));
  }
  const auto relays = VALUE_OR_DIE(server->CloseShareKeys());
  const uint64_t tiny_input[1] = {0};
  MaskedInput msg;
  msg.masked.resize(kVectorLength);
  double masked_input_s = 0;
  int survivors = 0;
  for (const auto& [p, r] : relays) {
    if (dropped.contains(p)) continue;
    VALUE_OR_DIE(clients[p]->MaskedInputStage(r, tiny_input));  // only moves the client on
    FillXorshift(msg.masked, p);
    const auto start = Clock::now();
    BENCH_CHECK_OK(server->OnMaskedInput(p, msg));
    masked_input_s += Seconds(start);
    ++survivors;
  }
  for (const auto& [p, r] : VALUE_OR_DIE(server->CloseMaskedInput())) {
    BENCH_CHECK_OK(server->OnUnmasking(p, VALUE_OR_DIE(clients[p]->UnmaskingStage(r))));
  }
  clients.clear();
  msg.masked = {};
  const double setup_s = Seconds(setup_start) - masked_input_s;

  int dropped_pairs = 0;
  for (ParticipantId v : dropped) {
    for (ParticipantId u : graph.Neighbours(v)) dropped_pairs += dropped.contains(u) ? 0 : 1;
  }

  const Limits limits = MeasureLimits(limit_acc, other);
  const auto start = Clock::now();
  const std::vector<uint64_t> sum = VALUE_OR_DIE(server->CloseUnmasking());
  const double unmask_s = Seconds(start);

  // CloseUnmasking spreads the masks over the cores: the bound is one core's mask rate times
  // the cores (the single-core limit is measured; the cores are assumed to scale).
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const double bound_s = (survivors + dropped_pairs) * limits.mask_s / cores;
  std::printf(
      "unmask n=%d k=%d t=%d dropout=%d%%: %.2f s  (survivors %d, dropped pairs %d)  mask_limit %.2f ms x %d cores  "
      "bound %.2f s  ratio %.2f\n",
      n, k, t, dropout_percent, unmask_s, survivors, dropped_pairs, limits.mask_s * 1e3, cores, bound_s,
      bound_s / unmask_s);
  const double per_input_ms = masked_input_s / survivors * 1e3;
  std::printf(
      "masked_input n=%d dropout=%d%%: %.2f s for %d inputs (%.2f ms/input)  addmod_limit %.2f ms  ratio %.2f  "
      "[set-up %.1f s, uniform dropout draws the server survives: %d/%d]\n",
      n, dropout_percent, masked_input_s, survivors, per_input_ms, limits.addmod_s * 1e3,
      limits.addmod_s * 1e3 / per_input_ms, setup_s, viable_draws, kViabilityDraws);
  std::fflush(stdout);
  return sum[0] ^ sum[kVectorLength - 1];
}

int Main(int argc, char** argv) {
  int max_clients = 1000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      max_clients = 100;
    } else if (std::strcmp(argv[i], "--max-clients") == 0 && i + 1 < argc) {
      max_clients = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--max-clients N]\n", argv[0]);
      return 2;
    }
  }
  std::printf("secagg_server_benchmark: vector length %d (%.1f MB), expected dropout %.0f%% for k and t, load %s\n",
              kVectorLength, kVectorLength * 8 / 1e6, kExpectedDropout * 100, LoadAverage().c_str());
  std::fflush(stdout);
  std::vector<uint64_t> limit_acc(kVectorLength, 1), other(kVectorLength, 3);
  uint64_t sink = 0;
  const auto start = Clock::now();
  for (int n : {100, 500, 1000}) {
    if (n > max_clients) continue;
    for (int dropout_percent : {0, 10, 30}) sink ^= RunConfig(n, dropout_percent, limit_acc, other);
  }
  std::printf("total %.1f s, load %s\n", Seconds(start), LoadAverage().c_str());
  return sink == 42 && limit_acc[0] == 42 ? 3 : 0;  // keeps the results alive
}

}  // namespace
}  // namespace tessera::security::secagg

int main(int argc, char** argv) { return tessera::security::secagg::Main(argc, argv); }
