// Simulator: a whole federation in one process. A Coordinator and N virtual clients, each a
// ClientRuntime over an InMemoryChannel with a TorchTrainer on its partition of the data.
//
// An idle virtual client is a descriptor (id + example indices); its trainer exists only while
// it works on a task. Sampled clients train in parallel on a FIFO thread pool sized to the
// cores, with one libtorch/BLAS thread each. Results are committed to the coordinator in sampling
// order (a client waits for its turn to upload), so the float sum, and with it the whole run, is
// reproducible to the bit for a seed whatever the thread schedule.
#pragma once

#include <cstdio>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/round_state_machine.h"
#include "coordinator/strategy_factory.h"
#include "security/secagg/config.h"

namespace tessera::simulations {

struct SimulationOptions {
  std::string dataset = "fashion-mnist";  // or "csv:PATH" (last column the label)
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int num_clients = 100;
  double fraction = 0.1;
  double over_selection = 1.0;  // sample this factor more; close a round once the target reported
  int rounds = 10;
  std::string model = "mlp";  // logreg | mlp | cnn | PATH.pt
  std::string partition = "iid";
  int local_epochs = 1;
  int batch_size = 10;
  double learning_rate = 0.05;
  coordinator::StrategyOptions strategy;  // fedavg unless set (coordinator/strategy_factory.h)
  uint64_t seed = 1;
  double client_test_fraction = 0.1;  // each client's local held-out split
  int threads = 0;                    // 0: the machine's cores
  bool server_eval = true;            // evaluate each global model on the test split
  std::string output_dir;             // metrics.jsonl, summary.json, models/ ("" = none)
  // Secure aggregation: every round through a SecAgg+ session.
  bool secure_aggregation = false;
  security::secagg::SecAggConfig secagg;
  // Simulated dropouts: this fraction of each round's sampled clients drops out before
  // `dropout_stage` (advertise, share, masked, unmasking; "train" for plain rounds: before upload).
  double dropout = 0;
  std::string dropout_stage = "unmasking";
  // Byzantine clients, to try the robust strategies: the first `attackers` virtual clients
  // poison what they upload with `attack`:
  //   sign-flip   global - s * delta (the update reversed and scaled)
  //   scaling     global + s * delta (model replacement, Bagdasaryan et al. 2020)
  //   gaussian    global + N(0, s^2) per coordinate instead of their update
  //   label-flip  an honest update from their data with labels y -> C - 1 - y
  // where s = attack_scale.
  int attackers = 0;
  std::string attack = "sign-flip";
  double attack_scale = 10;
  // Client-side personalization (finetune, fedper, ditto) and FedProx's proximal term. fedper's
  // private layers default to the model's last layer.
  core::PersonalizationSpec personalization;
  double proximal_mu = 0;
  // Where the virtual clients keep their personal models ("": output_dir/personal, or a
  // temporary directory removed at the end without an output directory).
  std::string personal_state_dir;
  // DP-FedAvg (clipping, noise, adaptive clipping, budget); the noise is seeded from `seed`.
  coordinator::RoundConfig::Dp dp;
  std::FILE* progress = stdout;       // a line per round (nullptr = quiet)
};

// After a personalized run: every client's accuracy on its own held-out data, for the final
// global model and for its personal model (given that global model), averaged over clients.
struct PersonalizationReport {
  std::string mode;
  int clients = 0;  // clients with held-out data
  double mean_global_accuracy = 0;
  double mean_personal_accuracy = 0;
};

struct SimulationReport {
  std::vector<coordinator::RoundSummary> rounds;
  double wall_seconds = 0;
  std::optional<PersonalizationReport> personalization;
};

// INVALID_ARGUMENT for bad options, NOT_FOUND for missing data; otherwise runs every round.
absl::StatusOr<SimulationReport> RunSimulation(const SimulationOptions& options);

// The options as a JSON object (for summary.json).
std::string OptionsJson(const SimulationOptions& options);

}  // namespace tessera::simulations
