// The simulator's overhead and the memory of idle virtual clients (issue 6).
//
// 1. Overhead: the wall time of a simulated Fashion-MNIST federation (RunSimulation: 100 IID
//    clients, C = 0.1, the 2NN, B = 10, E = 1 and E = 5, server evaluation off, one trainer
//    thread per core) divided by the wall time of the same local SGD steps in a bare libtorch
//    loop (client/torch/bare_sgd.h: the same number of tasks, examples per task, epochs, batch
//    size and threads) measured in the same run. The federation's time is the sum of its rounds'
//    durations (round 1 opens once every client registered, the last closes after its model is
//    published); RunSimulation's whole wall time, with loading Fashion-MNIST and partitioning,
//    is printed beside it. Each figure is the best of --repeats runs that alternate the two; the
//    median of the per-run ratios and the CPU-time ratio (which other processes on the machine
//    disturb less) are printed too. Then where the time goes: what one task costs beyond the
//    bare loop, on one thread.
// 2. Memory: resident bytes per idle virtual client, built as the simulator builds them (the
//    partitioner's index vectors, the held-out split, the descriptors, the scheduler's index and
//    a Coordinator with every client registered), each stage measured by VmRSS before and after.
//    Fashion-MNIST has 60,000 training examples and the partitioner refuses more clients than
//    examples, so the 100,000 clients share a labels-only dataset of 6 examples per client. Then
//    the peak memory a whole RunSimulation adds per client, in fresh child processes.
//
// Usage: simulation_overhead_benchmark [--rounds N] [--repeats N] [--memory-clients N]
//                                      [--skip-overhead] [--skip-memory] [--per-task-only]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "benchmarks/bench_util.h"
#include "client/data/dataset.h"
#include "client/data/idx_reader.h"
#include "client/torch/bare_sgd.h"
#include "client/torch/torch_trainer.h"
#include "coordinator/coordinator.h"
#include "coordinator/strategy_factory.h"
#include "core/ids.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/strings.h"
#include "simulations/in_memory_channel.h"
#include "simulations/partitioner.h"
#include "simulations/simulator.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;
namespace ct = client::torch;

constexpr int kClients = 100;
constexpr double kFraction = 0.1;
constexpr int kBatchSize = 10;
constexpr double kLearningRate = 0.05;
constexpr double kHeldOut = 0.1;  // SimulationOptions::client_test_fraction's default
constexpr uint64_t kSeed = 1;
const char kDataDir[] = "/usr/share/datasets/fashion-mnist";

double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU seconds (user + system) of every thread of this process so far: unlike wall time, it does
// not grow when other processes take the cores.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return secs(u.ru_utime) + secs(u.ru_stime);
}

struct Flags {
  int rounds = 10;
  int repeats = 3;
  int memory_clients = 100000;
  bool overhead = true;
  bool federation = true;  // false: only the per-task costs of part 1
  bool memory = true;
};

// ---------------------------------------------------------------------------------------------
// 1. Overhead.

struct SimulationTimes {
  double rounds_seconds = 0;  // sum of the rounds' durations
  double wall_seconds = 0;    // RunSimulation, data loading included
  double cpu_seconds = 0;     // CPU time of RunSimulation, data loading included
  double aggregate_seconds = 0;  // sum of the rounds' closing (report + next model + store)
  double client_accuracy = 0;    // the last round's clients' train accuracy (a sanity check)
};

absl::StatusOr<SimulationTimes> TimeSimulation(int epochs, int rounds) {
  simulations::SimulationOptions o;
  o.data_dir = kDataDir;
  o.num_clients = kClients;
  o.fraction = kFraction;
  o.rounds = rounds;
  o.model = "mlp";
  o.partition = "iid";
  o.local_epochs = epochs;
  o.batch_size = kBatchSize;
  o.learning_rate = kLearningRate;
  o.seed = kSeed;
  o.client_test_fraction = kHeldOut;
  o.threads = 0;  // the cores
  o.server_eval = false;
  o.progress = nullptr;
  const double cpu0 = CpuSeconds();
  TESSERA_ASSIGN_OR_RETURN(simulations::SimulationReport report, simulations::RunSimulation(o));
  SimulationTimes t;
  t.cpu_seconds = CpuSeconds() - cpu0;
  t.wall_seconds = report.wall_seconds;
  for (const coordinator::RoundSummary& r : report.rounds) {
    t.rounds_seconds += absl::ToDoubleSeconds(r.duration);
    t.aggregate_seconds += absl::ToDoubleSeconds(r.aggregate_time);
  }
  if (!report.rounds.empty()) {
    const core::Metrics& m = report.rounds.back().client_metrics;
    if (auto it = m.find("train_accuracy"); it != m.end()) t.client_accuracy = it->second;
  }
  return t;
}

// One client's training data, gathered into contiguous arrays (a device's own data).
struct ClientData {
  std::vector<float> features;
  std::vector<int64_t> labels;
};

ClientData Gather(const client::Dataset& data, const std::vector<int64_t>& indices) {
  ClientData c;
  const int64_t numel = data.example_numel();
  c.features.reserve(indices.size() * numel);
  for (int64_t i : indices) {
    c.features.insert(c.features.end(), data.example(i), data.example(i) + numel);
    c.labels.push_back(data.labels[i]);
  }
  return c;
}

struct BareTimes {
  double wall_seconds = 0;
  double cpu_seconds = 0;
};

// Runs `tasks` BareSgd calls (task k on client k % clients.size()) on `threads` threads that take
// the next task as they finish one, as the simulator's pool does. With tasks_per_round > 0 the
// threads also wait for each other after every tasks_per_round tasks, as a synchronous round
// does; with 0 they never wait (a stricter limit than a synchronous federation can reach).
absl::StatusOr<BareTimes> TimeBareLoop(const std::vector<ClientData>& clients, const core::ModelWeights& initial,
                                       const std::vector<int64_t>& input_shape, int tasks, int threads, int epochs,
                                       int tasks_per_round) {
  std::vector<absl::Status> errors(threads);
  const double cpu0 = CpuSeconds();
  const Clock::time_point t0 = Clock::now();
  const int round_size = tasks_per_round > 0 ? tasks_per_round : tasks;
  for (int first = 0; first < tasks; first += round_size) {
    const int end = std::min(tasks, first + round_size);
    std::atomic<int> next{first};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (int k = next++; k < end; k = next++) {
          const ClientData& c = clients[k % clients.size()];
          ct::BareSgdOptions options{epochs, kBatchSize, kLearningRate, static_cast<uint64_t>(k)};
          auto r = ct::BareSgd("mlp", initial, input_shape, c.features, c.labels, options);
          if (!r.ok()) errors[t] = r.status();
        }
      });
    }
    for (std::thread& t : pool) t.join();
  }
  const BareTimes times{Seconds(t0), CpuSeconds() - cpu0};
  for (const absl::Status& s : errors) TESSERA_RETURN_IF_ERROR(s);
  return times;
}

// Best-of-`repeats` seconds of each of `fs` (on the caller's thread), the functions taking turns
// so that a burst of load from elsewhere hits all of them alike.
absl::StatusOr<std::vector<double>> BestOfInterleaved(int repeats,
                                                      const std::vector<std::function<absl::Status()>>& fs) {
  std::vector<double> best(fs.size(), 1e30);
  for (int i = 0; i < repeats; ++i) {
    for (size_t k = 0; k < fs.size(); ++k) {
      const Clock::time_point t0 = Clock::now();
      TESSERA_RETURN_IF_ERROR(fs[k]());
      best[k] = std::min(best[k], Seconds(t0));
    }
  }
  return best;
}

absl::Status RunOverhead(const Flags& flags) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int sampled = static_cast<int>(kClients * kFraction);
  // What RunSimulation does before its first round (load both splits, partition, initial
  // model), timed so that its CPU time can be taken out of the federation's.
  const double setup_cpu0 = CpuSeconds();
  TESSERA_ASSIGN_OR_RETURN(client::Dataset train_data, client::LoadFashionMnist(kDataDir, "train"));
  TESSERA_RETURN_IF_ERROR(client::LoadFashionMnist(kDataDir, "test").status());
  auto train = std::make_shared<const client::Dataset>(std::move(train_data));
  // The clients' local training sets, as the simulator splits them (IID, 10% held out: 540 each).
  TESSERA_ASSIGN_OR_RETURN(auto parts, simulations::Partition(*train, kClients, {}, kSeed));
  const std::vector<simulations::ClientSplit> splits = simulations::SplitHeldOut(parts, kHeldOut, kSeed);
  const ct::ModelSpec spec{"mlp", train->example_shape, train->num_classes};
  TESSERA_ASSIGN_OR_RETURN(core::ModelWeights initial, ct::InitialWeights(spec, kSeed));
  const double setup_cpu = CpuSeconds() - setup_cpu0;
  std::vector<ClientData> clients;
  for (const simulations::ClientSplit& s : splits) clients.push_back(Gather(*train, s.train));

  const int tasks = flags.rounds * sampled;
  std::printf("overhead: %d clients x %zu train examples, C=%.1f (%d per round), mlp, B=%d, %d rounds, %d threads; "
              "set-up before round 1 %.3f s CPU\n",
              kClients, clients[0].labels.size(), kFraction, sampled, kBatchSize, flags.rounds, cores, setup_cpu);
    for (int epochs : {1, 5}) {
    if (!flags.federation) break;
    SimulationTimes best_sim{1e30, 1e30, 1e30, 1e30, 0};
    BareTimes best_bare{1e30, 1e30};
    std::vector<double> pair_ratios;  // each run's federation over the bare loop right after it
    double best_rounds = 1e30;        // the bare loop with a barrier after each round's tasks
    for (int rep = 0; rep < flags.repeats; ++rep) {
      TESSERA_ASSIGN_OR_RETURN(SimulationTimes sim, TimeSimulation(epochs, flags.rounds));
      TESSERA_ASSIGN_OR_RETURN(BareTimes bare,
                               TimeBareLoop(clients, initial, spec.input_shape, tasks, cores, epochs, /*rounds=*/0));
      TESSERA_ASSIGN_OR_RETURN(BareTimes rounds,
                               TimeBareLoop(clients, initial, spec.input_shape, tasks, cores, epochs, sampled));
      std::printf("  E=%d run %d: federation %.3f s (RunSimulation %.3f s, %.3f s CPU)  bare %.3f s (%.3f s CPU)  "
                  "bare in rounds %.3f s\n",
                  epochs, rep + 1, sim.rounds_seconds, sim.wall_seconds, sim.cpu_seconds, bare.wall_seconds,
                  bare.cpu_seconds, rounds.wall_seconds);
      best_rounds = std::min(best_rounds, rounds.wall_seconds);
      pair_ratios.push_back(sim.rounds_seconds / bare.wall_seconds);
      if (sim.rounds_seconds < best_sim.rounds_seconds) {
        const double cpu = std::min(best_sim.cpu_seconds, sim.cpu_seconds);
        best_sim = sim;
        best_sim.cpu_seconds = cpu;
      } else {
        best_sim.cpu_seconds = std::min(best_sim.cpu_seconds, sim.cpu_seconds);
      }
      best_bare.wall_seconds = std::min(best_bare.wall_seconds, bare.wall_seconds);
      best_bare.cpu_seconds = std::min(best_bare.cpu_seconds, bare.cpu_seconds);
    }
    const int64_t steps = int64_t{tasks} * epochs * ((clients[0].labels.size() + kBatchSize - 1) / kBatchSize);
    const double fed_cpu = best_sim.cpu_seconds - setup_cpu;
    std::sort(pair_ratios.begin(), pair_ratios.end());
    const size_t m = pair_ratios.size();
    const double median = m % 2 == 1 ? pair_ratios[m / 2] : 0.5 * (pair_ratios[m / 2 - 1] + pair_ratios[m / 2]);
    std::printf("E=%d: federation %.3f s  bare_libtorch %.3f s  ratio: %.3f  (median of the %zu paired runs %.3f; "
                "goal <= 1.05, limit 1.10)\n",
                epochs, best_sim.rounds_seconds, best_bare.wall_seconds, best_sim.rounds_seconds / best_bare.wall_seconds,
                m, median);
    std::printf("     bare loop with a barrier after each round's %d tasks %.3f s: federation / that %.3f\n", sampled,
                best_rounds, best_sim.rounds_seconds / best_rounds);
    std::printf("     CPU: federation %.3f s (RunSimulation minus set-up)  bare %.3f s  ratio: %.3f;  "
                "RunSimulation wall incl. set-up %.3f s: ratio %.3f\n",
                fed_cpu, best_bare.cpu_seconds, fed_cpu / best_bare.cpu_seconds, best_sim.wall_seconds,
                best_sim.wall_seconds / best_bare.wall_seconds);
    std::printf("     %lld SGD steps, bare %.0f samples/s; aggregation %.2f ms/round; overhead %.2f ms/task (wall x %d "
                "threads), %.2f ms/task (CPU); last round train accuracy %.3f\n",
                static_cast<long long>(steps), static_cast<double>(steps * kBatchSize) / best_bare.wall_seconds,
                1e3 * best_sim.aggregate_seconds / flags.rounds,
                1e3 * (best_sim.rounds_seconds - best_bare.wall_seconds) * cores / tasks, cores,
                1e3 * (fed_cpu - best_bare.cpu_seconds) / tasks, best_sim.client_accuracy);
  }

  // Where the time goes, on this thread: what one task costs beyond the bare loop.
  const simulations::ClientSplit& split = splits[0];
  const ClientData& data = clients[0];
  client::DatasetView train_view{train, split.train};
  client::DatasetView eval_view{train, split.test};
  const int reps = 5 * flags.repeats;
  TESSERA_ASSIGN_OR_RETURN(auto trainer, ct::TorchTrainer::Create(spec, train_view, eval_view));
  std::printf("per task, 1 thread, best of %d, interleaved:\n", reps);
  for (int epochs : {1, 5}) {
    core::TrainConfig config;
    config.local_epochs = epochs;
    config.batch_size = kBatchSize;
    config.learning_rate = kLearningRate;
    config.seed = kSeed;
    const ct::BareSgdOptions options{epochs, kBatchSize, kLearningRate, kSeed};
    TESSERA_ASSIGN_OR_RETURN(
        std::vector<double> t,
        BestOfInterleaved(reps, {[&] { return ct::TorchTrainer::Create(spec, train_view, eval_view).status(); },
                                 [&] { return trainer->Train(initial, config).status(); },
                                 [&] {
                                   return ct::BareSgd("mlp", initial, spec.input_shape, data.features, data.labels,
                                                      options)
                                       .status();
                                 },
                                 [&] { return trainer->Evaluate(initial).status(); }}));
    std::printf("  E=%d: TorchTrainer::Train %.2f ms  bare %.2f ms  ratio: %.3f;  TorchTrainer::Create %.2f ms  "
                "Evaluate (held-out %zu) %.2f ms\n",
                epochs, 1e3 * t[1], 1e3 * t[2], t[1] / t[2], 1e3 * t[0], split.test.size(), 1e3 * t[3]);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// 2. Memory of idle virtual clients.

// The simulator's descriptor of a virtual client (VirtualClient in simulations/simulator.cc,
// private there): an id and the indices of its train and held-out examples.
struct Descriptor {
  core::ClientId id;
  client::DatasetView train;
  client::DatasetView eval;
  bool attacker = false;
};

class RssMeter {
 public:
  explicit RssMeter(int clients) : clients_(clients), last_(bench::ResidentBytes()), first_(last_) {}
  // Prints the resident bytes `stage` added, in total and per client.
  void Stage(const char* stage, const char* note = "") {
    const int64_t now = bench::ResidentBytes();
    std::printf("  %-28s %8.1f MiB  %7.1f B/client%s\n", stage, static_cast<double>(now - last_) / (1 << 20),
                static_cast<double>(now - last_) / clients_, note);
    last_ = now;
  }
  void Total() {
    std::printf("  %-28s %8.1f MiB  %7.1f B/client\n", "total", static_cast<double>(last_ - first_) / (1 << 20),
                static_cast<double>(last_ - first_) / clients_);
  }

 private:
  const int clients_;
  int64_t last_;
  const int64_t first_;
};

absl::Status RunMemory(const Flags& flags) {
  const int n = flags.memory_clients;
  constexpr int kExamplesPerClient = 6;
  auto data = std::make_shared<client::Dataset>();
  data->labels.resize(static_cast<size_t>(n) * kExamplesPerClient);
  for (size_t i = 0; i < data->labels.size(); ++i) data->labels[i] = static_cast<int64_t>(i % 10);
  data->example_shape = {1};
  data->num_classes = 10;
  std::printf("memory: %d idle virtual clients, %d examples each (labels-only dataset), RSS %.1f MiB before\n", n,
              kExamplesPerClient, static_cast<double>(bench::ResidentBytes()) / (1 << 20));

  RssMeter meter(n);
  // As RunSimulation builds them; it keeps `parts` and `splits` alive for the whole run.
  TESSERA_ASSIGN_OR_RETURN(auto parts, simulations::Partition(*data, n, {}, kSeed));
  meter.Stage("partition (index vectors)", "  (kept by RunSimulation for the whole run)");
  std::vector<simulations::ClientSplit> splits = simulations::SplitHeldOut(parts, kHeldOut, kSeed);
  meter.Stage("held-out split (copies)");
  std::vector<Descriptor> clients(n);
  for (int i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "client-%05d", i);
    clients[i].id = core::ClientId{name};
    clients[i].train = client::DatasetView{data, std::move(splits[i].train)};
    clients[i].eval = client::DatasetView{data, std::move(splits[i].test)};
  }
  meter.Stage("descriptors", "  (the split's vectors moved in)");
  std::map<core::ClientId, size_t> index;  // the Scheduler's id -> descriptor map
  for (int i = 0; i < n; ++i) index[clients[i].id] = static_cast<size_t>(i);
  meter.Stage("scheduler id index");

  // A Coordinator with every client registered through the in-memory channel; min_available
  // above n keeps round 1 from opening, so every client stays idle.
  coordinator::FedAvgOptions sampling;
  sampling.fraction = kFraction;
  sampling.min_available_clients = n + 1;
  TESSERA_ASSIGN_OR_RETURN(auto strategy, coordinator::MakeStrategy({}, sampling, false));
  core::ModelWeights tiny;
  tiny.tensors.emplace_back("w", std::vector<int64_t>{1});
  coordinator::CoordinatorOptions copts;
  copts.round.run_id = "idle";
  copts.liveness_timeout = absl::InfiniteDuration();
  TESSERA_ASSIGN_OR_RETURN(auto coord, coordinator::Coordinator::Create(copts, std::move(strategy), std::move(tiny)));
  meter.Stage("coordinator (empty)");
  simulations::InMemoryChannel registrar(coord.get());
  const Clock::time_point t0 = Clock::now();
  for (const Descriptor& c : clients) TESSERA_RETURN_IF_ERROR(registrar.Register(c.id, {}).status());
  const double register_s = Seconds(t0);
  char note[96];
  std::snprintf(note, sizeof(note), "  (registered in %.2f s, %.1f us each)", register_s, 1e6 * register_s / n);
  meter.Stage("coordinator registry", note);
  meter.Total();
  return absl::OkStatus();
}

// Resets the process's peak resident set (VmHWM) to the current one (Linux >= 4.0).
void ResetPeakRss() {
  if (std::FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

// Peak resident bytes (VmHWM) above the resident set before the call, of a whole RunSimulation
// with `clients` virtual clients on the CSV dataset `csv`: 1 round, 10 sampled logreg clients,
// so that the idle clients' memory is most of what the run adds.
absl::StatusOr<int64_t> SimulationPeakBytes(const std::string& csv, int clients) {
  simulations::SimulationOptions o;
  o.dataset = "csv:" + csv;
  o.num_clients = clients;
  o.fraction = 10.0 / clients;
  o.rounds = 1;
  o.model = "logreg";
  o.server_eval = false;
  o.progress = nullptr;
  const int64_t before = bench::ResidentBytes();
  ResetPeakRss();
  TESSERA_RETURN_IF_ERROR(simulations::RunSimulation(o).status());
  return bench::PeakResidentBytes() - before;
}

// SimulationPeakBytes in a fresh process (this binary with --simulation-peak CSV N): in this
// one, the memory freed by RunMemory would be reused and hide the new allocations.
absl::StatusOr<int64_t> ChildSimulationPeakBytes(const std::string& csv, int clients) {
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) return absl::InternalError("cannot find this binary");
  self[len] = '\0';
  const std::string command = core::StrCat("'", self, "' --simulation-peak '", csv, "' ", clients);
  std::FILE* child = popen(command.c_str(), "r");
  if (child == nullptr) return absl::InternalError("cannot start the child process");
  long long bytes = -1;
  char line[256];
  while (std::fgets(line, sizeof(line), child) != nullptr) std::sscanf(line, "peak_bytes %lld", &bytes);
  const int status = pclose(child);
  if (status != 0 || bytes < 0) return absl::InternalError(core::StrCat("the child '", command, "' failed"));
  return static_cast<int64_t>(bytes);
}

// The same measure end to end: RunSimulation with n and with n / 100 clients on one dataset of
// 1.2 n rows (a temporary CSV file: 4 features, 10 classes), each in a fresh process; the
// difference over the clients added is what RunSimulation holds per client at its peak.
absl::Status RunSimulationMemory(int n) {
  char path[] = "/tmp/tessera_overhead_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return absl::InternalError("cannot create a temporary CSV file");
  close(fd);
  const int rows = n + n / 5;
  if (std::FILE* f = std::fopen(path, "w")) {
    std::fputs("a,b,c,d,label\n", f);
    for (int i = 0; i < rows; ++i) std::fprintf(f, "%d,%d,%d,%d,%d\n", i % 7, i % 11, i % 13, i % 17, i % 10);
    std::fclose(f);
  }
  const int small = std::max(10, n / 100);
  const Clock::time_point t0 = Clock::now();
  auto small_peak = ChildSimulationPeakBytes(path, small);
  const double small_s = Seconds(t0);
  const Clock::time_point t1 = Clock::now();
  auto large_peak = small_peak.ok() ? ChildSimulationPeakBytes(path, n) : small_peak;
  const double large_s = Seconds(t1);
  std::remove(path);
  TESSERA_RETURN_IF_ERROR(large_peak.status());
  std::printf("  RunSimulation end to end: peak +%.1f MiB with %d clients (%.1f s), +%.1f MiB with %d (%.1f s): "
              "%.1f B per added client (%d rows of 4 features, ~%.2f train examples per client)\n",
              static_cast<double>(*small_peak) / (1 << 20), small, small_s, static_cast<double>(*large_peak) / (1 << 20),
              n, large_s, static_cast<double>(*large_peak - *small_peak) / (n - small), rows, 0.9 * rows / n);
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--simulation-peak") {  // the child of RunSimulationMemory
    core::SetLogLevel("warn");
    ct::ConfigureTorchThreads(1);
    auto bytes = SimulationPeakBytes(argv[2], std::atoi(argv[3]));
    if (!bytes.ok()) {
      std::fprintf(stderr, "%s\n", bytes.status().ToString().c_str());
      return 1;
    }
    std::printf("peak_bytes %lld\n", static_cast<long long>(*bytes));
    return 0;
  }
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> int {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::atoi(argv[++i]);
    };
    if (a == "--rounds") {
      flags.rounds = std::max(1, value());
    } else if (a == "--repeats") {
      flags.repeats = std::max(1, value());
    } else if (a == "--memory-clients") {
      flags.memory_clients = std::max(1, value());
    } else if (a == "--skip-overhead") {
      flags.overhead = false;
    } else if (a == "--per-task-only") {
      flags.federation = false;
      flags.memory = false;
    } else if (a == "--skip-memory") {
      flags.memory = false;
    } else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear as they are measured
  core::SetLogLevel("warn");  // the coordinator logs every registration at info
  ct::ConfigureTorchThreads(1);
  std::printf("simulation_overhead_benchmark: blas %s, %u cores, load %s\n", ct::BlasBackendName().c_str(),
              std::thread::hardware_concurrency(), bench::LoadAverage().c_str());
  const Clock::time_point t0 = Clock::now();
  // Memory first, while the heap holds no freed memory that could hide new allocations.
  if (flags.memory) {
    absl::Status s = RunMemory(flags);
    if (s.ok()) s = RunSimulationMemory(flags.memory_clients);
    if (!s.ok()) {
      std::fprintf(stderr, "memory: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  if (flags.overhead) {
    if (absl::Status s = RunOverhead(flags); !s.ok()) {
      std::fprintf(stderr, "overhead: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::printf("total %.1f s, load %s\n", Seconds(t0), bench::LoadAverage().c_str());
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
