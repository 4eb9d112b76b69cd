// Fakes for coordinator tests: a ClientSender that records what it was told and an Evaluator
// with canned answers. Header-only; not thread-safe (the coordinator calls them under its lock).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/client_sender.h"
#include "coordinator/round_state_machine.h"
#include "core/federation.h"
#include "core/ids.h"
#include "core/tensor.h"

namespace tessera::testutil {

// Records every (client, task) pair and every ended round, in call order.
class RecordingSender final : public coordinator::ClientSender {
 public:
  void SendTask(const core::ClientId& client, const core::TrainTask& task) override {
    sent.emplace_back(client, task);
  }
  void EndRound(core::RoundNumber round) override { ended.push_back(round); }

  // Tasks sent for `round`, in sending order.
  std::vector<std::pair<core::ClientId, core::TrainTask>> TasksOfRound(core::RoundNumber round) const {
    std::vector<std::pair<core::ClientId, core::TrainTask>> out;
    for (const auto& p : sent) {
      if (p.second.ref.round == round) out.push_back(p);
    }
    return out;
  }
  // The latest task sent to `client`, if any.
  std::optional<core::TrainTask> LastTaskFor(const core::ClientId& client) const {
    for (auto it = sent.rbegin(); it != sent.rend(); ++it) {
      if (it->first == client) return it->second;
    }
    return std::nullopt;
  }

  std::vector<std::pair<core::ClientId, core::TrainTask>> sent;
  std::vector<core::RoundNumber> ended;
};

// Returns `metrics` (or `error` when set) and remembers what it evaluated.
class FakeEvaluator final : public coordinator::Evaluator {
 public:
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& weights) override {
    ++calls;
    last_weights = weights;
    if (!error.ok()) return error;
    return metrics;
  }

  core::Metrics metrics = {{"accuracy", 0.75}};
  absl::Status error;
  int calls = 0;
  core::ModelWeights last_weights;
};

// Records every round summary.
class RecordingObserver final : public coordinator::RoundObserver {
 public:
  void OnRoundEnd(const coordinator::RoundSummary& summary) override { summaries.push_back(summary); }
  std::vector<coordinator::RoundSummary> summaries;
};

// A one-tensor model: "w" of shape [values.size()], F32.
inline core::ModelWeights FloatModel(std::vector<float> values, std::string name = "w") {
  core::ModelWeights w;
  const int64_t n = static_cast<int64_t>(values.size());
  w.tensors.push_back(core::NamedTensor::FromFloats(std::move(name), {n}, values));
  return w;
}

// The values of a one-tensor F32 model.
inline std::vector<float> Values(const core::ModelWeights& w) {
  auto v = w.tensors.at(0).f32();
  return {v.begin(), v.end()};
}

// A result answering `task` with `weights` trained on `num_examples` examples.
inline core::TrainResult ResultFor(const core::TrainTask& task, core::ModelWeights weights, int64_t num_examples,
                                   core::Metrics metrics = {}) {
  core::TrainResult r;
  r.ref = task.ref;
  r.num_examples = num_examples;
  r.metrics = std::move(metrics);
  r.weights = std::move(weights);
  return r;
}

}  // namespace tessera::testutil
