#include "client/serving/grpc/predictor_server.h"

#include <grpcpp/grpcpp.h>

#include <cstring>
#include <vector>

#include "client/serving/listen_address.h"
#include "core/strings.h"
#include "tessera/v1/tessera.grpc.pb.h"

namespace tessera::client::serving {

class PredictorGrpcService final : public v1::Predictor::CallbackService {
 public:
  explicit PredictorGrpcService(const PredictionService* service) : service_(service) {}

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* ctx, const v1::PredictRequest* req,
                                    v1::PredictResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(Answer(*req, resp));
    return reactor;
  }

 private:
  grpc::Status Answer(const v1::PredictRequest& req, v1::PredictResponse* resp) const {
    const int64_t features = service_->options().num_features;
    if (req.features() != features) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          core::StrCat("the model takes ", features, " features per example, the request has ",
                                       req.features()));
    }
    // Sizes in bytes first, so that a huge batch cannot overflow or allocate.
    const std::string& bytes = req.inputs();
    if (req.batch() < 1 || req.batch() > service_->options().max_batch ||
        bytes.size() != static_cast<size_t>(req.batch() * features) * sizeof(float)) {
      if (req.batch() >= 1 && req.batch() <= service_->options().max_batch) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            core::StrCat("inputs hold ", bytes.size(), " bytes; ", req.batch(), " x ", features,
                                         " float32 values take ", req.batch() * features * 4));
      }
      return ToGrpc(service_->Predict({}, req.batch()).status());  // the service's message for the batch
    }
    std::vector<float> values(bytes.size() / sizeof(float));
    std::memcpy(values.data(), bytes.data(), bytes.size());  // little-endian hosts only (as the wire format)
    auto prediction = service_->Predict(values, req.batch());
    if (!prediction.ok()) return ToGrpc(prediction.status());
    resp->set_model_version(prediction->model->version);
    resp->set_round(prediction->model->round);
    resp->set_num_classes(prediction->num_classes);
    resp->set_logits(reinterpret_cast<const char*>(prediction->logits.data()),
                     prediction->logits.size() * sizeof(float));
    resp->mutable_classes()->Add(prediction->classes.begin(), prediction->classes.end());
    return grpc::Status::OK;
  }

  static grpc::Status ToGrpc(const absl::Status& s) {
    return s.ok() ? grpc::Status::OK
                  : grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
  }

  const PredictionService* service_;
};

absl::StatusOr<std::unique_ptr<PredictorServer>> PredictorServer::Start(const PredictionService* service,
                                                                        const std::string& address) {
  if (absl::Status s = ProbeListen(address); !s.ok()) return s;
  std::unique_ptr<PredictorServer> self(new PredictorServer());
  self->grpc_service_ = std::make_unique<PredictorGrpcService>(service);
  const ServingOptions& o = service->options();
  grpc::ServerBuilder builder;
  // Without this a second server could share a port another one listens on.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &self->port_);
  builder.RegisterService(self->grpc_service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(o.max_batch * o.num_features * sizeof(float) + 4096));
  self->server_ = builder.BuildAndStart();
  if (!self->server_ || self->port_ == 0) {
    return absl::UnavailableError(core::StrCat("cannot listen on ", address, " (taken, or not a local address)"));
  }
  return self;
}

PredictorServer::~PredictorServer() { Shutdown(); }

void PredictorServer::Shutdown() {
  if (server_) {
    server_->Shutdown();
    server_->Wait();
    server_.reset();
  }
}

}  // namespace tessera::client::serving
