#include "simulations/simulator.h"

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "client/client_runtime.h"
#include "client/data/csv_reader.h"
#include "client/data/idx_reader.h"
#include "client/torch/torch_trainer.h"
#include "coordinator/coordinator.h"
#include "coordinator/run_log.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/strings.h"
#include "core/thread_pool.h"
#include "simulations/in_memory_channel.h"
#include "simulations/partitioner.h"

namespace tessera::simulations {
namespace {

using client::Dataset;
using client::DatasetView;
using core::ClientId;
using core::StrCat;
namespace ct = client::torch;

struct VirtualClient {
  ClientId id;
  DatasetView train;
  DatasetView eval;
};

// Server-side evaluation of each global model on the test split.
class TrainerEvaluator final : public coordinator::Evaluator {
 public:
  explicit TrainerEvaluator(std::unique_ptr<ct::TorchTrainer> trainer) : trainer_(std::move(trainer)) {}
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& weights) override {
    return trainer_->Evaluate(weights);
  }

 private:
  std::unique_ptr<ct::TorchTrainer> trainer_;
};

// Runs each task the coordinator hands out on the thread pool, committing results in order.
class Scheduler final : public coordinator::ClientSender {
 public:
  Scheduler(const std::vector<VirtualClient>* clients, ct::ModelSpec spec, int threads, int torch_threads)
      : clients_(clients), spec_(std::move(spec)),
        pool_(threads, [torch_threads] { ct::ConfigureTorchThreads(torch_threads); }) {
    for (size_t i = 0; i < clients->size(); ++i) index_[(*clients)[i].id] = i;
  }
  void set_coordinator(coordinator::Coordinator* c) { coordinator_ = c; }

  void SendTask(const ClientId& client, const core::TrainTask& task) override {
    const uint64_t seq = next_seq_++;  // under the coordinator's lock: in sampling order
    const VirtualClient* vc = &(*clients_)[index_.at(client)];
    pool_.Submit([this, vc, task, seq] { RunOne(*vc, task, seq); });
  }

  void Drain() { pool_.Wait(); }

 private:
  void WaitTurn(uint64_t seq) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return turn_ == seq; });
  }
  void RunOne(const VirtualClient& vc, const core::TrainTask& task, uint64_t seq) {
    absl::Status status = absl::OkStatus();
    {
      auto trainer = ct::TorchTrainer::Create(spec_, vc.train, vc.eval);
      if (!trainer.ok()) {
        status = trainer.status();
      } else {
        InMemoryChannel channel(coordinator_, [this, seq] { WaitTurn(seq); });
        client::ClientOptions options;
        options.id = vc.id;
        client::ClientRuntime runtime(std::move(options), &channel, trainer->get());
        status = runtime.RunTask(task).status();
      }
    }
    WaitTurn(seq);
    if (!status.ok()) {
      core::Logger("simulator")->warn("virtual client '{}' failed round {}: {}", vc.id.value, task.ref.round,
                                      std::string(status.message()));
      if (!absl::IsFailedPrecondition(status)) coordinator_->ReportFailure(vc.id);
    }
    {
      std::lock_guard lock(mu_);
      ++turn_;
    }
    cv_.notify_all();
  }

  const std::vector<VirtualClient>* clients_;
  const ct::ModelSpec spec_;
  std::map<ClientId, size_t> index_;
  coordinator::Coordinator* coordinator_ = nullptr;
  uint64_t next_seq_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t turn_ = 0;  // GUARDED_BY(mu_): the sequence number allowed to commit next
  core::ThreadPool pool_;
};

absl::Status Validate(const SimulationOptions& o) {
  if (o.num_clients < 1) return absl::InvalidArgumentError("--clients must be at least 1");
  if (!(o.fraction > 0 && o.fraction <= 1)) return absl::InvalidArgumentError("--fraction must be in (0, 1]");
  if (o.rounds < 1) return absl::InvalidArgumentError("--rounds must be at least 1");
  if (o.local_epochs < 1) return absl::InvalidArgumentError("--local-epochs must be at least 1");
  if (o.batch_size < 1) return absl::InvalidArgumentError("--batch-size must be at least 1");
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) return absl::InvalidArgumentError("--lr must be positive");
  if (!(o.client_test_fraction >= 0 && o.client_test_fraction < 1)) {
    return absl::InvalidArgumentError("the client test fraction must be in [0, 1)");
  }
  if (o.threads < 0) return absl::InvalidArgumentError("--threads must not be negative");
  return absl::OkStatus();
}

// Train and test splits of the configured dataset.
absl::StatusOr<std::pair<Dataset, Dataset>> LoadData(const SimulationOptions& o) {
  if (o.dataset == "fashion-mnist") {
    if (!std::filesystem::is_directory(o.data_dir)) {
      return absl::NotFoundError(StrCat("data directory ", o.data_dir,
                                        " does not exist (install dataset-fashion-mnist or pass --data-dir)"));
    }
    TESSERA_ASSIGN_OR_RETURN(Dataset train, client::LoadFashionMnist(o.data_dir, "train"));
    TESSERA_ASSIGN_OR_RETURN(Dataset test, client::LoadFashionMnist(o.data_dir, "test"));
    return std::make_pair(std::move(train), std::move(test));
  }
  if (o.dataset.rfind("csv:", 0) == 0) {
    client::CsvOptions csv;
    csv.standardize = true;
    TESSERA_ASSIGN_OR_RETURN(Dataset all, client::ReadCsvDataset(o.dataset.substr(4), csv));
    // A seeded 90/10 split of the rows: the last tenth of a shuffle is the server's test set.
    std::vector<int64_t> order(all.size());
    for (int64_t i = 0; i < all.size(); ++i) order[i] = i;
    core::Rng rng(o.seed, {0x637376ULL});
    std::shuffle(order.begin(), order.end(), rng);
    const int64_t n_test = std::max<int64_t>(1, all.size() / 10);
    if (all.size() < 2) return absl::InvalidArgumentError("the CSV file needs at least 2 rows");
    Dataset train, test;
    for (Dataset* d : {&train, &test}) {
      d->example_shape = all.example_shape;
      d->num_classes = all.num_classes;
      d->class_names = all.class_names;
      d->preprocessing = all.preprocessing;
    }
    const int64_t width = all.example_numel();
    for (int64_t k = 0; k < all.size(); ++k) {
      Dataset& d = k < all.size() - n_test ? train : test;
      const float* x = all.example(order[k]);
      d.features.insert(d.features.end(), x, x + width);
      d.labels.push_back(all.labels[order[k]]);
    }
    return std::make_pair(std::move(train), std::move(test));
  }
  return absl::InvalidArgumentError(StrCat("unknown dataset '", o.dataset, "' (fashion-mnist or csv:PATH)"));
}

}  // namespace

std::string OptionsJson(const SimulationOptions& o) {
  nlohmann::json j = {{"dataset", o.dataset},     {"data_dir", o.data_dir},
                      {"clients", o.num_clients}, {"fraction", o.fraction},
                      {"rounds", o.rounds},       {"model", o.model},
                      {"partition", o.partition}, {"local_epochs", o.local_epochs},
                      {"batch_size", o.batch_size}, {"lr", o.learning_rate},
                      {"seed", o.seed},           {"client_test_fraction", o.client_test_fraction},
                      {"threads", o.threads},     {"server_eval", o.server_eval}};
  return j.dump();
}

absl::StatusOr<SimulationReport> RunSimulation(const SimulationOptions& o) {
  TESSERA_RETURN_IF_ERROR(Validate(o));
  TESSERA_ASSIGN_OR_RETURN(PartitionSpec pspec, ParsePartitionSpec(o.partition));
  const absl::Time t0 = absl::Now();
  TESSERA_ASSIGN_OR_RETURN(auto data, LoadData(o));
  auto train = std::make_shared<const Dataset>(std::move(data.first));
  auto test = std::make_shared<const Dataset>(std::move(data.second));

  TESSERA_ASSIGN_OR_RETURN(auto parts, Partition(*train, o.num_clients, pspec, o.seed));
  std::vector<ClientSplit> splits = SplitHeldOut(parts, o.client_test_fraction, o.seed);
  std::vector<VirtualClient> clients(o.num_clients);
  for (int i = 0; i < o.num_clients; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "client-%05d", i);
    clients[i].id = ClientId{name};
    clients[i].train = DatasetView{train, std::move(splits[i].train)};
    clients[i].eval = DatasetView{train, std::move(splits[i].test)};
  }

  ct::ModelSpec spec{o.model, train->example_shape, train->num_classes};
  TESSERA_ASSIGN_OR_RETURN(core::ModelWeights initial, ct::InitialWeights(spec, o.seed));

  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int threads = o.threads > 0 ? o.threads : cores;
  // One libtorch/BLAS thread per trainer: these models gain nothing from more, and OpenMP's
  // spinning threads oversubscribe the cores (measured: 2 intra-op threads made a 1-worker run
  // 50x slower on this 2-core machine).
  const int torch_threads = 1;
  ct::ConfigureTorchThreads(torch_threads);

  std::unique_ptr<TrainerEvaluator> evaluator;
  if (o.server_eval) {
    TESSERA_ASSIGN_OR_RETURN(auto t, ct::TorchTrainer::Create(spec, DatasetView{}, DatasetView::All(test)));
    evaluator = std::make_unique<TrainerEvaluator>(std::move(t));
  }
  TESSERA_ASSIGN_OR_RETURN(auto log, coordinator::RunLog::Create(o.output_dir, o.rounds, o.progress));

  coordinator::FedAvgOptions fedavg;
  fedavg.fraction = o.fraction;
  fedavg.min_fit_clients = 1;
  fedavg.min_available_clients = o.num_clients;  // open round 1 once every virtual client is in
  fedavg.train = {o.local_epochs, o.batch_size, o.learning_rate, o.seed};
  TESSERA_ASSIGN_OR_RETURN(auto strategy, coordinator::FedAvgStrategy::Create(fedavg));

  coordinator::CoordinatorOptions copts;
  copts.round.run_id = StrCat("sim-", o.seed);
  copts.round.num_rounds = o.rounds;
  copts.round.round_deadline = absl::Hours(24);
  copts.round.min_results = 1;
  copts.round.seed = o.seed;
  copts.liveness_timeout = absl::InfiniteDuration();  // virtual clients do not heartbeat
  if (!o.output_dir.empty()) copts.model_dir = (std::filesystem::path(o.output_dir) / "models").string();

  Scheduler scheduler(&clients, spec, threads, torch_threads);
  coordinator::CoordinatorDeps deps;
  deps.evaluator = evaluator.get();
  deps.observer = log.get();
  deps.extra_sender = &scheduler;
  TESSERA_ASSIGN_OR_RETURN(auto coordinator,
                           coordinator::Coordinator::Create(copts, std::move(strategy), std::move(initial), deps));
  scheduler.set_coordinator(coordinator.get());

  if (o.progress) {
    std::fprintf(o.progress, "tessera simulate: %d clients (%s), %s model, %d rounds, fraction %.3g, %d threads\n",
                 o.num_clients, ToString(pspec).c_str(), o.model.c_str(), o.rounds, o.fraction, threads);
    std::fflush(o.progress);
  }
  InMemoryChannel registrar(coordinator.get());
  for (const VirtualClient& vc : clients) {
    TESSERA_RETURN_IF_ERROR(registrar.Register(vc.id, {}).status());
  }
  while (!coordinator->WaitFinished(absl::Seconds(1))) coordinator->Tick();
  scheduler.Drain();

  SimulationReport report;
  report.rounds = coordinator->history();
  report.wall_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  TESSERA_RETURN_IF_ERROR(log->WriteSummary(OptionsJson(o)));
  return report;
}

}  // namespace tessera::simulations
