// GrpcCoordinatorChannel: a CoordinatorChannel over gRPC, with a deadline on every RPC and
// retries with exponential backoff and jitter for transient failures. Downloads resume from the
// last byte received; uploads from the last byte the coordinator kept (QueryUpload). A call the
// coordinator sheds for load waits at least the retry-after time it named (plus jitter), and
// such waits do not count as attempts (RetryPolicy::max_shed_wait bounds them). Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "client/client_runtime.h"
#include "client/retry.h"
#include "tessera/v1/tessera.grpc.pb.h"

namespace tessera::client {

struct ChannelTlsOptions {
  bool insecure = false;
  std::string ca_file;    // PEM roots that signed the coordinator's certificate
  std::string cert_file;  // PEM client certificate (mutual TLS), optional
  std::string key_file;
  std::string server_name_override;  // when the address is not the certificate's name
};

struct ChannelOptions {
  absl::Duration rpc_timeout = absl::Seconds(30);
  absl::Duration transfer_timeout = absl::Minutes(10);  // download and upload streams
  size_t chunk_bytes = size_t{1} << 20;
  RetryPolicy retry;
  uint64_t max_model_bytes = uint64_t{1} << 31;
};

// A finished call's status as absl::Status, carrying the coordinator's retry-after hint (its
// trailing metadata, client/retry.h RetryAfter) when it sent one.
absl::Status StatusFromCall(const grpc::Status& status, const grpc::ClientContext& ctx);

class GrpcCoordinatorChannel final : public CoordinatorChannel {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcCoordinatorChannel>> Create(const std::string& target,
                                                                        const ChannelTlsOptions& tls,
                                                                        ChannelOptions options = {});

  absl::StatusOr<core::RegisterReply> Register(const core::ClientId& client,
                                               const std::map<std::string, std::string>& properties) override;
  absl::Status Heartbeat(const core::ClientId& client) override;
  absl::StatusOr<core::PullTaskReply> PullTask(const core::ClientId& client, absl::Duration max_wait) override;
  absl::StatusOr<core::ModelWeights> DownloadModel(const core::ClientId& client, const core::TrainTask& task) override;
  absl::StatusOr<core::UploadAck> UploadResult(const core::ClientId& client, const core::TrainResult& result) override;
  absl::StatusOr<security::secagg::StageReply> SecAggStep(const core::ClientId& client, const core::TrainTask& task,
                                                          const security::secagg::StageRequest& request,
                                                          absl::Duration max_wait) override;

 private:
  GrpcCoordinatorChannel(std::shared_ptr<grpc::Channel> channel, ChannelOptions options, std::string target);
  // Runs `attempt` until it succeeds, fails for good, or the policy's attempts run out.
  absl::Status WithRetry(const char* what, const std::function<absl::Status()>& attempt);
  // How many bytes of `upload` the coordinator holds for a resume (0 from one that cannot resume).
  absl::StatusOr<uint64_t> HeldOfUpload(const v1::UploadHeader& upload);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  ChannelOptions options_;
  std::string target_;
};

}  // namespace tessera::client
