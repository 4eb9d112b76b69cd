#include "coordinator/grpc/coordinator_service.h"

#include <atomic>

#include "core/chunking.h"
#include "core/file_io.h"
#include "core/logging.h"
#include "core/proto_convert.h"
#include "core/status.h"
#include "core/strings.h"
#include "security/secagg/wire.h"

namespace tessera::coordinator {

using core::StrCat;

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::StatusOr<UploadLimits> ResolveUploadLimits(const ServiceOptions& options, uint64_t model_bytes) {
  UploadLimits limits = options.uploads;
  const uint64_t largest = model_bytes + options.upload_slack_bytes;
  if (limits.max_concurrent < 1 || options.max_concurrent_downloads < 1) {
    return absl::InvalidArgumentError("the caps on concurrent uploads and downloads must be at least 1");
  }
  if (limits.memory_bytes == 0) limits.memory_bytes = (static_cast<uint64_t>(limits.max_concurrent) + 8) * largest;
  if (limits.memory_bytes < largest) {
    return absl::InvalidArgumentError(StrCat("the upload memory cap of ", limits.memory_bytes,
                                             " bytes cannot hold one upload of the model (", largest, " bytes)"));
  }
  return limits;
}

CoordinatorService::CoordinatorService(Coordinator* coordinator, ServiceOptions options)
    : coordinator_(coordinator),
      options_(options),
      uploads_(options.uploads, core::RealClock::Get()),
      downloads_("downloads", options.max_concurrent_downloads, options.uploads.hints, core::RealClock::Get()) {}

absl::StatusOr<core::ClientId> CoordinatorService::PeerClientId(const grpc::CallbackServerContext& ctx,
                                                                 const std::string& claimed) {
  if (claimed.empty()) return absl::InvalidArgumentError("client_id is required");
  auto auth = ctx.auth_context();
  if (auth && auth->IsPeerAuthenticated()) {
    const auto identities = auth->GetPeerIdentity();
    for (const auto& identity : identities) {
      if (std::string(identity.data(), identity.size()) == claimed) return core::ClientId{claimed};
    }
    // Logged by the certificate's name (issued by the federation's CA), not by the claimed id,
    // which is the peer's free text.
    core::Logger("coordinator")
        ->warn("refused a request: the peer certified as '{}' claimed another client_id",
               identities.empty() ? std::string("?") : std::string(identities[0].data(), identities[0].size()));
    return absl::PermissionDeniedError(StrCat("client_id '", claimed, "' does not match the peer certificate"));
  }
  return core::ClientId{claimed};
}

grpc::ServerUnaryReactor* CoordinatorService::Register(grpc::CallbackServerContext* ctx,
                                                       const v1::RegisterRequest* req, v1::RegisterResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = PeerClientId(*ctx, req->client_id());
  if (!id.ok()) {
    reactor->Finish(ToGrpcStatus(id.status()));
    return reactor;
  }
  std::map<std::string, std::string> props(req->properties().begin(), req->properties().end());
  auto reply = coordinator_->Register(*id, std::move(props));
  if (reply.ok()) {
    resp->set_run_id(reply->run_id);
    resp->set_heartbeat_interval_ms(absl::ToInt64Milliseconds(reply->heartbeat_interval));
  }
  reactor->Finish(ToGrpcStatus(reply.status()));
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::Heartbeat(grpc::CallbackServerContext* ctx,
                                                        const v1::HeartbeatRequest* req, v1::HeartbeatResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = PeerClientId(*ctx, req->client_id());
  absl::Status s = id.ok() ? coordinator_->Heartbeat(*id) : id.status();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::PullTask(grpc::CallbackServerContext* ctx,
                                                       const v1::PullTaskRequest* req, v1::PullTaskResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = PeerClientId(*ctx, req->client_id());
  if (!id.ok()) {
    reactor->Finish(ToGrpcStatus(id.status()));
    return reactor;
  }
  // Answer a little before the caller's own deadline so that the reply is not lost to it.
  absl::Duration wait = absl::Milliseconds(req->max_wait_ms());
  const auto client_deadline = absl::FromChrono(ctx->deadline());
  if (client_deadline != absl::InfiniteFuture()) {
    wait = std::min(wait, client_deadline - absl::Now() - absl::Milliseconds(300) /* tick + margin */);
  }
  coordinator_->PullTask(*id, wait, [reactor, resp](absl::StatusOr<core::PullTaskReply> reply) {
    if (reply.ok()) {
      if (reply->task) core::ToProto(*reply->task, resp->mutable_task());
      resp->set_run_finished(reply->run_finished);
      resp->set_retry_after_ms(absl::ToInt64Milliseconds(reply->retry_after));
    }
    reactor->Finish(ToGrpcStatus(reply.status()));
  });
  return reactor;
}

namespace {

// A shed call's hint to the client (tessera.proto, UploadResult).
void AddRetryAfter(grpc::CallbackServerContext& ctx, absl::Duration retry_after) {
  ctx.AddTrailingMetadata(core::kRetryAfterMetadata, std::to_string(absl::ToInt64Milliseconds(retry_after)));
}

// Streams the model from `offset`; holds a place in `gate` until done, and is watched by
// `stalls` meanwhile.
class DownloadReactor final : public grpc::ServerWriteReactor<v1::ModelChunk> {
 public:
  DownloadReactor(grpc::CallbackServerContext* ctx, std::shared_ptr<const ModelBlob> blob, uint64_t offset,
                  size_t chunk_bytes, StreamGate* gate, StallWatch* stalls)
      : blob_(std::move(blob)),
        offset_(offset),
        chunk_bytes_(chunk_bytes),
        gate_(gate),
        stalls_(stalls),
        progress_(ctx),
        started_(absl::Now()) {
    stalls_->Add(&progress_);
    NextWrite();
  }
  void OnWriteDone(bool ok) override {
    progress_.Touch();
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "download stream broken"));
      return;
    }
    NextWrite();
  }
  void OnDone() override {
    stalls_->Remove(&progress_);
    gate_->Leave(complete_ ? absl::Now() - started_ : absl::ZeroDuration());
    delete this;
  }

 private:
  void NextWrite() {
    const uint64_t total = blob_->serialized.size();
    if (offset_ >= total && (offset_ > 0 || sent_any_)) {
      complete_ = true;
      Finish(grpc::Status::OK);
      return;
    }
    const uint64_t n = std::min<uint64_t>(chunk_bytes_, total - offset_);
    chunk_.set_offset(offset_);
    chunk_.set_data(blob_->serialized.data() + offset_, n);
    chunk_.set_total_bytes(total);
    if (!sent_any_) chunk_.set_sha256(blob_->sha256); else chunk_.clear_sha256();
    offset_ += n;
    sent_any_ = true;
    StartWrite(&chunk_);
  }

  std::shared_ptr<const ModelBlob> blob_;
  uint64_t offset_;
  size_t chunk_bytes_;
  StreamGate* gate_;
  StallWatch* stalls_;
  StallWatch::Entry progress_;
  absl::Time started_;
  bool sent_any_ = false;
  bool complete_ = false;
  v1::ModelChunk chunk_;
};

grpc::ServerWriteReactor<v1::ModelChunk>* FailedDownload(const absl::Status& s) {
  class Failed final : public grpc::ServerWriteReactor<v1::ModelChunk> {
   public:
    explicit Failed(const absl::Status& s) { Finish(ToGrpcStatus(s)); }
    void OnDone() override { delete this; }
  };
  return new Failed(s);
}

}  // namespace

grpc::ServerWriteReactor<v1::ModelChunk>* CoordinatorService::DownloadModel(grpc::CallbackServerContext* ctx,
                                                                            const v1::DownloadModelRequest* req) {
  auto id = PeerClientId(*ctx, req->client_id());
  if (!id.ok()) return FailedDownload(id.status());
  auto blob = coordinator_->ModelForTask(*id, core::FromProto(req->ref()));
  if (!blob.ok()) return FailedDownload(blob.status());
  if (req->offset() > (*blob)->serialized.size()) {
    return FailedDownload(absl::OutOfRangeError("download offset beyond the end of the model"));
  }
  absl::Duration retry_after;
  if (absl::Status in = downloads_.Enter(*id, &retry_after); !in.ok()) {
    AddRetryAfter(*ctx, retry_after);
    return FailedDownload(in);
  }
  return new DownloadReactor(ctx, *std::move(blob), req->offset(), options_.chunk_bytes, &downloads_, &stalls_);
}

// Reads a header, then the serialized model in order (from the header's offset: the bytes before
// it come from the partial upload the service kept); submits the result when the stream ends. A
// stream that ends short is kept as a partial upload for a resume.
class CoordinatorService::UploadReactor final : public grpc::ServerReadReactor<v1::UploadChunk> {
 public:
  UploadReactor(CoordinatorService* service, grpc::CallbackServerContext* ctx, v1::UploadResponse* resp)
      : service_(service), ctx_(ctx), resp_(resp) {
    StartRead(&msg_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Complete();
      return;
    }
    absl::Status s = header_seen_ ? OnData() : OnHeader();
    if (!s.ok()) {
      Fail(s);
      return;
    }
    StartRead(&msg_);
  }
  void OnDone() override {
    Settle({}, absl::ZeroDuration());  // normally settled before Finish
    delete this;
  }

 private:
  absl::Status OnHeader() {
    if (msg_.part_case() != v1::UploadChunk::kHeader) {
      return absl::InvalidArgumentError("an upload must start with its header");
    }
    header_seen_ = true;
    header_ = std::move(*msg_.mutable_header());
    auto id = PeerClientId(*ctx_, header_.client_id());
    if (!id.ok()) return id.status();
    client_ = *id;
    const uint64_t limit =
        service_->coordinator_->global_model()->serialized.size() + service_->options_.upload_slack_bytes;
    TESSERA_RETURN_IF_ERROR(core::ChunkAssembler::CheckDeclared(header_.total_bytes(), header_.sha256(), limit));
    key_ = UploadKey{header_.ref().task_id(), header_.total_bytes(), header_.sha256()};
    absl::Duration retry_after;
    auto held = service_->uploads_.Admit(client_, key_, header_.offset(), &retry_after);
    if (absl::IsUnavailable(held.status())) AddRetryAfter(*ctx_, retry_after);
    if (!held.ok()) return held.status();
    admitted_ = true;
    started_ = absl::Now();
    service_->stalls_.Add(&progress_);
    StartSendInitialMetadata();  // "admitted": the client sends its bytes only after this
    TESSERA_ASSIGN_OR_RETURN(auto assembler, core::ChunkAssembler::Resume(header_.total_bytes(), header_.sha256(),
                                                                         limit, *std::move(held)));
    assembler_.emplace(std::move(assembler));
    return absl::OkStatus();
  }
  absl::Status OnData() {
    progress_.Touch();
    if (msg_.part_case() != v1::UploadChunk::kData) return absl::InvalidArgumentError("a second upload header");
    return assembler_->Append(msg_.data());
  }
  void Complete() {
    if (!header_seen_) {
      Fail(absl::InvalidArgumentError("empty upload"));
      return;
    }
    if (assembler_->received() < assembler_->total()) {
      // Broken off (or cut short): keep what arrived, so that the client resumes from there.
      const uint64_t received = assembler_->received();
      Settle(std::move(*assembler_).TakeReceived(), absl::ZeroDuration());
      Fail(absl::DataLossError(StrCat("transfer truncated: ", received, " of ", key_.total_bytes,
                                      " bytes (kept: resume from there)")));
      return;
    }
    auto blob = std::move(*assembler_).Finish();
    assembler_.reset();
    if (!blob.ok()) {
      Fail(blob.status());
      return;
    }
    auto weights = core::ParseModel(*blob);
    blob->clear();
    if (!weights.ok()) {
      Fail(weights.status());
      return;
    }
    core::TrainResult result;
    result.ref = core::FromProto(header_.ref());
    result.num_examples = header_.num_examples();
    result.metrics.insert(header_.metrics().begin(), header_.metrics().end());
    result.weights = *std::move(weights);
    auto ack = service_->coordinator_->SubmitResult(client_, std::move(result));
    Settle({}, absl::Now() - started_);
    if (!ack.ok()) {
      Fail(ack.status());
      return;
    }
    resp_->set_duplicate(ack->duplicate);
    resp_->set_accepted_round(ack->accepted_round);
    Finish(grpc::Status::OK);
  }
  // Gives the stream's reservation back (once), keeping `partial` for a resume when non-empty.
  void Settle(std::string partial, absl::Duration took) {
    if (!admitted_) return;
    admitted_ = false;
    service_->stalls_.Remove(&progress_);
    service_->uploads_.Release(client_, key_, std::move(partial), took);
  }
  void Fail(const absl::Status& s) {
    Settle({}, absl::ZeroDuration());
    if (absl::IsUnavailable(s)) {
      core::Logger("coordinator")->debug("upload from '{}' shed: {}", client_.value, std::string(s.message()));
    } else {
      core::Logger("coordinator")->warn("upload from '{}' refused: {}", client_.value, std::string(s.message()));
    }
    Finish(ToGrpcStatus(s));
  }

  CoordinatorService* service_;
  grpc::CallbackServerContext* ctx_;
  v1::UploadResponse* resp_;
  v1::UploadChunk msg_;
  StallWatch::Entry progress_{ctx_};
  bool header_seen_ = false;
  bool admitted_ = false;
  absl::Time started_;
  v1::UploadHeader header_;
  core::ClientId client_;
  UploadKey key_;
  std::optional<core::ChunkAssembler> assembler_;
};

grpc::ServerReadReactor<v1::UploadChunk>* CoordinatorService::UploadResult(grpc::CallbackServerContext* ctx,
                                                                          v1::UploadResponse* resp) {
  return new UploadReactor(this, ctx, resp);
}

void StallWatch::Add(Entry* e) {
  std::lock_guard lock(mu_);
  live_.insert(e);
}

void StallWatch::Remove(Entry* e) {
  std::lock_guard lock(mu_);
  live_.erase(e);
}

void StallWatch::CancelIdleSince(absl::Time cutoff) {
  std::lock_guard lock(mu_);
  const std::set<Entry*> live = live_;
  for (Entry* e : live) {
    // Still registered (not removed by an earlier cancellation's inline reactions): alive.
    if (live_.contains(e) && absl::FromUnixMillis(e->last_ms.load(std::memory_order_relaxed)) < cutoff) {
      e->ctx->TryCancel();
    }
  }
}

grpc::ServerUnaryReactor* CoordinatorService::QueryUpload(grpc::CallbackServerContext* ctx,
                                                          const v1::QueryUploadRequest* req,
                                                          v1::QueryUploadResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = PeerClientId(*ctx, req->client_id());
  if (id.ok()) resp->set_received(uploads_.Held(*id, UploadKey{req->ref().task_id(), req->total_bytes(), req->sha256()}));
  reactor->Finish(ToGrpcStatus(id.status()));
  return reactor;
}

// Reads a SecAgg+ stage request (header, then chunks), hands it to the coordinator and answers
// when the coordinator calls back (the stage closed, or the wait ran out).
class CoordinatorService::SecAggReactor final : public grpc::ServerReadReactor<v1::SecAggChunk> {
 public:
  SecAggReactor(CoordinatorService* service, grpc::CallbackServerContext* ctx, v1::SecAggStepResponse* resp)
      : service_(service), ctx_(ctx), resp_(resp) {
    StartRead(&msg_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Complete();
      return;
    }
    absl::Status s;
    if (!header_seen_) {
      if (msg_.part_case() != v1::SecAggChunk::kHeader) {
        s = absl::InvalidArgumentError("a secure aggregation message must start with its header");
      } else {
        header_seen_ = true;
        header_ = std::move(*msg_.mutable_header());
        auto id = PeerClientId(*ctx_, header_.client_id());
        s = id.status();
        if (id.ok()) {
          client_ = *id;
          // A masked input is the largest message: one uint64 per model float, plus framing.
          const uint64_t limit = 2 * service_->coordinator_->global_model()->serialized.size() +
                                 service_->options_.upload_slack_bytes;
          auto assembler = core::ChunkAssembler::Begin(header_.total_bytes(), header_.sha256(), limit);
          s = assembler.status();
          if (assembler.ok()) assembler_.emplace(*std::move(assembler));
        }
      }
    } else if (msg_.part_case() != v1::SecAggChunk::kData) {
      s = absl::InvalidArgumentError("a second header in one secure aggregation message");
    } else {
      s = assembler_->Append(msg_.data());
    }
    if (!s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    StartRead(&msg_);
  }
  void OnDone() override { delete this; }

 private:
  void Complete() {
    if (!header_seen_) {
      Finish(ToGrpcStatus(absl::InvalidArgumentError("empty secure aggregation message")));
      return;
    }
    auto blob = std::move(*assembler_).Finish();
    if (!blob.ok()) {
      Finish(ToGrpcStatus(blob.status()));
      return;
    }
    auto request = security::secagg::ParseRequest(*blob);
    if (!request.ok()) {
      Finish(ToGrpcStatus(request.status()));
      return;
    }
    absl::Duration wait = absl::Milliseconds(header_.max_wait_ms());
    const auto client_deadline = absl::FromChrono(ctx_->deadline());
    if (client_deadline != absl::InfiniteFuture()) {
      wait = std::min(wait, client_deadline - absl::Now() - absl::Milliseconds(300) /* tick + margin */);
    }
    service_->coordinator_->SecAggStep(client_, core::FromProto(header_.ref()), *request, wait,
                                       [this](absl::StatusOr<security::secagg::StageReply> reply) {
                                         if (reply.ok()) resp_->set_reply(security::secagg::SerializeReply(*reply));
                                         Finish(ToGrpcStatus(reply.status()));
                                       });
  }

  CoordinatorService* service_;
  grpc::CallbackServerContext* ctx_;
  v1::SecAggStepResponse* resp_;
  v1::SecAggChunk msg_;
  bool header_seen_ = false;
  v1::SecAggHeader header_;
  core::ClientId client_;
  std::optional<core::ChunkAssembler> assembler_;
};

grpc::ServerReadReactor<v1::SecAggChunk>* CoordinatorService::SecAggStep(grpc::CallbackServerContext* ctx,
                                                                        v1::SecAggStepResponse* resp) {
  return new SecAggReactor(this, ctx, resp);
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(Coordinator* coordinator,
                                                                            const std::string& address,
                                                                            const ServerTlsOptions& tls,
                                                                            ServiceOptions options) {
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (tls.insecure) {
    creds = grpc::InsecureServerCredentials();
  } else {
    if (tls.cert_file.empty() || tls.key_file.empty()) {
      return absl::InvalidArgumentError(
          "TLS is the default: give a certificate and key (--tls-cert, --tls-key), or --insecure for local experiments");
    }
    grpc::SslServerCredentialsOptions ssl(tls.client_ca_file.empty()
                                              ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    auto cert = core::ReadFile(tls.cert_file);
    auto key = core::ReadFile(tls.key_file);
    if (!cert.ok()) return cert.status();
    if (!key.ok()) return key.status();
    pair.cert_chain = *cert;
    pair.private_key = *key;
    ssl.pem_key_cert_pairs.push_back(pair);
    if (!tls.client_ca_file.empty()) {
      auto ca = core::ReadFile(tls.client_ca_file);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    creds = grpc::SslServerCredentials(ssl);
  }
  TESSERA_ASSIGN_OR_RETURN(options.uploads,
                           ResolveUploadLimits(options, coordinator->global_model()->serialized.size()));
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->coordinator_ = coordinator;
  server->service_ = std::make_unique<CoordinatorService>(coordinator, options);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, creds, &server->port_);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.chunk_bytes + (1 << 20)));
  builder.SetMaxSendMessageSize(static_cast<int>(options.chunk_bytes + (1 << 20)));
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    return absl::UnavailableError(StrCat("cannot listen on ", address));
  }
  server->ticker_ = std::thread([s = server.get()] {
    std::unique_lock lock(s->mu_);
    while (!s->cv_.wait_for(lock, std::chrono::milliseconds(100), [s] { return s->stopping_; })) {
      lock.unlock();
      s->coordinator_->Tick();
      s->service_->CancelStalledTransfers();
      lock.lock();
    }
  });
  return server;
}

void CoordinatorServer::Shutdown() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  coordinator_->ReleaseWaiters();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace tessera::coordinator
