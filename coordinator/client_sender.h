// How the round state machine hands a task to a client, whatever the transport: the
// Coordinator's mailbox for long-polling clients, or the simulator's scheduler.
// Called with the coordinator's lock held: implementations must not block or call back.
#pragma once

#include "core/federation.h"
#include "core/ids.h"

namespace tessera::coordinator {

class ClientSender {
 public:
  virtual ~ClientSender() = default;
  virtual void SendTask(const core::ClientId& client, const core::TrainTask& task) = 0;
  // The round is over: tasks of `round` not yet picked up are void.
  virtual void EndRound(core::RoundNumber round) {}
};

// Evaluates a global model on held-out data on the server (optional).
class Evaluator {
 public:
  virtual ~Evaluator() = default;
  virtual absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights& weights) = 0;
};

}  // namespace tessera::coordinator
