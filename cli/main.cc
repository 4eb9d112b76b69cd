// `tessera`: one binary, subcommands that wire the libraries together.
//   tessera simulate     a whole federation in one process
//   tessera coordinator  serve a federated run over gRPC
//   tessera client       take part in a run with local private data
//   tessera certs        create the federation's CA and issue mTLS certificates (certs_command.h)
//   tessera models       list, describe and export a run's model versions (models_command.h)
//   tessera loadgen      load-test a coordinator it starts on loopback (loadgen_command.h)
// Every failure is one line on stderr and a nonzero exit: 2 for bad usage or configuration,
// 1 for a run that could not complete.
#include <malloc.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli/certs_command.h"
#include "cli/client_serving.h"
#include "cli/loadgen_command.h"
#include "cli/config.h"
#include "cli/models_command.h"
#include "client/client_runtime.h"
#include "client/data/csv_reader.h"
#include "client/data/idx_reader.h"
#include "client/grpc/grpc_channel.h"
#include "client/torch/torch_trainer.h"
#include "coordinator/coordinator.h"
#include "coordinator/grpc/coordinator_service.h"
#include "coordinator/run_log.h"
#include "coordinator/strategy_factory.h"
#include "core/file_io.h"
#include "core/logging.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "core/strings.h"
#include "simulations/partitioner.h"
#include "security/dp/adaptive_clipping.h"
#include "security/secagg/config.h"
#include "simulations/simulator.h"

namespace tessera::cli {
namespace {

using core::StrCat;
namespace ct = client::torch;

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;

int Fail(const std::string& command, const absl::Status& s) {
  std::cerr << "tessera " << command << ": " << s.message() << " [" << absl::StatusCodeToString(s.code()) << "]\n";
  return absl::IsInvalidArgument(s) || absl::IsNotFound(s) ? kExitUsage : kExitFailure;
}

// Freed memory stays in the process: a freshly faulted page costs ~10 us, and transfers and
// aggregation would otherwise pay it on every byte (ANCHORS.md: gRPC upload 0.39 -> 3.1 GB/s).
void KeepFreedMemory() {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

// SIGINT / SIGTERM set `g_stop`; the commands shut down cleanly when they see it. A handler
// rather than a blocked mask with sigwait: libraries start threads before main() (libtorch's,
// gRPC's), and those would not inherit the mask.
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);
void OnStopSignal(int) { g_stop.store(true); }
void InstallStopSignals() {
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

absl::StatusOr<std::vector<int64_t>> ParseShape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) {
    try {
      size_t used = 0;
      long long v = std::stoll(part, &used);
      if (used != part.size() || v <= 0) throw std::invalid_argument(part);
      shape.push_back(v);
    } catch (const std::exception&) {
      return absl::InvalidArgumentError(StrCat("--input-shape must be positive integers separated by commas, got '", text, "'"));
    }
  }
  if (shape.empty()) return absl::InvalidArgumentError("--input-shape is empty");
  return shape;
}

struct Common {
  std::string config;
  std::string log_level = "warn";
};

void AddCommon(CLI::App* sub, Common* c) {
  sub->add_option("--config", c->config, "TOML file with settings (flags win over it)");
  sub->add_option("--log-level", c->log_level, "trace|debug|info|warn|error|off")->capture_default_str();
}

absl::Status Prepare(CLI::App* sub, const Common& c) {
  if (!c.config.empty()) {
    if (absl::Status s = ApplyTomlConfig(c.config, sub); !s.ok()) return s;
  }
  if (!core::SetLogLevel(c.log_level)) return absl::InvalidArgumentError(StrCat("unknown --log-level '", c.log_level, "'"));
  return absl::OkStatus();
}

// Secure aggregation and DP settings, shared by simulate and coordinator
// (TOML: a [secure_aggregation] and a [dp] table).
struct PrivacyArgs {
  bool secure_aggregation = false;
  security::secagg::SecAggConfig secagg;
  double stage_timeout = 120;
  coordinator::RoundConfig::Dp dp;
  bool adaptive_clipping = false;
  security::dp::AdaptiveClippingConfig adaptive;
};

void AddPrivacy(CLI::App* sub, PrivacyArgs* a) {
  auto& c = a->secagg;
  sub->add_flag("--secure-aggregation", a->secure_aggregation, "Aggregate through SecAgg+: the server learns only the sum");
  sub->add_option("--secure-aggregation-neighbours", c.neighbours, "k per client (0: from n; n-1 or more: classic SecAgg)")
      ->capture_default_str();
  sub->add_option("--secure-aggregation-threshold", c.threshold, "t of k shares rebuild a secret (0: choose)")
      ->capture_default_str();
  sub->add_option("--secure-aggregation-expected-dropout", c.expected_dropout, "Dropout rate the parameters must survive")
      ->capture_default_str();
  sub->add_option("--secure-aggregation-dishonest-fraction", c.dishonest_fraction, "Assumed fraction of dishonest clients")
      ->capture_default_str();
  sub->add_option("--secure-aggregation-clip", c.fixed_point.clip, "Fixed point: clip each update coordinate to [-c, c]")
      ->capture_default_str();
  sub->add_option("--secure-aggregation-bits", c.fixed_point.bits, "Fixed point: bits per coordinate")->capture_default_str();
  sub->add_option("--secure-aggregation-modulus-bits", c.fixed_point.modulus_bits, "Sums are taken mod 2^this")
      ->capture_default_str();
  sub->add_option("--secure-aggregation-weight-cap", c.fixed_point.weight_cap, "num_examples is capped to this")
      ->capture_default_str();
  sub->add_option("--secure-aggregation-stage-timeout", a->stage_timeout, "Seconds each key/unmasking stage may take")
      ->capture_default_str();
  sub->add_option("--dp-clip-norm", a->dp.clip_norm, "DP-FedAvg: clip each update to this L2 norm (0: off)")
      ->capture_default_str();
  sub->add_option("--dp-noise-multiplier", a->dp.noise_multiplier, "DP-FedAvg: Gaussian noise z (stddev z*S/m)")
      ->capture_default_str();
  sub->add_option("--dp-delta", a->dp.delta, "DP: delta at which epsilon is reported")->capture_default_str();
  sub->add_option("--dp-epsilon-budget", a->dp.epsilon_budget, "DP: no round starts that would exceed this (0: none)")
      ->capture_default_str();
  sub->add_flag("--dp-adaptive-clipping", a->adaptive_clipping,
                "Adaptive clipping (Andrew et al. 2021), starting from --dp-clip-norm");
  sub->add_option("--dp-target-quantile", a->adaptive.target_quantile, "Adaptive clipping: quantile of update norms")
      ->capture_default_str();
  sub->add_option("--dp-clip-learning-rate", a->adaptive.learning_rate, "Adaptive clipping: geometric step eta")
      ->capture_default_str();
  sub->add_option("--dp-clipped-count-stddev", a->adaptive.clipped_count_stddev,
                  "Adaptive clipping: noise on the count of unclipped clients")
      ->capture_default_str();
}

absl::Status ApplyPrivacy(PrivacyArgs& a) {
  if (!(a.stage_timeout > 0)) return absl::InvalidArgumentError("--secure-aggregation-stage-timeout must be positive");
  a.secagg.stage_deadline = absl::Seconds(a.stage_timeout);
  if (a.adaptive_clipping) {
    if (!(a.dp.clip_norm > 0)) return absl::InvalidArgumentError("--dp-adaptive-clipping starts from --dp-clip-norm > 0");
    a.adaptive.initial_clip = a.dp.clip_norm;
    a.dp.adaptive = a.adaptive;
  }
  return absl::OkStatus();
}

// The strategy and its parameters, shared by simulate and coordinator (coordinator/strategy_factory.h
// refuses parameters the chosen strategy does not take).
void AddStrategy(CLI::App* sub, coordinator::StrategyOptions* o) {
  std::string names;
  for (const std::string& n : coordinator::StrategyNames()) names += StrCat(names.empty() ? "" : " | ", n);
  sub->add_option("--strategy", o->name, names)->capture_default_str();
  sub->add_option("--server-lr", o->server_lr, "Server learning rate eta (fedavgm 1, adaptive 0.01)");
  sub->add_option("--server-momentum", o->server_momentum, "fedavgm: server momentum (0.9)");
  sub->add_option("--beta1", o->beta1, "fedadam, fedyogi, fedadagrad: first-moment decay (0.9)");
  sub->add_option("--beta2", o->beta2, "fedadam, fedyogi: second-moment decay (0.99)");
  sub->add_option("--tau", o->tau, "fedadam, fedyogi, fedadagrad: adaptivity (1e-3)");
  sub->add_option("--trim-fraction", o->trim_fraction, "trimmed-mean: drop this fraction at each end (0.1)");
  sub->add_option("--byzantine", o->byzantine, "krum, multi-krum, bulyan: Byzantine clients tolerated, f (1)");
  sub->add_option("--multi-krum-m", o->multi_krum_m, "multi-krum: average the m best updates (n - f)");
  sub->add_option("--norm-bound", o->norm_bound, "norm-bound: clip each update's delta to this L2 norm");
}

// Client-side personalization and FedProx, shared by simulate and coordinator: the federation
// chooses them, the clients do them (client/personalizer.h).
struct PersonalizationArgs {
  std::string mode = "none";
  int steps = 0;
  double ditto_lambda = 0;
  std::string private_layers;  // comma-separated tensor-name prefixes
  double proximal_mu = 0;
};

void AddPersonalization(CLI::App* sub, PersonalizationArgs* a) {
  sub->add_option("--personalization", a->mode, "none | finetune | fedper | ditto (each client's personal model)")
      ->capture_default_str();
  sub->add_option("--personalization-steps", a->steps,
                  "finetune: SGD steps on each received global model; ditto: personal steps per round (0: the "
                  "round's epochs)");
  sub->add_option("--ditto-lambda", a->ditto_lambda, "ditto: pull of the personal model toward the global one");
  sub->add_option("--private-layers", a->private_layers,
                  "fedper: comma-separated tensor-name prefixes kept on the clients (default: the last layer)");
  sub->add_option("--proximal-mu", a->proximal_mu, "FedProx: mu/2 ||w - global||^2 in every client's loss (0: off)");
}

// The spec the flags describe; fedper without --private-layers keeps `model`'s last layer.
absl::StatusOr<core::PersonalizationSpec> ResolvePersonalization(const PersonalizationArgs& a, bool secure,
                                                                 const core::ModelWeights* model) {
  core::PersonalizationSpec spec;
  TESSERA_ASSIGN_OR_RETURN(spec.mode, core::ParsePersonalizationMode(a.mode));
  spec.steps = a.steps;
  spec.ditto_lambda = a.ditto_lambda;
  std::stringstream layers(a.private_layers);
  for (std::string part; std::getline(layers, part, ',');) {
    part.erase(0, part.find_first_not_of(" \t"));
    part.erase(part.find_last_not_of(" \t") + 1);
    if (!part.empty()) spec.private_layers.push_back(part);
  }
  TESSERA_RETURN_IF_ERROR(core::ValidatePersonalization(spec, a.proximal_mu, secure));
  if (spec.mode == core::PersonalizationMode::kFedPer && spec.private_layers.empty() && model != nullptr) {
    spec.private_layers = core::LastLayerPrefix(*model);
  }
  return spec;
}

// ---------------------------------------------------------------- simulate
struct SimulateArgs {
  Common common;
  simulations::SimulationOptions options;
  PrivacyArgs privacy;
  PersonalizationArgs personalization;
  bool quiet = false;
};

void AddSimulate(CLI::App& app, SimulateArgs* a) {
  auto* sub = app.add_subcommand("simulate", "Run a whole federation on this machine");
  auto& o = a->options;
  AddCommon(sub, &a->common);
  sub->add_option("--dataset", o.dataset, "fashion-mnist | csv:PATH")->capture_default_str();
  sub->add_option("--data-dir", o.data_dir, "Fashion-MNIST IDX files (.gz or raw)")->capture_default_str();
  sub->add_option("--clients", o.num_clients, "Virtual clients")->capture_default_str();
  sub->add_option("--fraction", o.fraction, "Fraction of clients sampled per round (C)")->capture_default_str();
  sub->add_option("--over-selection", o.over_selection,
                  "Sample this factor more clients; a round closes once the target count reported")
      ->capture_default_str();
  sub->add_option("--rounds", o.rounds, "Rounds")->capture_default_str();
  sub->add_option("--model", o.model, "logreg | mlp | cnn | PATH.pt (TorchScript)")->capture_default_str();
  sub->add_option("--partition", o.partition, "iid | shards:K | dirichlet:ALPHA")->capture_default_str();
  sub->add_option("--local-epochs", o.local_epochs, "Local epochs per round (E)")->capture_default_str();
  sub->add_option("--batch-size", o.batch_size, "Local batch size (B)")->capture_default_str();
  sub->add_option("--lr", o.learning_rate, "Client learning rate")->capture_default_str();
  AddStrategy(sub, &o.strategy);
  AddPersonalization(sub, &a->personalization);
  sub->add_option("--seed", o.seed, "Seed: the same seed gives the same run")->capture_default_str();
  sub->add_option("--client-test-fraction", o.client_test_fraction, "Local held-out split of each client")
      ->capture_default_str();
  sub->add_option("--threads", o.threads, "Clients trained in parallel (0: one per core)")->capture_default_str();
  sub->add_option("--server-eval", o.server_eval, "Evaluate each global model on the test split")->capture_default_str();
  sub->add_option("--output", o.output_dir, "Directory for metrics.jsonl, summary.json and models/");
  sub->add_flag("--quiet", a->quiet, "No progress lines");
  sub->add_option("--dropout", o.dropout, "Simulated dropouts: fraction of each round's sampled clients")
      ->capture_default_str();
  sub->add_option("--dropout-stage", o.dropout_stage, "They drop before: advertise | share | masked | unmasking | train")
      ->capture_default_str();
  sub->add_option("--attackers", o.attackers, "Byzantine clients: this many poison their uploads (to try --strategy)")
      ->capture_default_str();
  sub->add_option("--attack", o.attack,
                  "sign-flip (global - s*delta) | scaling (global + s*delta) | gaussian (global + N(0, s^2)) | "
                  "label-flip (train on labels C-1-y)")
      ->capture_default_str();
  sub->add_option("--attack-scale", o.attack_scale, "s: the factor of sign-flip and scaling, gaussian's stddev")
      ->capture_default_str();
  AddPrivacy(sub, &a->privacy);
}

int RunSimulate(CLI::App* sub, SimulateArgs& a) {
  if (absl::Status s = Prepare(sub, a.common); !s.ok()) return Fail("simulate", s);
  if (absl::Status s = ApplyPrivacy(a.privacy); !s.ok()) return Fail("simulate", s);
  a.options.progress = a.quiet ? nullptr : stdout;
  a.options.secure_aggregation = a.privacy.secure_aggregation;
  a.options.secagg = a.privacy.secagg;
  a.options.dp = a.privacy.dp;
  auto personalization = ResolvePersonalization(a.personalization, a.privacy.secure_aggregation, nullptr);
  if (!personalization.ok()) return Fail("simulate", personalization.status());
  a.options.personalization = *personalization;  // fedper's default layers: the simulator's model
  a.options.proximal_mu = a.personalization.proximal_mu;
  auto report = simulations::RunSimulation(a.options);
  if (!report.ok()) return Fail("simulate", report.status());
  const auto& rounds = report->rounds;
  if (!a.quiet && !rounds.empty()) {
    std::printf("done: %zu rounds in %.1f s%s%s\n", rounds.size(), report->wall_seconds,
                a.options.output_dir.empty() ? "" : "; metrics in ", a.options.output_dir.c_str());
  }
  return 0;
}

// ---------------------------------------------------------------- coordinator
struct CoordinatorArgs {
  Common common;
  std::string address = "127.0.0.1:50051";
  std::string port_file;
  std::string model = "mlp";
  std::string initial_model;
  std::string input_shape = "1,28,28";
  int num_classes = 10;
  int rounds = 10;
  double fraction = 1.0;
  double over_selection = 1.0;
  int min_clients = 2;
  int min_results = 1;
  int64_t max_num_examples = int64_t{1} << 31;
  double round_timeout = 600;
  int local_epochs = 1;
  int batch_size = 10;
  double lr = 0.05;
  coordinator::StrategyOptions strategy;
  PersonalizationArgs personalization;
  uint64_t seed = 1;
  std::string run_id;
  std::string output;
  std::string eval_data_dir;
  double linger = 5;
  bool insecure = false;
  bool sync_state = false;
  std::string tls_cert, tls_key, tls_client_ca;
  std::string allow_list, revoked;  // client-id files (certs_command.h)
  int max_concurrent_uploads = 16;
  int max_concurrent_downloads = 64;
  int64_t upload_memory_mb = 0;     // 0: from the model's size
  PrivacyArgs privacy;
};

void AddCoordinator(CLI::App& app, CoordinatorArgs* a) {
  auto* sub = app.add_subcommand("coordinator", "Serve a federated run over gRPC");
  AddCommon(sub, &a->common);
  sub->add_option("--address", a->address, "host:port to listen on (port 0 picks one)")->capture_default_str();
  sub->add_option("--port-file", a->port_file, "Write the bound port to this file once listening");
  sub->add_option("--model", a->model, "logreg | mlp | cnn | PATH.pt: the initial model")->capture_default_str();
  sub->add_option("--initial-model", a->initial_model, "Start from these safetensors weights instead");
  sub->add_option("--input-shape", a->input_shape, "Shape of one example, e.g. 1,28,28")->capture_default_str();
  sub->add_option("--num-classes", a->num_classes, "Classes")->capture_default_str();
  sub->add_option("--rounds", a->rounds, "Rounds")->capture_default_str();
  sub->add_option("--fraction", a->fraction, "Fraction of available clients sampled per round")->capture_default_str();
  sub->add_option("--over-selection", a->over_selection,
                  "Sample this factor more clients; a round closes once the target count reported")
      ->capture_default_str();
  sub->add_option("--min-clients", a->min_clients, "Clients that must be available before a round opens")
      ->capture_default_str();
  sub->add_option("--min-results", a->min_results, "Quorum: valid results a round needs")->capture_default_str();
  sub->add_option("--max-num-examples", a->max_num_examples,
                  "A result claiming more examples than this is rejected (it would outweigh the others)")
      ->capture_default_str();
  sub->add_option("--round-timeout", a->round_timeout, "Round deadline in seconds")->capture_default_str();
  sub->add_option("--local-epochs", a->local_epochs, "Local epochs per round")->capture_default_str();
  sub->add_option("--batch-size", a->batch_size, "Local batch size")->capture_default_str();
  sub->add_option("--lr", a->lr, "Client learning rate")->capture_default_str();
  sub->add_option("--seed", a->seed, "Seed of the initial model and of sampling")->capture_default_str();
  sub->add_option("--run-id", a->run_id, "Run id (default: run-SEED)");
  sub->add_option("--output", a->output, "Directory for metrics.jsonl, summary.json and models/");
  sub->add_flag("--sync-state", a->sync_state,
               "fsync the state database and spooled results at every commit (survive machine crashes, not only "
               "process crashes)");
  sub->add_option("--eval-data-dir", a->eval_data_dir, "Evaluate each global model on Fashion-MNIST's test split here");
  sub->add_option("--linger", a->linger, "Seconds to keep serving after the last round, so clients hear it ended")
      ->capture_default_str();
  sub->add_flag("--insecure", a->insecure, "Plaintext gRPC (local experiments only)");
  sub->add_option("--tls-cert", a->tls_cert, "Server certificate (PEM)");
  sub->add_option("--tls-key", a->tls_key, "Server private key (PEM)");
  sub->add_option("--tls-client-ca", a->tls_client_ca, "CA (PEM) whose certificates clients must present (mTLS)");
  sub->add_option("--allow-list", a->allow_list, "Only the client ids in this file may take part (one per line, # comments)");
  sub->add_option("--revoked", a->revoked, "Client ids refused (one per line); ids added while running are revoked at once");
  sub->add_option("--max-concurrent-uploads", a->max_concurrent_uploads,
                  "Upload streams served at once; more are shed with a retry-after hint")
      ->capture_default_str();
  sub->add_option("--max-concurrent-downloads", a->max_concurrent_downloads,
                  "Model downloads served at once (each buffers ~2 MiB); more are refused with a retry-after hint")
      ->capture_default_str();
  sub->add_option("--upload-memory-mb", a->upload_memory_mb,
                  "MiB buffered for uploads in flight and partial uploads kept for a resume "
                  "(0: room for the concurrent uploads plus 8 partial ones of the model's size)")
      ->capture_default_str();
  AddStrategy(sub, &a->strategy);
  AddPersonalization(sub, &a->personalization);
  AddPrivacy(sub, &a->privacy);
}

class EvalAdapter final : public coordinator::Evaluator {
 public:
  explicit EvalAdapter(std::unique_ptr<ct::TorchTrainer> t) : trainer_(std::move(t)) {}
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& w) override { return trainer_->Evaluate(w); }

 private:
  std::unique_ptr<ct::TorchTrainer> trainer_;
};

int RunCoordinator(CLI::App* sub, CoordinatorArgs& a) {
  const std::string cmd = "coordinator";
  if (absl::Status s = Prepare(sub, a.common); !s.ok()) return Fail(cmd, s);
  if (absl::Status s = ApplyPrivacy(a.privacy); !s.ok()) return Fail(cmd, s);
  if (a.privacy.secure_aggregation) {
    const int expected = std::max(2, static_cast<int>(std::ceil(a.fraction * a.min_clients - 1e-9)));
    if (auto r = security::secagg::ResolveConfig(a.privacy.secagg, expected); !r.ok()) return Fail(cmd, r.status());
  }
  if (a.rounds < 1 || a.min_clients < 1 || a.min_results < 1 || !(a.round_timeout > 0) || a.max_num_examples < 1) {
    return Fail(cmd, absl::InvalidArgumentError(
                         "--rounds, --min-clients, --min-results, --round-timeout and --max-num-examples must be positive"));
  }
  if (!(a.linger >= 0)) return Fail(cmd, absl::InvalidArgumentError("--linger must not be negative"));
  if (a.max_concurrent_uploads < 1 || a.max_concurrent_uploads > 100000) {
    return Fail(cmd, absl::InvalidArgumentError("--max-concurrent-uploads must be in [1, 100000]"));
  }
  if (a.max_concurrent_downloads < 1 || a.max_concurrent_downloads > 100000) {
    return Fail(cmd, absl::InvalidArgumentError("--max-concurrent-downloads must be in [1, 100000]"));
  }
  if (a.upload_memory_mb < 0 || a.upload_memory_mb > (int64_t{1} << 20)) {
    return Fail(cmd, absl::InvalidArgumentError("--upload-memory-mb must be in [0, 1048576] (0: from the model's size)"));
  }
  auto shape = ParseShape(a.input_shape);
  if (!shape.ok()) return Fail(cmd, shape.status());
  ct::ModelSpec spec{a.model, *shape, a.num_classes};
  absl::StatusOr<core::ModelWeights> initial;
  if (!a.initial_model.empty()) {
    auto file = core::ReadSafetensorsFile(a.initial_model);
    if (!file.ok()) return Fail(cmd, file.status());
    initial = std::move(file->weights);
  } else {
    initial = ct::InitialWeights(spec, a.seed);
  }
  if (!initial.ok()) return Fail(cmd, initial.status());
  // The clients learn the personalization from their tasks; fedper's private layers default to
  // the model's last layer.
  auto personalization = ResolvePersonalization(a.personalization, a.privacy.secure_aggregation, &*initial);
  if (!personalization.ok()) return Fail(cmd, personalization.status());
  coordinator::FedAvgOptions fedavg;
  fedavg.fraction = a.fraction;
  fedavg.min_fit_clients = 1;
  fedavg.over_selection = a.over_selection;
  fedavg.min_available_clients = a.min_clients;
  fedavg.train = {a.local_epochs, a.batch_size, a.lr, a.seed};
  fedavg.train.proximal_mu = a.personalization.proximal_mu;
  fedavg.train.personalization = *personalization;
  auto strategy = coordinator::MakeStrategy(a.strategy, fedavg, a.privacy.secure_aggregation);
  if (!strategy.ok()) return Fail(cmd, strategy.status());

  std::unique_ptr<EvalAdapter> evaluator;
  if (!a.eval_data_dir.empty()) {
    auto test = client::LoadFashionMnist(a.eval_data_dir, "test");
    if (!test.ok()) return Fail(cmd, test.status());
    auto trainer = ct::TorchTrainer::Create(
        spec, {}, client::DatasetView::All(std::make_shared<const client::Dataset>(*std::move(test))));
    if (!trainer.ok()) return Fail(cmd, trainer.status());
    evaluator = std::make_unique<EvalAdapter>(*std::move(trainer));
  }

  auto log = coordinator::RunLog::Create(a.output, a.rounds, stdout);
  if (!log.ok()) return Fail(cmd, log.status());
  coordinator::CoordinatorOptions opts;
  opts.round.run_id = a.run_id.empty() ? StrCat("run-", a.seed) : a.run_id;
  opts.round.num_rounds = a.rounds;
  opts.round.round_deadline = absl::Seconds(a.round_timeout);
  opts.round.min_results = a.min_results;
  opts.round.max_num_examples = a.max_num_examples;
  opts.round.seed = a.seed;
  if (!a.output.empty()) opts.model_dir = (std::filesystem::path(a.output) / "models").string();
  if (a.privacy.secure_aggregation) opts.round.secure_aggregation = a.privacy.secagg;
  opts.round.dp = a.privacy.dp;
  if (!a.output.empty()) {
    // The run's state: a coordinator restarted with the same --output picks up where it stopped.
    opts.state_db = (std::filesystem::path(a.output) / "state.db").string();
    opts.sync_state_to_disk = a.sync_state;
  }
  if (!a.allow_list.empty()) {
    auto allowed = ReadClientIdList(a.allow_list);
    if (!allowed.ok()) return Fail(cmd, allowed.status());
    opts.allowed_clients = *std::move(allowed);
  }
  if (!a.revoked.empty()) {
    auto revoked = ReadClientIdList(a.revoked);
    if (!revoked.ok()) return Fail(cmd, revoked.status());
    opts.revoked_clients = *std::move(revoked);
  }
  coordinator::CoordinatorDeps deps;
  deps.evaluator = evaluator.get();
  deps.observer = log->get();
  auto coord = coordinator::Coordinator::Create(opts, *std::move(strategy), *std::move(initial), deps);
  if (!coord.ok()) return Fail(cmd, coord.status());
  if ((*coord)->resumed()) {
    const auto history = (*coord)->history();
    (*log)->Resume(history);
    std::printf("tessera coordinator: resumed run '%s' from %s after %zu rounds\n", opts.round.run_id.c_str(),
                opts.state_db.c_str(), history.size());
  }

  coordinator::ServerTlsOptions tls{a.insecure, a.tls_cert, a.tls_key, a.tls_client_ca};
  coordinator::ServiceOptions service;
  service.uploads.max_concurrent = a.max_concurrent_uploads;
  service.max_concurrent_downloads = a.max_concurrent_downloads;
  service.uploads.memory_bytes = static_cast<uint64_t>(a.upload_memory_mb) << 20;
  if (auto limits = coordinator::ResolveUploadLimits(service, (*coord)->global_model()->serialized.size()); !limits.ok()) {
    return Fail(cmd, absl::InvalidArgumentError(StrCat("--upload-memory-mb: ", limits.status().message())));
  } else {
    core::Logger("coordinator")->info("uploads: at most {} at once, {} MiB buffered", limits->max_concurrent,
                                      limits->memory_bytes >> 20);
  }
  auto server = coordinator::CoordinatorServer::Start(coord->get(), a.address, tls, service);
  if (!server.ok()) return Fail(cmd, server.status());
  std::printf("tessera coordinator: run '%s' listening on port %d (%s)\n", opts.round.run_id.c_str(),
              (*server)->port(), a.insecure ? "plaintext" : (a.tls_client_ca.empty() ? "TLS" : "mutual TLS"));
  std::fflush(stdout);
  if (!a.port_file.empty()) {
    if (absl::Status s = core::WriteFileAtomic(a.port_file, std::to_string((*server)->port())); !s.ok()) {
      return Fail(cmd, s);
    }
  }
  RevocationWatcher revocations(a.revoked, opts.revoked_clients, coord->get());
  while (!g_stop && !(*coord)->WaitFinished(absl::Milliseconds(200))) {
    revocations.Poll();
  }
  if (!g_stop) {
    const absl::Time until = absl::Now() + absl::Seconds(a.linger);
    while (!g_stop && absl::Now() < until) absl::SleepFor(absl::Milliseconds(100));
  }
  (*server)->Shutdown();
  nlohmann::json config = {{"rounds", a.rounds}, {"fraction", a.fraction}, {"min_clients", a.min_clients},
                           {"min_results", a.min_results}, {"model", a.model}, {"local_epochs", a.local_epochs},
                           {"batch_size", a.batch_size}, {"lr", a.lr}, {"seed", a.seed}};
  config["strategy"] = a.strategy.name;
  for (const auto& [key, value] : coordinator::SetParameters(a.strategy)) config[key] = value;
  if (absl::Status s = (*log)->WriteSummary(config.dump()); !s.ok()) return Fail(cmd, s);
  if (!(*coord)->finished()) return Fail(cmd, absl::CancelledError("stopped before the last round"));
  return 0;
}

// ---------------------------------------------------------------- client
struct ClientArgs {
  Common common;
  std::string coordinator = "127.0.0.1:50051";
  std::string id;
  std::string dataset = "fashion-mnist";
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string model = "mlp";
  std::string partition = "iid";
  int num_partitions = 1;
  int partition_index = 0;
  double test_fraction = 0.1;
  uint64_t data_seed = 1;
  std::string save_uploads;
  std::string personal_state_dir;
  int connect_attempts = 8;
  bool insecure = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
  bool secure_aggregation = false;
  ServeArgs serve;
};

void AddClient(CLI::App& app, ClientArgs* a) {
  auto* sub = app.add_subcommand("client", "Take part in a federated run with local data");
  AddCommon(sub, &a->common);
  sub->add_option("--coordinator", a->coordinator, "Coordinator address host:port")->capture_default_str();
  sub->add_option("--id", a->id, "This client's id (under mTLS: its certificate's name); required");
  sub->add_option("--dataset", a->dataset, "fashion-mnist | csv:PATH")->capture_default_str();
  sub->add_option("--data-dir", a->data_dir, "Fashion-MNIST IDX files")->capture_default_str();
  sub->add_option("--model", a->model, "logreg | mlp | cnn | PATH.pt (as the coordinator's)")->capture_default_str();
  sub->add_option("--partition", a->partition, "How the data is split into partitions: iid | shards:K | dirichlet:A")
      ->capture_default_str();
  sub->add_option("--num-partitions", a->num_partitions, "Split the dataset into this many partitions")
      ->capture_default_str();
  sub->add_option("--partition-index", a->partition_index, "Train on partition number (from 0)")->capture_default_str();
  sub->add_option("--test-fraction", a->test_fraction, "Local held-out split")->capture_default_str();
  sub->add_option("--data-seed", a->data_seed, "Seed of the partitioning")->capture_default_str();
  sub->add_option("--save-uploads", a->save_uploads, "Keep a safetensors copy of every upload here (audit)");
  sub->add_option("--personal-state-dir", a->personal_state_dir,
                  "Keep this client's personal model here across rounds and restarts (default: in memory)");
  sub->add_option("--connect-attempts", a->connect_attempts, "Attempts per RPC before giving up")->capture_default_str();
  sub->add_flag("--insecure", a->insecure, "Plaintext gRPC (local experiments only)");
  sub->add_option("--tls-ca", a->tls_ca, "CA (PEM) that signed the coordinator's certificate");
  sub->add_option("--tls-cert", a->tls_cert, "Client certificate (PEM) for mutual TLS");
  sub->add_option("--tls-key", a->tls_key, "Client private key (PEM)");
  sub->add_option("--tls-server-name", a->tls_server_name, "Expected name in the coordinator's certificate");
  sub->add_flag("--secure-aggregation", a->secure_aggregation,
                "Take part only in securely aggregated rounds: never send a plaintext update");
  AddServeFlags(sub, &a->serve);
}

int RunClient(CLI::App* sub, ClientArgs& a) {
  const std::string cmd = "client";
  if (absl::Status s = Prepare(sub, a.common); !s.ok()) return Fail(cmd, s);
  if (a.id.empty()) return Fail(cmd, absl::InvalidArgumentError("--id is required (a flag or `id` in the config file)"));
  if (a.num_partitions < 1 || a.partition_index < 0 || a.partition_index >= a.num_partitions) {
    return Fail(cmd, absl::InvalidArgumentError("--partition-index must be in [0, --num-partitions)"));
  }
  if (a.connect_attempts < 1) return Fail(cmd, absl::InvalidArgumentError("--connect-attempts must be at least 1"));
  if (!(a.test_fraction >= 0 && a.test_fraction < 1)) {
    return Fail(cmd, absl::InvalidArgumentError(StrCat("--test-fraction must be in [0, 1), got ", a.test_fraction)));
  }
  absl::StatusOr<client::Dataset> data;
  if (a.dataset == "fashion-mnist") {
    if (!std::filesystem::is_directory(a.data_dir)) {
      return Fail(cmd, absl::NotFoundError(StrCat("data directory ", a.data_dir, " does not exist")));
    }
    data = client::LoadFashionMnist(a.data_dir, "train");
  } else if (a.dataset.rfind("csv:", 0) == 0) {
    client::CsvOptions csv;
    csv.standardize = true;
    data = client::ReadCsvDataset(a.dataset.substr(4), csv);
  } else {
    return Fail(cmd, absl::InvalidArgumentError(StrCat("unknown dataset '", a.dataset, "'")));
  }
  if (!data.ok()) return Fail(cmd, data.status());
  auto pspec = simulations::ParsePartitionSpec(a.partition);
  if (!pspec.ok()) return Fail(cmd, pspec.status());
  auto shared = std::make_shared<const client::Dataset>(*std::move(data));
  auto parts = simulations::Partition(*shared, a.num_partitions, *pspec, a.data_seed);
  if (!parts.ok()) return Fail(cmd, parts.status());
  auto splits = simulations::SplitHeldOut(*parts, a.test_fraction, a.data_seed);
  auto& mine = splits[a.partition_index];
  ct::ModelSpec spec{a.model, shared->example_shape, shared->num_classes};
  auto trainer = ct::TorchTrainer::Create(spec, {shared, std::move(mine.train)}, {shared, std::move(mine.test)});
  if (!trainer.ok()) return Fail(cmd, trainer.status());

  client::ChannelTlsOptions tls{a.insecure, a.tls_ca, a.tls_cert, a.tls_key, a.tls_server_name};
  client::ChannelOptions copts;
  copts.retry.max_attempts = a.connect_attempts;
  auto channel = client::GrpcCoordinatorChannel::Create(a.coordinator, tls, copts);
  if (!channel.ok()) return Fail(cmd, channel.status());

  client::ClientOptions options;
  options.id = core::ClientId{a.id};
  options.require_secure_aggregation = a.secure_aggregation;
  options.personal_state_dir = a.personal_state_dir;
  if (!a.save_uploads.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(a.save_uploads, ec);
    if (ec) return Fail(cmd, absl::PermissionDeniedError(StrCat("cannot create ", a.save_uploads)));
    options.on_upload = [dir = a.save_uploads](const core::TrainResult& r) {
      std::map<std::string, std::string> meta = {{"run_id", r.ref.run_id},
                                                 {"round", std::to_string(r.ref.round)},
                                                 {"task_id", r.ref.task_id},
                                                 {"num_examples", std::to_string(r.num_examples)}};
      auto path = std::filesystem::path(dir) / StrCat("round_", r.ref.round, ".safetensors");
      if (auto s = core::WriteSafetensorsFile(path.string(), r.weights, meta); !s.ok()) {
        core::Logger("client")->error("cannot keep a copy of the upload: {}", std::string(s.message()));
      }
    };
  }
  auto serving = StartClientServing(a.serve, spec, *shared);
  if (!serving.ok()) return Fail(cmd, serving.status());
  if (*serving) {
    options.on_model = [serving = *serving](const core::ModelWeights& model, core::ModelVersion version,
                                            core::RoundNumber round, const core::Metrics& metrics) {
      ServeModel(*serving, model, version, round, metrics);
    };
  }
  ct::ConfigureTorchThreads(1);
  client::ClientRuntime runtime(options, channel->get(), trainer->get());
  absl::Status s = runtime.Run(&g_stop);
  if (!s.ok()) {
    if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) {
      return Fail(cmd, absl::UnavailableError(StrCat("cannot reach the coordinator at ", a.coordinator, ": ", s.message())));
    }
    return Fail(cmd, s);
  }
  std::printf("tessera client '%s': run finished after %d rounds\n", a.id.c_str(), runtime.tasks_done());
  if (*serving) {  // the served model outlives the run: serve until interrupted
    std::printf("tessera client '%s': still serving predictions; stop with Ctrl-C\n", a.id.c_str());
    std::fflush(stdout);
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

}  // namespace
}  // namespace tessera::cli

int main(int argc, char** argv) {
  using namespace tessera::cli;
  KeepFreedMemory();
  InstallStopSignals();
  CLI::App app{"Tessera: federated learning with secure aggregation, personalized serving and simulation"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tessera 0.1.0");
  SimulateArgs sim;
  CoordinatorArgs coord;
  ClientArgs cl;
  CertsArgs certs;
  ModelsArgs models;
  AddSimulate(app, &sim);
  AddCoordinator(app, &coord);
  AddClient(app, &cl);
  AddCerts(app, &certs);
  AddModels(app, &models);
  LoadgenArgs loadgen;
  AddLoadgen(app, &loadgen);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "tessera: " << e.what() << " (see tessera --help)\n";
    return kExitUsage;
  }
  try {
    if (auto* s = app.get_subcommand("simulate"); s->parsed()) return RunSimulate(s, sim);
    if (auto* s = app.get_subcommand("coordinator"); s->parsed()) return RunCoordinator(s, coord);
    if (auto* s = app.get_subcommand("client"); s->parsed()) return RunClient(s, cl);
    if (auto* s = app.get_subcommand("certs"); s->parsed()) return RunCerts(s, certs);
    if (auto* s = app.get_subcommand("models"); s->parsed()) return RunModels(s, models);
    if (auto* s = app.get_subcommand("loadgen"); s->parsed()) {
      return RunLoadgen(s, loadgen, std::filesystem::read_symlink("/proc/self/exe").string());
    }
  } catch (const std::exception& e) {  // a bug: still one line, never a stack trace
    std::cerr << "tessera: internal error: " << e.what() << "\n";
    return kExitFailure;
  }
  return kExitUsage;
}
