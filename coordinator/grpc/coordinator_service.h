// CoordinatorService: the gRPC face of a Coordinator (callback API). It only translates:
// proto -> core, call the Coordinator, absl::Status -> grpc::Status. No handler blocks: long
// polls complete from the coordinator's callback, downloads and uploads are reactors.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "coordinator/coordinator.h"
#include "coordinator/grpc/upload_buffers.h"
#include "tessera/v1/tessera.grpc.pb.h"

namespace tessera::coordinator {

grpc::Status ToGrpcStatus(const absl::Status& status);

struct ServiceOptions {
  size_t chunk_bytes = size_t{1} << 20;
  // An upload may exceed the global model's serialized size by at most this much.
  uint64_t upload_slack_bytes = uint64_t{1} << 20;
  // Caps on concurrent upload streams and on bytes buffered for uploads (in flight and partial);
  // heartbeats, polls and registration do not count against them.
  UploadLimits uploads;
  // A download holds a chunk or two in gRPC's buffers while it streams: this many at once, the
  // others are refused like shed uploads (UNAVAILABLE, retry-after hint). Memory ~2 chunks each.
  int max_concurrent_downloads = 64;
  // An admitted upload or download that makes no progress for this long is cancelled (an
  // upload's bytes are kept for a resume): a stalled or malicious client cannot hold a place.
  absl::Duration stall_timeout = absl::Seconds(60);
};

// Transfers in progress, each with the time of its last progress, so that stalled ones can be
// cancelled. Thread-safe.
class StallWatch {
 public:
  // One transfer: its call and its last progress. Owned by the transfer's reactor.
  struct Entry {
    explicit Entry(grpc::CallbackServerContext* c) : ctx(c) { Touch(); }
    void Touch() { last_ms.store(absl::ToUnixMillis(absl::Now()), std::memory_order_relaxed); }
    grpc::CallbackServerContext* ctx;
    std::atomic<int64_t> last_ms{0};
  };
  // The reactor must Remove its entry before it is deleted.
  void Add(Entry* e);
  void Remove(Entry* e);
  // Cancels the calls of entries without progress since `cutoff`.
  void CancelIdleSince(absl::Time cutoff);

 private:
  // Recursive: a cancellation may run the reactor's reactions (which Remove) inline.
  std::recursive_mutex mu_;
  std::set<Entry*> live_;  // GUARDED_BY(mu_)
};

// The upload caps the service applies: options.uploads, where memory_bytes = 0 becomes room for
// max_concurrent streams plus 8 partial uploads of the largest accepted upload (the model's
// serialized size plus the slack). INVALID_ARGUMENT for max_concurrent (or downloads) < 1 or a
// memory cap that cannot hold one such upload (no upload could ever get in).
absl::StatusOr<UploadLimits> ResolveUploadLimits(const ServiceOptions& options, uint64_t model_bytes);

class CoordinatorService final : public v1::Coordinator::CallbackService {
 public:
  // `coordinator` is borrowed and must outlive the service. `options.uploads` must have passed
  // ResolveUploadLimits (CoordinatorServer::Start does it).
  CoordinatorService(Coordinator* coordinator, ServiceOptions options = {});

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx, const v1::RegisterRequest* req,
                                     v1::RegisterResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* PullTask(grpc::CallbackServerContext* ctx, const v1::PullTaskRequest* req,
                                     v1::PullTaskResponse* resp) override;
  grpc::ServerWriteReactor<v1::ModelChunk>* DownloadModel(grpc::CallbackServerContext* ctx,
                                                          const v1::DownloadModelRequest* req) override;
  grpc::ServerReadReactor<v1::UploadChunk>* UploadResult(grpc::CallbackServerContext* ctx,
                                                         v1::UploadResponse* resp) override;
  grpc::ServerReadReactor<v1::SecAggChunk>* SecAggStep(grpc::CallbackServerContext* ctx,
                                                       v1::SecAggStepResponse* resp) override;
  // Bytes held of an interrupted upload of the calling client (never another's).
  grpc::ServerUnaryReactor* QueryUpload(grpc::CallbackServerContext* ctx, const v1::QueryUploadRequest* req,
                                        v1::QueryUploadResponse* resp) override;

  UploadBuffers::Stats upload_stats() const { return uploads_.stats(); }
  // Cancels admitted transfers without progress for options.stall_timeout. Thread-safe;
  // CoordinatorServer's ticker calls it.
  void CancelStalledTransfers() { stalls_.CancelIdleSince(absl::Now() - options_.stall_timeout); }
  const StreamGate& download_gate() const { return downloads_; }

  // The id a request acts for: the claimed id, which under mutual TLS must equal the peer
  // certificate's identity (PERMISSION_DENIED otherwise).
  static absl::StatusOr<core::ClientId> PeerClientId(const grpc::CallbackServerContext& ctx,
                                                     const std::string& claimed);

 private:
  class UploadReactor;
  class SecAggReactor;
  Coordinator* coordinator_;
  ServiceOptions options_;
  UploadBuffers uploads_;
  StreamGate downloads_;
  StallWatch stalls_;
};

// TLS material for the server. With `insecure` no TLS at all (explicit opt-in only).
struct ServerTlsOptions {
  bool insecure = false;
  std::string cert_file;       // PEM
  std::string key_file;        // PEM
  std::string client_ca_file;  // PEM; when set, clients must present a certificate it signed
};

// A running gRPC server for a Coordinator, with a ticker thread. Shutdown releases pending polls.
class CoordinatorServer {
 public:
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(Coordinator* coordinator,
                                                                  const std::string& address,
                                                                  const ServerTlsOptions& tls,
                                                                  ServiceOptions options = {});
  ~CoordinatorServer();
  int port() const { return port_; }
  const CoordinatorService& service() const { return *service_; }
  void Shutdown();

 private:
  CoordinatorServer() = default;
  Coordinator* coordinator_ = nullptr;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread ticker_;
};

}  // namespace tessera::coordinator
