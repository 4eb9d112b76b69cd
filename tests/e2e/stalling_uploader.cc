// stalling_uploader: a test-only client that dies mid-upload, deterministically.
//
//   stalling_uploader ADDRESS CLIENT_ID
//
// Registers (plaintext gRPC), long-polls for its task, downloads the global model, opens the
// UploadResult stream, sends the header and half of the bytes (the unchanged global model as its
// "trained" weights), prints the marker line "stalled mid-upload" and then blocks until it is
// killed. It never finishes the stream. It uses the raw stub, so whatever the real channel learns
// (resumed uploads, retries) does not change what it sends. Exits 1 on any failure before the
// marker, and by itself after 120 s so that it cannot outlive a broken test for long.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "core/sha256.h"
#include "tessera/v1/tessera.grpc.pb.h"

namespace {

using std::chrono::seconds;
using std::chrono::system_clock;

int Die(const std::string& what, const grpc::Status& s = grpc::Status::OK) {
  std::fprintf(stderr, "stalling_uploader: %s: %d %s\n", what.c_str(), static_cast<int>(s.error_code()),
               s.error_message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: stalling_uploader ADDRESS CLIENT_ID\n");
    return 2;
  }
  const std::string id = argv[2];
  auto stub = tessera::v1::Coordinator::NewStub(grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials()));
  const auto give_up = system_clock::now() + seconds(60);

  tessera::v1::RegisterRequest reg;
  reg.set_client_id(id);
  tessera::v1::RegisterResponse reg_resp;
  grpc::ClientContext reg_ctx;
  reg_ctx.set_deadline(system_clock::now() + seconds(10));
  reg_ctx.set_wait_for_ready(true);  // the coordinator may still be starting
  if (grpc::Status s = stub->Register(&reg_ctx, reg, &reg_resp); !s.ok()) return Die("Register", s);

  tessera::v1::TrainTask task;
  while (!task.has_ref()) {
    if (system_clock::now() > give_up) return Die("no task within 60 s");
    tessera::v1::PullTaskRequest pull;
    pull.set_client_id(id);
    pull.set_max_wait_ms(2000);
    tessera::v1::PullTaskResponse pull_resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(system_clock::now() + seconds(5));
    if (grpc::Status s = stub->PullTask(&ctx, pull, &pull_resp); !s.ok()) return Die("PullTask", s);
    if (pull_resp.run_finished()) return Die("the run finished before a task came");
    if (pull_resp.has_task()) task = pull_resp.task();
  }

  tessera::v1::DownloadModelRequest down;
  down.set_client_id(id);
  *down.mutable_ref() = task.ref();
  grpc::ClientContext down_ctx;
  down_ctx.set_deadline(system_clock::now() + seconds(30));
  auto reader = stub->DownloadModel(&down_ctx, down);
  std::string model;
  for (tessera::v1::ModelChunk chunk; reader->Read(&chunk);) model += chunk.data();
  if (grpc::Status s = reader->Finish(); !s.ok()) return Die("DownloadModel", s);
  if (model.size() != task.model_bytes() || model.size() < 2) return Die("short model download");

  tessera::v1::UploadChunk header;
  header.mutable_header()->set_client_id(id);
  *header.mutable_header()->mutable_ref() = task.ref();
  header.mutable_header()->set_num_examples(100);
  header.mutable_header()->set_total_bytes(model.size());
  header.mutable_header()->set_sha256(tessera::core::Sha256Digest(model));
  tessera::v1::UploadChunk half;
  half.set_data(model.substr(0, model.size() / 2));
  tessera::v1::UploadResponse up_resp;
  grpc::ClientContext up_ctx;  // no deadline: the stream stays open until the process dies
  auto writer = stub->UploadResult(&up_ctx, &up_resp);
  if (!writer->Write(header) || !writer->Write(half)) return Die("UploadResult", writer->Finish());

  std::printf("stalled mid-upload: %zu of %zu bytes sent for task %s\n", half.data().size(), model.size(),
              task.ref().task_id().c_str());
  std::fflush(stdout);
  std::this_thread::sleep_for(seconds(120));
  return Die("not killed within 120 s");
}
