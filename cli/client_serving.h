// `tessera client --serve ADDR [--serve-grpc ADDR]`: the client serves predictions from the
// model it holds after each round (its personal model when the federation personalizes, else the
// global model it trained from) over HTTP/JSON (ADDR, see client/serving/http_server.h) and/or
// gRPC (tessera.v1.Predictor). Requests carry raw inputs (Fashion-MNIST: 784 pixel values in
// [0, 255]); the server applies the training data's preprocessing. Both are plaintext: bind
// them to a local or trusted address. Until the first round ends every request gets 503 /
// UNAVAILABLE; after the run finishes the client keeps serving until it is interrupted.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/client_runtime.h"
#include "client/data/dataset.h"
#include "client/torch/torch_trainer.h"

namespace tessera::cli {

struct ServeArgs {
  std::string http;  // "" : no HTTP server
  std::string grpc;  // "" : no gRPC server
  int64_t max_batch = 256;
};

void AddServeFlags(CLI::App* sub, ServeArgs* args);

class ClientServing;  // the service and its servers

// Starts the servers the flags ask for (nullptr when they ask for none): UNAVAILABLE with one
// line when an address cannot be bound (e.g. a taken port), INVALID_ARGUMENT for a malformed
// address or max batch. Call ServeModel from the runtime's ClientOptions::on_model.
absl::StatusOr<std::shared_ptr<ClientServing>> StartClientServing(const ServeArgs& args,
                                                                 const client::torch::ModelSpec& spec,
                                                                 const client::Dataset& data);

// Swaps `model` in (logged; a model that cannot be served is logged and the previous one kept).
void ServeModel(ClientServing& serving, const core::ModelWeights& model, core::ModelVersion version,
                core::RoundNumber round, const core::Metrics& metrics);

}  // namespace tessera::cli
