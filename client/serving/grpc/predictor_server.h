// PredictorServer: the gRPC face of a PredictionService (tessera.v1.Predictor, plaintext; bind
// it to a local or trusted address). The handler only translates: PredictRequest -> floats,
// PredictionService::Predict, Prediction -> PredictResponse, absl::Status -> grpc::Status
// (same codes). Messages above the largest valid request are refused by gRPC with
// RESOURCE_EXHAUSTED before they reach the handler.
//
// Threads: the callback API's threads run the handlers concurrently; inference runs inline in
// the handler (one request is bounded by the service's max_batch).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/serving/prediction_service.h"

namespace grpc {
class Server;
}

namespace tessera::client::serving {

class PredictorGrpcService;  // the generated service's implementation, in the .cc

class PredictorServer {
 public:
  // Binds `address` ("host:port"; port 0 picks one, see port()) and serves `service`
  // (borrowed; it must outlive the server). INVALID_ARGUMENT for a malformed address;
  // UNAVAILABLE "cannot listen on ADDR: ..." when it cannot be bound, including a port another
  // server listens on (checked first with ProbeListen, and SO_REUSEPORT is off).
  static absl::StatusOr<std::unique_ptr<PredictorServer>> Start(const PredictionService* service,
                                                                const std::string& address);
  ~PredictorServer();  // Shutdown()
  PredictorServer(const PredictorServer&) = delete;
  PredictorServer& operator=(const PredictorServer&) = delete;

  // Stops accepting and waits for the running calls. Idempotent.
  void Shutdown();
  int port() const { return port_; }

 private:
  PredictorServer() = default;

  std::unique_ptr<PredictorGrpcService> grpc_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace tessera::client::serving
