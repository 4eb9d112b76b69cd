#include "cli/client_serving.h"

#include <utility>

#include "client/serving/grpc/predictor_server.h"
#include "client/serving/http_server.h"
#include "client/serving/prediction_service.h"
#include "client/torch/torch_predictor.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::cli {

namespace serving = client::serving;

class ClientServing {
 public:
  client::torch::ModelSpec spec;
  std::unique_ptr<serving::PredictionService> service;
  std::unique_ptr<serving::HttpServer> http;       // may be null
  std::unique_ptr<serving::PredictorServer> grpc;  // may be null
};

void AddServeFlags(CLI::App* sub, ServeArgs* args) {
  sub->add_option("--serve", args->http,
                  "Serve predictions of this client's model over HTTP/JSON on host:port (POST /v1/predict, "
                  "GET /v1/model, GET /healthz)");
  sub->add_option("--serve-grpc", args->grpc, "Serve predictions over gRPC (tessera.v1.Predictor) on host:port");
  sub->add_option("--serve-max-batch", args->max_batch, "Most examples per prediction request")->capture_default_str();
}

absl::StatusOr<std::shared_ptr<ClientServing>> StartClientServing(const ServeArgs& args,
                                                                 const client::torch::ModelSpec& spec,
                                                                 const client::Dataset& data) {
  if (args.http.empty() && args.grpc.empty()) return nullptr;
  auto s = std::make_shared<ClientServing>();
  s->spec = spec;
  serving::ServingOptions options;
  options.num_features = data.example_numel();
  options.num_classes = data.num_classes;
  options.preprocessing = data.preprocessing;
  options.max_batch = args.max_batch;
  TESSERA_ASSIGN_OR_RETURN(s->service, serving::PredictionService::Create(options));
  auto log = core::Logger("serving");
  if (!args.http.empty()) {
    serving::HttpServerOptions http_options;
    http_options.class_labels = data.class_names;
    TESSERA_ASSIGN_OR_RETURN(s->http, serving::HttpServer::Start(s->service.get(), args.http, http_options));
    log->info("serving predictions over HTTP on {} (port {})", args.http, s->http->port());
  }
  if (!args.grpc.empty()) {
    TESSERA_ASSIGN_OR_RETURN(s->grpc, serving::PredictorServer::Start(s->service.get(), args.grpc));
    log->info("serving predictions over gRPC on {} (port {})", args.grpc, s->grpc->port());
  }
  return s;
}

void ServeModel(ClientServing& serving, const core::ModelWeights& model, core::ModelVersion version,
                core::RoundNumber round, const core::Metrics& metrics) {
  auto log = core::Logger("serving");
  auto snapshot = std::make_shared<serving::ModelSnapshot>();
  snapshot->version = version;
  snapshot->round = round;
  snapshot->metrics = metrics;
  snapshot->weights = std::make_shared<const core::ModelWeights>(model);
  auto predictor = client::torch::TorchPredictor::Create(serving.spec, model);
  absl::Status s = predictor.status();
  if (s.ok()) {
    snapshot->predictor = *std::move(predictor);
    s = serving.service->Swap(std::move(snapshot));
  }
  if (!s.ok()) {
    log->error("cannot serve the model of round {}: {}; still serving the previous one", round,
               std::string(s.message()));
    return;
  }
  log->info("serving the model of round {} (global version {})", round, version);
}

}  // namespace tessera::cli
