// `tessera loadgen`: a load generator for the coordinator, on loopback only.
//
// It starts `tessera coordinator` (this binary) as a child process on 127.0.0.1, registers
// --clients virtual clients over a few shared channels (gRPC callback API: no thread per client),
// keeps them all heartbeating at the coordinator's interval, and lets one round run in which the
// --sampled clients download the model and upload a valid update (the global model plus small
// noise) all at once, more than the coordinator's --max-concurrent-uploads, so that load shedding
// is exercised. It reports clients held, the coordinator's peak RSS, heartbeat latency p50/p99,
// the round's time, uploads shed and retried, throughput next to a memcpy bandwidth measured in
// the same run, and whether the round completed; then stops the child with SIGTERM and checks
// its exit. Bounded: --clients <= 20000, --duration <= 1800 s.
//
// Exit 0 when the round completed, no client was lost and the coordinator exited cleanly; 1 when
// not; 2 for bad usage.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace tessera::cli {

struct LoadgenArgs {
  int clients = 10000;
  int sampled = 1000;
  std::string model = "cnn";
  double duration = 600;  // seconds, for everything
  int channels = 8;       // gRPC connections shared by the virtual clients
  int max_concurrent_uploads = 16;
  int upload_memory_mb = 0;
  std::string address = "127.0.0.1";  // where the child coordinator listens (loopback only)
  std::string output;                 // the child's --output and logs (default: a temp dir)
  std::string json;                   // also write the report here
  std::string log_level = "warn";
};

void AddLoadgen(CLI::App& app, LoadgenArgs* args);
// Runs the parsed `loadgen` subcommand; `self` is the path of this binary. Returns the exit code.
int RunLoadgen(CLI::App* sub, LoadgenArgs& args, const std::string& self);

}  // namespace tessera::cli
