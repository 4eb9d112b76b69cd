#include "simulations/simulator.h"

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <nlohmann/json.hpp>
#include <cmath>
#include <thread>

#include <unistd.h>

#include "client/client_runtime.h"
#include "client/personalizer.h"
#include "client/data/csv_reader.h"
#include "client/data/idx_reader.h"
#include "client/torch/torch_trainer.h"
#include "coordinator/coordinator.h"
#include "coordinator/run_log.h"
#include "core/file_io.h"
#include "core/logging.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/strings.h"
#include "core/thread_pool.h"
#include "security/dp/gaussian.h"
#include "simulations/in_memory_channel.h"
#include "simulations/partitioner.h"

namespace tessera::simulations {
namespace {

using client::Dataset;
using client::DatasetView;
using core::ClientId;
using core::StrCat;
namespace ct = client::torch;

// A virtual client's personal state directory.
std::string PersonalDir(const std::string& root, const ClientId& id) {
  return (std::filesystem::path(root) / id.value).string();
}

struct VirtualClient {
  ClientId id;
  DatasetView train;
  DatasetView eval;
  bool attacker = false;  // uploads a poisoned update (SimulationOptions::attackers)
};

// Limits how many virtual clients train at once in secure rounds, where every sampled client
// runs on a thread of its own (it waits on the others between stages).
class TrainingGate {
 public:
  explicit TrainingGate(int slots) : slots_(slots) {}
  void Acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return slots_ > 0; });
    --slots_;
  }
  void Release() {
    {
      std::lock_guard lock(mu_);
      ++slots_;
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int slots_;
};

class GatedTrainer final : public client::Trainer {
 public:
  GatedTrainer(client::Trainer* inner, TrainingGate* gate) : inner_(inner), gate_(gate) {}
  absl::StatusOr<client::TrainOutput> Train(const core::ModelWeights& global, const core::TrainConfig& c) override {
    gate_->Acquire();
    auto out = inner_->Train(global, c);
    gate_->Release();
    return out;
  }
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& w) override {
    gate_->Acquire();
    auto out = inner_->Evaluate(w);
    gate_->Release();
    return out;
  }

 private:
  client::Trainer* inner_;
  TrainingGate* gate_;
};

// A Byzantine client's trainer: it trains honestly, then uploads global - kAttackScale * delta,
// the honest update reversed and scaled (a model-poisoning attack that drags a plain mean away).
class AttackingTrainer final : public client::Trainer {
 public:
  AttackingTrainer(client::Trainer* inner, std::string attack, double scale)
      : inner_(inner), attack_(std::move(attack)), scale_(scale) {}
  absl::StatusOr<client::TrainOutput> Train(const core::ModelWeights& global, const core::TrainConfig& c) override {
    TESSERA_ASSIGN_OR_RETURN(client::TrainOutput out, inner_->Train(global, c));
    if (attack_ == "label-flip") return out;  // the poison is in the data
    if (attack_ == "gaussian") {
      out.weights = global;
      core::Rng noise(c.seed, {0x6e6f697365ULL /* "noise" */});
      TESSERA_RETURN_IF_ERROR(security::dp::AddGaussianNoise(out.weights, scale_, noise));
      return out;
    }
    const float s = static_cast<float>(attack_ == "scaling" ? scale_ : -scale_);
    for (size_t t = 0; t < global.tensors.size(); ++t) {
      if (global.tensors[t].dtype() != core::DType::kFloat32) continue;
      auto g = global.tensors[t].f32();
      auto w = out.weights.tensors[t].mutable_f32();
      for (size_t i = 0; i < g.size(); ++i) w[i] = g[i] + s * (w[i] - g[i]);
    }
    return out;
  }
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& w) override { return inner_->Evaluate(w); }

 private:
  client::Trainer* inner_;
  const std::string attack_;
  const double scale_;
};

// An attacker's training data with every label y replaced by C - 1 - y (its own copy).
DatasetView FlippedLabels(const DatasetView& view) {
  auto flipped = std::make_shared<Dataset>();
  const Dataset& base = *view.base;
  flipped->example_shape = base.example_shape;
  flipped->num_classes = base.num_classes;
  flipped->class_names = base.class_names;
  flipped->preprocessing = base.preprocessing;
  const int64_t numel = base.example_numel();
  flipped->features.reserve(view.indices.size() * numel);
  for (int64_t i = 0; i < view.size(); ++i) {
    flipped->features.insert(flipped->features.end(), view.example(i), view.example(i) + numel);
    flipped->labels.push_back(base.num_classes - 1 - view.label(i));
  }
  DatasetView out;
  out.indices.resize(flipped->labels.size());
  std::iota(out.indices.begin(), out.indices.end(), int64_t{0});
  out.base = std::move(flipped);
  return out;
}

// A virtual client that drops out before a stage: the channel fails instead of sending.
class DroppingChannel final : public client::CoordinatorChannel {
 public:
  DroppingChannel(client::CoordinatorChannel* inner, int drop_before) : inner_(inner), drop_before_(drop_before) {}
  absl::StatusOr<core::RegisterReply> Register(const ClientId& c, const std::map<std::string, std::string>& p) override {
    return inner_->Register(c, p);
  }
  absl::Status Heartbeat(const ClientId& c) override { return inner_->Heartbeat(c); }
  absl::StatusOr<core::PullTaskReply> PullTask(const ClientId& c, absl::Duration w) override {
    return inner_->PullTask(c, w);
  }
  absl::StatusOr<core::ModelWeights> DownloadModel(const ClientId& c, const core::TrainTask& t) override {
    return inner_->DownloadModel(c, t);
  }
  absl::StatusOr<core::UploadAck> UploadResult(const ClientId& c, const core::TrainResult& r) override {
    if (drop_before_ == kBeforeUpload) return Dropped();
    return inner_->UploadResult(c, r);
  }
  absl::StatusOr<security::secagg::StageReply> SecAggStep(const ClientId& c, const core::TrainTask& t,
                                                          const security::secagg::StageRequest& r,
                                                          absl::Duration w) override {
    if (static_cast<int>(r.stage()) >= drop_before_) return Dropped();
    return inner_->SecAggStep(c, t, r, w);
  }
  static constexpr int kBeforeUpload = 100;

 private:
  static absl::Status Dropped() { return absl::CancelledError("simulated dropout"); }
  client::CoordinatorChannel* inner_;
  int drop_before_;
};

absl::StatusOr<int> ParseDropStage(const std::string& stage) {
  if (stage == "advertise") return 0;
  if (stage == "share") return 1;
  if (stage == "masked") return 2;
  if (stage == "unmasking") return 3;
  if (stage == "train") return DroppingChannel::kBeforeUpload;
  return absl::InvalidArgumentError(StrCat("unknown dropout stage '", stage, "' (advertise, share, masked, unmasking, train)"));
}

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
  Scheduler(const std::vector<VirtualClient>* clients, ct::ModelSpec spec, int threads, int torch_threads,
            double dropout, int drop_before, uint64_t seed)
      : clients_(clients), spec_(std::move(spec)), torch_threads_(torch_threads), dropout_(dropout),
        drop_before_(drop_before), seed_(seed), gate_(threads),
        pool_(threads, [torch_threads] { ct::ConfigureTorchThreads(torch_threads); }) {
    for (size_t i = 0; i < clients->size(); ++i) index_[(*clients)[i].id] = i;
  }
  void set_coordinator(coordinator::Coordinator* c) { coordinator_ = c; }
  // Where virtual clients keep their personal models (one directory each).
  void set_personal_dir(std::string dir) { personal_dir_ = std::move(dir); }
  void set_attack(std::string attack, double scale) {
    attack_ = std::move(attack);
    attack_scale_ = scale;
  }

  void SendTask(const ClientId& client, const core::TrainTask& task) override {
    const VirtualClient* vc = &(*clients_)[index_.at(client)];
    if (task.secure_aggregation) {
      // Every participant runs at once (the stages wait for each other); the gate bounds
      // training. The secure sum is exact in integers, so no ordering is needed.
      std::lock_guard lock(threads_mu_);
      threads_.emplace_back([this, vc, task] { RunSecure(*vc, task); });
      return;
    }
    const uint64_t seq = next_seq_++;  // under the coordinator's lock: in sampling order
    pool_.Submit([this, vc, task, seq] { RunOne(*vc, task, seq); });
  }

  void Drain() {
    pool_.Wait();
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(threads_mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }
  ~Scheduler() override { Drain(); }

 private:
  void WaitTurn(uint64_t seq) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return turn_ == seq; });
  }
  // Whether `vc` drops out of `round` (a seeded draw, the same in every run).
  bool Drops(const VirtualClient& vc, core::RoundNumber round) const {
    if (dropout_ <= 0) return false;
    core::Rng rng(seed_, {round, core::StableHash(vc.id.value), 0x64726f70ULL /* "drop" */});
    return rng.UniformDouble() < dropout_;
  }

  absl::Status RunTask(const VirtualClient& vc, const core::TrainTask& task, client::CoordinatorChannel* channel,
                       bool gated) {
    auto trainer = ct::TorchTrainer::Create(spec_, vc.train, vc.eval);
    if (!trainer.ok()) return trainer.status();
    GatedTrainer gated_trainer(trainer->get(), &gate_);
    client::Trainer* honest = gated ? static_cast<client::Trainer*>(&gated_trainer) : trainer->get();
    AttackingTrainer attacking(honest, attack_, attack_scale_);
    DroppingChannel dropping(channel, drop_before_);
    client::ClientOptions options;
    options.id = vc.id;
    if (task.config.personalization.mode != core::PersonalizationMode::kNone) {
      options.personal_state_dir = PersonalDir(personal_dir_, vc.id);
    }
    client::ClientRuntime runtime(std::move(options), Drops(vc, task.ref.round) ? &dropping : channel,
                                  vc.attacker ? &attacking : honest);
    return runtime.RunTask(task).status();
  }

  void RunSecure(const VirtualClient& vc, const core::TrainTask& task) {
    ct::ConfigureTorchThreads(torch_threads_);
    InMemoryChannel channel(coordinator_);
    absl::Status status = RunTask(vc, task, &channel, /*gated=*/true);
    if (!status.ok()) {
      core::Logger("simulator")->info("virtual client '{}' left round {}: {}", vc.id.value, task.ref.round,
                                      std::string(status.message()));
      coordinator_->ReportFailure(vc.id);
    }
  }

  void RunOne(const VirtualClient& vc, const core::TrainTask& task, uint64_t seq) {
    InMemoryChannel channel(coordinator_, [this, seq] { WaitTurn(seq); });
    absl::Status status = RunTask(vc, task, &channel, /*gated=*/false);
    WaitTurn(seq);
    if (absl::IsFailedPrecondition(status) || absl::IsNotFound(status)) {
      // A straggler: its round closed without it (over-selection, or a deadline).
      core::Logger("simulator")->debug("virtual client '{}' was late for round {}", vc.id.value, task.ref.round);
    } else if (!status.ok()) {
      core::Logger("simulator")->warn("virtual client '{}' failed round {}: {}", vc.id.value, task.ref.round,
                                      std::string(status.message()));
      coordinator_->ReportFailure(vc.id);
    }
    {
      std::lock_guard lock(mu_);
      ++turn_;
    }
    cv_.notify_all();
  }

  const std::vector<VirtualClient>* clients_;
  std::string personal_dir_;
  std::string attack_ = "sign-flip";
  double attack_scale_ = 10;
  const ct::ModelSpec spec_;
  const int torch_threads_;
  const double dropout_;
  const int drop_before_;
  const uint64_t seed_;
  TrainingGate gate_;
  std::mutex threads_mu_;
  std::vector<std::thread> threads_;  // GUARDED_BY(threads_mu_): secure-round participants
  std::map<ClientId, size_t> index_;
  coordinator::Coordinator* coordinator_ = nullptr;
  uint64_t next_seq_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t turn_ = 0;  // GUARDED_BY(mu_): the sequence number allowed to commit next
  core::ThreadPool pool_;
};

// Every client's held-out accuracy with the final global model and with its personal model.
absl::StatusOr<PersonalizationReport> EvaluatePersonalization(const std::vector<VirtualClient>& clients,
                                                              const ct::ModelSpec& spec,
                                                              const core::ModelWeights& global,
                                                              const core::TrainConfig& train,
                                                              const std::string& personal_root, int threads) {
  std::vector<std::optional<std::pair<double, double>>> accuracy(clients.size());
  std::vector<absl::Status> errors(clients.size());
  {
    core::ThreadPool pool(threads, [] { ct::ConfigureTorchThreads(1); });
    for (size_t i = 0; i < clients.size(); ++i) {
      pool.Submit([&, i] {
        const VirtualClient& vc = clients[i];
        if (vc.eval.empty() || vc.train.empty()) return;
        auto trainer = ct::TorchTrainer::Create(spec, vc.train, vc.eval);
        if (!trainer.ok()) {
          errors[i] = trainer.status();
          return;
        }
        auto personalizer = client::Personalizer::Open(PersonalDir(personal_root, vc.id));
        if (!personalizer.ok()) {
          errors[i] = personalizer.status();
          return;
        }
        core::TrainConfig config = train;  // as the client would derive it for one more round
        config.seed = core::DeriveSeed(train.seed, {core::StableHash(vc.id.value), 0xffffffffULL});
        auto personal = (*personalizer)->PersonalModel(global, config, **trainer);
        auto g = personal.ok() ? (*trainer)->Evaluate(global) : personal.status();
        auto p = g.ok() ? (*trainer)->Evaluate(*personal) : g.status();
        if (!p.ok()) {
          errors[i] = p.status();
          return;
        }
        accuracy[i] = {g->at("accuracy"), p->at("accuracy")};
      });
    }
  }
  PersonalizationReport report;
  report.mode = std::string(core::PersonalizationModeName(train.personalization.mode));
  for (size_t i = 0; i < clients.size(); ++i) {
    TESSERA_RETURN_IF_ERROR(errors[i]);
    if (!accuracy[i]) continue;
    ++report.clients;
    report.mean_global_accuracy += accuracy[i]->first;
    report.mean_personal_accuracy += accuracy[i]->second;
  }
  if (report.clients > 0) {
    report.mean_global_accuracy /= report.clients;
    report.mean_personal_accuracy /= report.clients;
  }
  return report;
}

coordinator::FedAvgOptions SamplingOptions(const SimulationOptions& o) {
  coordinator::FedAvgOptions fedavg;
  fedavg.fraction = o.fraction;
  fedavg.min_fit_clients = 1;
  fedavg.over_selection = o.over_selection;
  fedavg.min_available_clients = o.num_clients;  // open round 1 once every virtual client is in
  fedavg.train = {o.local_epochs, o.batch_size, o.learning_rate, o.seed};
  fedavg.train.proximal_mu = o.proximal_mu;
  fedavg.train.personalization = o.personalization;
  return fedavg;
}

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
  if (!(o.dropout >= 0 && o.dropout < 1)) return absl::InvalidArgumentError("--dropout must be in [0, 1)");
  if (o.attackers < 0 || o.attackers > o.num_clients) {
    return absl::InvalidArgumentError("--attackers must be in [0, --clients]");
  }
  if (o.attack != "sign-flip" && o.attack != "scaling" && o.attack != "gaussian" && o.attack != "label-flip") {
    return absl::InvalidArgumentError(
        StrCat("--attack must be sign-flip, scaling, gaussian or label-flip, not '", o.attack, "'"));
  }
  if (!(o.attack_scale > 0) || !std::isfinite(o.attack_scale)) {
    return absl::InvalidArgumentError("--attack-scale must be positive and finite");
  }
  TESSERA_RETURN_IF_ERROR(ValidatePersonalization(o.personalization, o.proximal_mu, o.secure_aggregation));

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
                      {"over_selection", o.over_selection},
                      {"rounds", o.rounds},       {"model", o.model},
                      {"partition", o.partition}, {"local_epochs", o.local_epochs},
                      {"batch_size", o.batch_size}, {"lr", o.learning_rate},
                      {"seed", o.seed},           {"client_test_fraction", o.client_test_fraction},
                      {"threads", o.threads},     {"server_eval", o.server_eval},
                      {"secure_aggregation", o.secure_aggregation},
                      {"dropout", o.dropout},     {"dropout_stage", o.dropout_stage},
                      {"dp_clip_norm", o.dp.clip_norm}, {"dp_noise_multiplier", o.dp.noise_multiplier},
                      {"dp_adaptive_clipping", o.dp.adaptive.has_value()}};
  j["attackers"] = o.attackers;
  if (o.attackers > 0) {
    j["attack"] = o.attack;
    j["attack_scale"] = o.attack_scale;
  }
  j["strategy"] = o.strategy.name;
  j["proximal_mu"] = o.proximal_mu;
  j["personalization"] = std::string(core::PersonalizationModeName(o.personalization.mode));
  if (o.personalization.mode != core::PersonalizationMode::kNone) {
    j["personalization_steps"] = o.personalization.steps;
    j["ditto_lambda"] = o.personalization.ditto_lambda;
    j["private_layers"] = o.personalization.private_layers;
  }
  for (const auto& [key, value] : coordinator::SetParameters(o.strategy)) j[key] = value;
  if (o.secure_aggregation) {
    j["secagg"] = {{"neighbours", o.secagg.neighbours}, {"threshold", o.secagg.threshold},
                   {"clip", o.secagg.fixed_point.clip}, {"bits", o.secagg.fixed_point.bits},
                   {"modulus_bits", o.secagg.fixed_point.modulus_bits},
                   {"expected_dropout", o.secagg.expected_dropout}};
  }
  return j.dump();
}

absl::StatusOr<SimulationReport> RunSimulation(const SimulationOptions& o) {
  TESSERA_RETURN_IF_ERROR(Validate(o));
  // The strategy's parameters are checked before any data is loaded.
  TESSERA_ASSIGN_OR_RETURN(auto strategy,
                           coordinator::MakeStrategy(o.strategy, SamplingOptions(o), o.secure_aggregation));
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
    clients[i].attacker = i < o.attackers;
    if (clients[i].attacker && o.attack == "label-flip") clients[i].train = FlippedLabels(clients[i].train);
  }
  // The descriptors own the indices now: an idle client costs only its descriptor.
  decltype(parts)().swap(parts);
  decltype(splits)().swap(splits);

  ct::ModelSpec spec{o.model, train->example_shape, train->num_classes};
  TESSERA_ASSIGN_OR_RETURN(core::ModelWeights initial, ct::InitialWeights(spec, o.seed));
  SimulationOptions resolved = o;
  core::PersonalizationSpec& personalization = resolved.personalization;
  if (personalization.mode == core::PersonalizationMode::kFedPer && personalization.private_layers.empty()) {
    personalization.private_layers = core::LastLayerPrefix(initial);
    TESSERA_ASSIGN_OR_RETURN(strategy, coordinator::MakeStrategy(o.strategy, SamplingOptions(resolved),
                                                                 o.secure_aggregation));
  }
  // Personal models live on disk, not in memory: an idle virtual client stays a descriptor.
  std::optional<std::filesystem::path> scratch;
  std::string personal_root = o.personal_state_dir;
  if (personalization.mode != core::PersonalizationMode::kNone && personal_root.empty()) {
    if (!o.output_dir.empty()) {
      personal_root = (std::filesystem::path(o.output_dir) / "personal").string();
    } else {
      scratch = std::filesystem::temp_directory_path() / StrCat("tessera_personal_", ::getpid(), "_", o.seed);
      personal_root = scratch->string();
    }
  }
  struct RemoveScratch {
    std::optional<std::filesystem::path>* dir;
    ~RemoveScratch() {
      std::error_code ec;
      if (*dir) std::filesystem::remove_all(**dir, ec);
    }
  } remove_scratch{&scratch};

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


  coordinator::CoordinatorOptions copts;
  copts.round.run_id = StrCat("sim-", o.seed);
  copts.round.num_rounds = o.rounds;
  copts.round.round_deadline = absl::Hours(24);
  copts.round.min_results = 1;
  copts.round.seed = o.seed;
  copts.liveness_timeout = absl::InfiniteDuration();  // virtual clients do not heartbeat
  if (!o.output_dir.empty()) copts.model_dir = (std::filesystem::path(o.output_dir) / "models").string();

  TESSERA_ASSIGN_OR_RETURN(int drop_before, ParseDropStage(o.dropout_stage));
  if (o.secure_aggregation) {
    const int expected = std::max(2, static_cast<int>(std::ceil(o.fraction * o.num_clients - 1e-9)));
    TESSERA_RETURN_IF_ERROR(security::secagg::ResolveConfig(o.secagg, expected).status());
    copts.round.secure_aggregation = o.secagg;
  }
  copts.round.dp = o.dp;
  copts.round.dp.noise_seed = core::DeriveSeed(o.seed, {0x6e6f697365ULL /* "noise" */});
  if (!o.output_dir.empty()) copts.round.privacy_state_file = (std::filesystem::path(o.output_dir) / "privacy.txt").string();
  Scheduler scheduler(&clients, spec, threads, torch_threads, o.dropout, drop_before, o.seed);
  coordinator::CoordinatorDeps deps;
  deps.evaluator = evaluator.get();
  deps.observer = log.get();
  deps.extra_sender = &scheduler;
  TESSERA_ASSIGN_OR_RETURN(auto coordinator,
                           coordinator::Coordinator::Create(copts, std::move(strategy), std::move(initial), deps));
  scheduler.set_coordinator(coordinator.get());
  scheduler.set_personal_dir(personal_root);
  scheduler.set_attack(o.attack, o.attack_scale);

  if (o.progress) {
    std::fprintf(o.progress, "tessera simulate: %d clients (%s), %s model, %d rounds, fraction %.3g, %d threads%s%s\n",
                 o.num_clients, ToString(pspec).c_str(), o.model.c_str(), o.rounds, o.fraction, threads,
                 o.strategy.name == "fedavg" ? "" : ", strategy ", o.strategy.name == "fedavg" ? "" : o.strategy.name.c_str());
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
  if (personalization.mode != core::PersonalizationMode::kNone) {
    TESSERA_ASSIGN_OR_RETURN(report.personalization,
                             EvaluatePersonalization(clients, spec, *coordinator->global_model()->weights,
                                                     SamplingOptions(resolved).train, personal_root, threads));
    const PersonalizationReport& p = *report.personalization;
    if (o.progress) {
      std::fprintf(o.progress, "personalization %s: mean client accuracy %.4f global, %.4f personal (%d clients)\n",
                   p.mode.c_str(), p.mean_global_accuracy, p.mean_personal_accuracy, p.clients);
      std::fflush(o.progress);
    }
    if (!o.output_dir.empty()) {
      nlohmann::json j = {{"personalization", p.mode},
                          {"clients", p.clients},
                          {"mean_global_accuracy", p.mean_global_accuracy},
                          {"mean_personal_accuracy", p.mean_personal_accuracy}};
      TESSERA_RETURN_IF_ERROR(core::WriteFileAtomic(
          (std::filesystem::path(o.output_dir) / "personalization.json").string(), j.dump(2) + "\n"));
    }
  }
  report.wall_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  TESSERA_RETURN_IF_ERROR(log->WriteSummary(OptionsJson(resolved)));
  return report;
}

}  // namespace tessera::simulations
