#include "client/grpc/grpc_channel.h"

#include <random>
#include <thread>

#include "core/chunking.h"
#include "core/file_io.h"
#include "core/logging.h"
#include "core/proto_convert.h"
#include "core/sha256.h"
#include "core/strings.h"
#include "absl/strings/numbers.h"
#include "security/secagg/wire.h"

namespace tessera::client {
namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace

absl::Status StatusFromCall(const grpc::Status& s, const grpc::ClientContext& ctx) {
  absl::Status status = FromGrpc(s);
  if (status.ok()) return status;
  const auto& trailers = ctx.GetServerTrailingMetadata();
  if (auto it = trailers.find(core::kRetryAfterMetadata); it != trailers.end()) {
    const std::string text(it->second.data(), it->second.size());
    int64_t ms = 0;
    if (absl::SimpleAtoi(text, &ms) && ms >= 0) status = WithRetryAfter(std::move(status), absl::Milliseconds(ms));
  }
  return status;
}

namespace {

void SetDeadline(grpc::ClientContext& ctx, absl::Duration timeout) {
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// Streams `header`, then `blob` from byte `from` on in chunks of at most `chunk_bytes` (in the
// `data` field of the reused `chunk` message), and returns the call's status (with its
// retry-after hint). With `await_admission`, sends the bytes only once the server answered the
// header with its initial metadata (a refused upload then costs no bytes). Stops writing once
// the stream breaks.
template <typename Writer, typename Chunk>
absl::Status WriteChunked(grpc::ClientContext& ctx, Writer& writer, const Chunk& header, const std::string& blob,
                          uint64_t from, size_t chunk_bytes, Chunk& chunk, bool await_admission) {
  bool ok = writer.Write(header);
  if (ok && await_admission) writer.WaitForInitialMetadata();
  for (const auto& range : core::SplitIntoChunks(blob.size() - from, chunk_bytes)) {
    if (!ok) break;
    chunk.set_data(blob.data() + from + range.offset, range.size);
    ok = writer.Write(chunk);
  }
  writer.WritesDone();
  return StatusFromCall(writer.Finish(), ctx);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcCoordinatorChannel>> GrpcCoordinatorChannel::Create(const std::string& target,
                                                                                      const ChannelTlsOptions& tls,
                                                                                      ChannelOptions options) {
  if (target.empty()) return absl::InvalidArgumentError("coordinator address is empty");
  std::shared_ptr<grpc::ChannelCredentials> creds;
  grpc::ChannelArguments args;
  if (tls.insecure) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    if (!tls.ca_file.empty()) {
      auto ca = core::ReadFile(tls.ca_file);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (!tls.cert_file.empty() || !tls.key_file.empty()) {
      auto cert = core::ReadFile(tls.cert_file);
      auto key = core::ReadFile(tls.key_file);
      if (!cert.ok()) return cert.status();
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(ssl);
    if (!tls.server_name_override.empty()) args.SetSslTargetNameOverride(tls.server_name_override);
  }
  args.SetMaxReceiveMessageSize(static_cast<int>(options.chunk_bytes + (1 << 20)));
  args.SetMaxSendMessageSize(static_cast<int>(options.chunk_bytes + (1 << 20)));
  auto channel = grpc::CreateCustomChannel(target, creds, args);
  return std::unique_ptr<GrpcCoordinatorChannel>(new GrpcCoordinatorChannel(std::move(channel), options, target));
}

GrpcCoordinatorChannel::GrpcCoordinatorChannel(std::shared_ptr<grpc::Channel> channel, ChannelOptions options,
                                               std::string target)
    : channel_(std::move(channel)),
      stub_(v1::Coordinator::NewStub(channel_)),
      options_(options),
      target_(std::move(target)) {}

absl::Status GrpcCoordinatorChannel::WithRetry(const char* what, const std::function<absl::Status()>& attempt) {
  Backoff backoff(options_.retry, std::random_device{}());
  for (;;) {
    absl::Status s = attempt();
    if (s.ok() || !IsRetryable(s)) return s;
    absl::Duration delay = backoff.NextFor(s);  // a shed call waits as the coordinator asked
    if (delay == absl::InfiniteDuration()) {
      return absl::Status(s.code(), core::StrCat(what, " to ", target_, " failed after ", backoff.attempts(),
                                                 " attempts and ", backoff.sheds(), " load-shedding waits: ",
                                                 s.message()));
    }
    core::Logger("client")->debug("{} failed ({}); retrying in {}", what, std::string(s.message()),
                                  absl::FormatDuration(delay));
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(delay));
  }
}

absl::StatusOr<core::RegisterReply> GrpcCoordinatorChannel::Register(
    const core::ClientId& client, const std::map<std::string, std::string>& properties) {
  v1::RegisterRequest req;
  req.set_client_id(client.value);
  req.mutable_properties()->insert(properties.begin(), properties.end());
  v1::RegisterResponse resp;
  absl::Status s = WithRetry("Register", [&] {
    grpc::ClientContext ctx;
    SetDeadline(ctx, options_.rpc_timeout);
    ctx.set_wait_for_ready(false);
    return FromGrpc(stub_->Register(&ctx, req, &resp));
  });
  if (!s.ok()) return s;
  return core::RegisterReply{resp.run_id(), absl::Milliseconds(resp.heartbeat_interval_ms())};
}

absl::Status GrpcCoordinatorChannel::Heartbeat(const core::ClientId& client) {
  v1::HeartbeatRequest req;
  req.set_client_id(client.value);
  v1::HeartbeatResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.rpc_timeout);
  return FromGrpc(stub_->Heartbeat(&ctx, req, &resp));  // the next beat is the retry
}

absl::StatusOr<core::PullTaskReply> GrpcCoordinatorChannel::PullTask(const core::ClientId& client,
                                                                     absl::Duration max_wait) {
  v1::PullTaskRequest req;
  req.set_client_id(client.value);
  req.set_max_wait_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(max_wait)));
  v1::PullTaskResponse resp;
  absl::Status s = WithRetry("PullTask", [&] {
    grpc::ClientContext ctx;
    SetDeadline(ctx, max_wait + options_.rpc_timeout);
    return FromGrpc(stub_->PullTask(&ctx, req, &resp));
  });
  if (!s.ok()) return s;
  core::PullTaskReply reply;
  if (resp.has_task()) reply.task = core::FromProto(resp.task());
  reply.run_finished = resp.run_finished();
  reply.retry_after = absl::Milliseconds(resp.retry_after_ms());
  return reply;
}

absl::StatusOr<core::ModelWeights> GrpcCoordinatorChannel::DownloadModel(const core::ClientId& client,
                                                                         const core::TrainTask& task) {
  auto assembler = core::ChunkAssembler::Begin(task.model_bytes, task.model_sha256, options_.max_model_bytes);
  if (!assembler.ok()) return assembler.status();
  absl::Status s = WithRetry("DownloadModel", [&]() -> absl::Status {
    v1::DownloadModelRequest req;
    req.set_client_id(client.value);
    core::ToProto(task.ref, req.mutable_ref());
    req.set_offset(assembler->received());  // resume where the last attempt stopped
    grpc::ClientContext ctx;
    SetDeadline(ctx, options_.transfer_timeout);
    auto reader = stub_->DownloadModel(&ctx, req);
    v1::ModelChunk chunk;
    while (reader->Read(&chunk)) {
      if (chunk.total_bytes() != task.model_bytes) {
        ctx.TryCancel();
        reader->Finish().ok();
        return absl::DataLossError("model size differs from the task's");
      }
      if (absl::Status a = assembler->Add(chunk.offset(), chunk.data()); !a.ok()) {
        ctx.TryCancel();
        reader->Finish().ok();
        return a;
      }
    }
    return StatusFromCall(reader->Finish(), ctx);  // a shed download comes back after the hint
  });
  if (!s.ok()) return s;
  auto blob = std::move(*assembler).Finish();
  if (!blob.ok()) return blob.status();
  return core::ParseModel(*blob);
}

absl::StatusOr<core::UploadAck> GrpcCoordinatorChannel::UploadResult(const core::ClientId& client,
                                                                     const core::TrainResult& result) {
  const std::string blob = core::SerializeModel(result.weights);
  v1::UploadChunk header;
  auto* h = header.mutable_header();
  h->set_client_id(client.value);
  core::ToProto(result.ref, h->mutable_ref());
  h->set_num_examples(result.num_examples);
  h->mutable_metrics()->insert(result.metrics.begin(), result.metrics.end());
  h->set_total_bytes(blob.size());
  h->set_sha256(core::Sha256Digest(blob));
  v1::UploadResponse resp;
  v1::UploadChunk chunk;
  bool sent_bytes = false;  // an earlier attempt may have left bytes with the coordinator
  absl::Status s = WithRetry("UploadResult", [&]() -> absl::Status {
    // A retry resumes from the bytes the coordinator kept of a broken attempt (an attempt shed
    // at its header sent none: no need to ask).
    uint64_t offset = 0;
    if (sent_bytes) {
      auto held = HeldOfUpload(*h);
      if (!held.ok()) return held.status();
      offset = *held;
    }
    h->set_offset(offset);
    grpc::ClientContext ctx;
    SetDeadline(ctx, options_.transfer_timeout);
    auto writer = stub_->UploadResult(&ctx, &resp);
    absl::Status st = WriteChunked(ctx, *writer, header, blob, offset, options_.chunk_bytes, chunk,
                                   /*await_admission=*/true);
    sent_bytes = sent_bytes || !RetryAfter(st).has_value();
    if (absl::IsOutOfRange(st) && offset > 0) {
      // The partial upload expired or was evicted since the query: the next attempt starts over.
      return absl::AbortedError(core::StrCat("the coordinator no longer holds the upload's first ", offset,
                                             " bytes: ", st.message()));
    }
    return st;
  });
  if (!s.ok()) return s;
  return core::UploadAck{resp.duplicate(), resp.accepted_round()};
}

absl::StatusOr<uint64_t> GrpcCoordinatorChannel::HeldOfUpload(const v1::UploadHeader& upload) {
  v1::QueryUploadRequest req;
  req.set_client_id(upload.client_id());
  *req.mutable_ref() = upload.ref();
  req.set_total_bytes(upload.total_bytes());
  req.set_sha256(upload.sha256());
  v1::QueryUploadResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.rpc_timeout);
  const grpc::Status s = stub_->QueryUpload(&ctx, req, &resp);
  if (s.error_code() == grpc::StatusCode::UNIMPLEMENTED) return 0;  // a coordinator that cannot resume
  if (!s.ok()) return FromGrpc(s);
  return std::min<uint64_t>(resp.received(), upload.total_bytes());
}

absl::StatusOr<security::secagg::StageReply> GrpcCoordinatorChannel::SecAggStep(
    const core::ClientId& client, const core::TrainTask& task, const security::secagg::StageRequest& request,
    absl::Duration max_wait) {
  const std::string blob = security::secagg::SerializeRequest(request);
  v1::SecAggChunk header;
  auto* h = header.mutable_header();
  h->set_client_id(client.value);
  core::ToProto(task.ref, h->mutable_ref());
  h->set_total_bytes(blob.size());
  h->set_sha256(core::Sha256Digest(blob));
  h->set_max_wait_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(max_wait)));
  v1::SecAggStepResponse resp;
  v1::SecAggChunk chunk;
  // The stage is idempotent on the coordinator: a retry after a broken stream re-sends it.
  absl::Status s = WithRetry("SecAggStep", [&]() -> absl::Status {
    grpc::ClientContext ctx;
    SetDeadline(ctx, max_wait + options_.transfer_timeout);
    auto writer = stub_->SecAggStep(&ctx, &resp);
    absl::Status st = WriteChunked(ctx, *writer, header, blob, 0, options_.chunk_bytes, chunk,
                                   /*await_admission=*/false);
    // "Stage still open" is the caller's to repeat (it paces it), not a transport failure.
    if (absl::IsUnavailable(st) && st.message().find("still open") != absl::string_view::npos) {
      return absl::FailedPreconditionError(std::string(st.message()));
    }
    return st;
  });
  if (absl::IsFailedPrecondition(s) && s.message().find("still open") != absl::string_view::npos) {
    return absl::UnavailableError(std::string(s.message()));
  }
  if (!s.ok()) return s;
  return security::secagg::ParseReply(resp.reply());
}

}  // namespace tessera::client
