// `tessera loadgen` (loadgen_command.h).
//
// Threads: the main thread drives the phases; one scheduler thread sends the heartbeats (a ring
// of clients ordered by their beat time) and runs delayed retries; gRPC's callback threads run
// every completion. LoadGenerator's state is guarded by mu_; a completion touches nothing of it
// after its final Finished() (the main thread may then destroy the generator).
#include "cli/loadgen_command.h"

#include <signal.h>
#include <stdlib.h>

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "client/grpc/grpc_channel.h"
#include "client/retry.h"
#include "core/file_io.h"
#include "core/proto_convert.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/subprocess.h"
#include "core/strings.h"
#include "tessera/v1/tessera.grpc.pb.h"

namespace tessera::cli {
namespace {

namespace fs = std::filesystem;
using core::StrCat;
using nlohmann::json;

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;
constexpr int kMaxClients = 20000;
constexpr double kMaxDurationSeconds = 1800;
constexpr int kRegisterWindow = 256;    // registrations in flight at once
constexpr int kUpdateVariants = 16;     // distinct noisy updates the sampled clients share
constexpr size_t kChunkBytes = size_t{1} << 20;

// ------------------------------------------------------------------------- the child coordinator

// A /proc/PID/status field in kB ("VmHWM": peak resident set), as bytes; 0 if unreadable.
uint64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  std::ifstream in(StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::strtoull(line.c_str() + field.size() + 1, nullptr, 10) << 10;
  }
  return 0;
}

// Single-thread memcpy bandwidth over 256 MiB (pages faulted in first), best of 3: the limit the
// upload and download throughputs are compared with.
double MemcpyGBps() {
  const size_t n = size_t{256} << 20;
  std::vector<char> a(n, 1), b(n, 2);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const absl::Time t0 = absl::Now();
    std::memcpy(b.data(), a.data(), n);
    const double s = absl::ToDoubleSeconds(absl::Now() - t0);
    best = std::max(best, static_cast<double>(n) / s / 1e9);
    a[rep] = b[n - 1 - rep];  // keep the copies observable
  }
  return best;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return std::nan("");
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

// ------------------------------------------------------------------------- the virtual clients

struct Variant {
  std::string blob;
  std::string sha256;
};

class LoadGenerator {
 public:
  LoadGenerator(const LoadgenArgs& args, const std::string& target, absl::Duration budget)
      : args_(args), budget_(budget), clients_(static_cast<size_t>(args.clients)) {
    // Control calls (register, heartbeat, poll) and transfers on connections of their own: a
    // device's heartbeat does not queue behind a hundred other devices' model bytes.
    for (int k = 0; k < 2 * args.channels; ++k) {
      grpc::ChannelArguments ch;
      ch.SetMaxReceiveMessageSize(static_cast<int>(kChunkBytes + (1 << 20)));
      ch.SetInt("tessera.loadgen.channel", k);  // a connection of its own, not a shared subchannel
      ch.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      auto stub = v1::Coordinator::NewStub(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), ch));
      (k < args.channels ? control_ : data_).push_back(std::move(stub));
    }
    client::RetryPolicy retry;
    retry.max_shed_wait = budget;
    for (size_t i = 0; i < clients_.size(); ++i) {
      clients_[i].id = StrCat("vc-", i);
      clients_[i].backoff = std::make_unique<client::Backoff>(retry, 1000 + i);
    }
  }
  ~LoadGenerator() { StopScheduler(); }

  // Registers every client, kRegisterWindow at a time. Returns how many registered.
  int RegisterAll(absl::Time deadline) {
    for (size_t i = 0; i < clients_.size(); ++i) {
      {
        std::unique_lock lock(mu_);
        if (!cv_.wait_until(lock, absl::ToChronoTime(deadline), [&] { return outstanding_ < kRegisterWindow; })) break;
        ++outstanding_;
      }
      auto* call = new Unary<v1::RegisterRequest, v1::RegisterResponse>(absl::Seconds(30));
      call->req.set_client_id(clients_[i].id);
      Stub(i)->async()->Register(&call->ctx, &call->req, &call->resp, [this, call](grpc::Status s) {
        {
          std::lock_guard lock(mu_);
          if (s.ok()) {
            ++registered_;
            heartbeat_interval_ = absl::Milliseconds(call->resp.heartbeat_interval_ms());
          } else {
            ++register_errors_;
          }
        }
        delete call;
        Finished();
      });
    }
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, absl::ToChronoTime(deadline), [&] { return outstanding_ == 0; });
    return registered_;
  }

  // Starts the heartbeats (spread evenly over one interval) and every client's long poll.
  void Start() {
    const absl::Time now = absl::Now();
    absl::Duration interval;
    {
      std::lock_guard lock(mu_);
      interval = heartbeat_interval_;
    }
    if (interval <= absl::ZeroDuration()) interval = absl::Seconds(5);
    for (size_t i = 0; i < clients_.size(); ++i) {
      clients_[i].next_beat = now + interval * (static_cast<double>(i) / static_cast<double>(clients_.size()));
    }
    scheduler_ = std::thread([this, interval] { Schedule(interval); });
    for (size_t i = 0; i < clients_.size(); ++i) Poll(i);
  }

  // Waits until every sampled client uploaded (or gave up) and a client heard the run finished,
  // calling `sample` about every `every` meanwhile; gives up when `sample` returns false.
  bool WaitRoundDone(absl::Time deadline, absl::Duration every, const std::function<bool()>& sample) {
    for (;;) {
      {
        std::unique_lock lock(mu_);
        const absl::Time until = std::min(deadline, absl::Now() + every);
        if (cv_.wait_until(lock, absl::ToChronoTime(until), [&] {
              return uploads_ok_ + uploads_failed_ >= args_.sampled && run_finished_seen_;
            })) {
          return true;
        }
      }
      if (absl::Now() >= deadline || !sample()) return false;
    }
  }
  // {seconds since the round started (negative before), downloads done, uploads done}.
  std::vector<double> Progress() const {
    std::lock_guard lock(mu_);
    const double t = tasks_ > 0 ? absl::ToDoubleSeconds(absl::Now() - round_start_) : -1;
    return {t, static_cast<double>(downloads_ok_), static_cast<double>(uploads_ok_)};
  }

  // No new call from now on; outcomes of calls still running are not counted.
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    StopScheduler();
  }

  // Waits until no call is outstanding; false after `timeout` (the generator must then be kept).
  bool WaitIdle(absl::Duration timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return outstanding_ == 0; });
  }

  json Report() const {
    std::lock_guard lock(mu_);
    const double round_s = round_end_ > round_start_ ? absl::ToDoubleSeconds(round_end_ - round_start_) : std::nan("");
    const double moved = static_cast<double>(downloads_ok_) * static_cast<double>(model_bytes_) +
                         static_cast<double>(uploads_ok_) * static_cast<double>(upload_bytes_);
    return json{
        {"clients", args_.clients},
        {"registered", registered_},
        {"register_errors", register_errors_},
        {"register_seconds", absl::ToDoubleSeconds(register_time_)},
        {"clients_lost", lost_.size()},
        {"heartbeats_ok", beats_idle_ms_.size() + beats_round_ms_.size()},
        {"heartbeat_errors", beat_errors_},
        {"heartbeats_before_round", beats_idle_ms_.size()},  // the round opens once all registered
        {"heartbeat_before_round_p50_ms", Percentile(beats_idle_ms_, 0.50)},
        {"heartbeat_round_p50_ms", Percentile(beats_round_ms_, 0.50)},
        {"heartbeat_round_p99_ms", Percentile(beats_round_ms_, 0.99)},
        {"heartbeats_during_round", beats_round_ms_.size()},
        {"poll_errors", poll_errors_},
        {"tasks", tasks_},
        {"downloads_ok", downloads_ok_},
        {"download_errors", download_errors_},
        {"downloads_shed", download_shed_},
        {"uploads_ok", uploads_ok_},
        {"uploads_failed", uploads_failed_},
        {"uploads_shed", shed_},
        {"upload_retries", retries_},
        {"model_bytes", model_bytes_},
        {"upload_bytes", upload_bytes_},
        {"round_seconds", round_s},
        {"transfer_gb_per_s", moved / round_s / 1e9},
        {"run_finished_seen", run_finished_seen_},
    };
  }
  void set_register_time(absl::Duration d) {
    std::lock_guard lock(mu_);
    register_time_ = d;
  }

 private:
  struct VClient {
    std::string id;
    absl::Time next_beat;  // the scheduler thread's alone
    core::TrainTask task;  // GUARDED_BY(mu_) from here on
    bool working = false;  // holds a task it has not uploaded yet
    std::unique_ptr<client::Backoff> backoff;
  };

  template <typename Req, typename Resp>
  struct Unary {
    explicit Unary(absl::Duration timeout) : started(absl::Now()) {
      ctx.set_deadline(absl::ToChronoTime(started + timeout));
    }
    grpc::ClientContext ctx;
    Req req;
    Resp resp;
    absl::Time started;
  };

  class Download;
  class Upload;

  v1::Coordinator::Stub* Stub(size_t i) const { return control_[i % control_.size()].get(); }
  v1::Coordinator::Stub* DataStub(size_t i) const { return data_[i % data_.size()].get(); }

  // Counts a new call; false when stopping (then the caller does not start it).
  bool Begin() {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    ++outstanding_;
    return true;
  }
  // The last thing a completion does.
  void Finished() {
    std::lock_guard lock(mu_);
    --outstanding_;
    cv_.notify_all();
  }

  void After(absl::Duration delay, std::function<void()> f) {
    std::lock_guard lock(mu_);
    if (!stopping_) timers_.emplace(absl::Now() + delay, std::move(f));
  }

  void Schedule(absl::Duration interval) {
    size_t next = 0;
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (scheduler_stop_) return;
      }
      const absl::Time now = absl::Now();
      for (size_t n = 0; n < clients_.size() && clients_[next].next_beat <= now; ++n) {
        Beat(next);
        clients_[next].next_beat += interval;
        next = (next + 1) % clients_.size();
      }
      std::vector<std::function<void()>> due;
      {
        std::lock_guard lock(mu_);
        while (!timers_.empty() && timers_.begin()->first <= now) {
          due.push_back(std::move(timers_.begin()->second));
          timers_.erase(timers_.begin());
        }
      }
      for (auto& f : due) f();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  void StopScheduler() {
    {
      std::lock_guard lock(mu_);
      scheduler_stop_ = true;
      timers_.clear();
    }
    if (scheduler_.joinable()) scheduler_.join();
  }

  void Beat(size_t i) {
    if (!Begin()) return;
    auto* call = new Unary<v1::HeartbeatRequest, v1::HeartbeatResponse>(absl::Seconds(10));
    call->req.set_client_id(clients_[i].id);
    Stub(i)->async()->Heartbeat(&call->ctx, &call->req, &call->resp, [this, i, call](grpc::Status s) {
      const double ms = absl::ToDoubleMilliseconds(absl::Now() - call->started);
      {
        std::lock_guard lock(mu_);
        if (!stopping_) {
          if (s.ok()) {
            (round_active_ ? beats_round_ms_ : beats_idle_ms_).push_back(ms);
          } else if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
            lost_.insert(i);  // the coordinator dropped it: it would have to register again
          } else {
            ++beat_errors_;
          }
        }
      }
      delete call;
      Finished();
    });
  }

  void Poll(size_t i) {
    if (!Begin()) return;
    constexpr uint32_t kWaitMs = 20000;
    auto* call = new Unary<v1::PullTaskRequest, v1::PullTaskResponse>(absl::Milliseconds(kWaitMs) + absl::Seconds(10));
    call->req.set_client_id(clients_[i].id);
    call->req.set_max_wait_ms(kWaitMs);
    Stub(i)->async()->PullTask(&call->ctx, &call->req, &call->resp, [this, i, call](grpc::Status s) {
      OnPolled(i, s, call->resp, absl::Now() - call->started);
      delete call;
      Finished();
    });
  }

  void OnPolled(size_t i, const grpc::Status& s, const v1::PullTaskResponse& resp, absl::Duration took) {
    bool download = false;
    absl::Duration again = absl::ZeroDuration();
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      if (!s.ok()) {
        ++poll_errors_;
        again = absl::Seconds(1);
      } else if (resp.run_finished()) {
        run_finished_seen_ = true;
        cv_.notify_all();
        return;  // this client is done
      } else if (resp.has_task()) {
        VClient& c = clients_[i];
        if (c.working || c.task.ref.task_id == resp.task().ref().task_id()) return;  // already has it
        c.task = core::FromProto(resp.task());
        c.working = true;
        ++tasks_;
        if (tasks_ == 1) {
          round_start_ = absl::Now();
          round_active_ = true;
          keeper_ = i;
          model_bytes_ = c.task.model_bytes;
        }
        download = true;
      } else if (took < absl::Seconds(1)) {
        again = absl::Milliseconds(std::max<uint32_t>(resp.retry_after_ms(), 100));
      }
    }
    if (download) {
      StartDownload(i);
    } else if (again > absl::ZeroDuration()) {
      After(again, [this, i] { Poll(i); });
    } else {
      Poll(i);
    }
  }

  void StartDownload(size_t i);
  void OnDownloaded(size_t i, const absl::Status& s, std::string kept);
  void StartUpload(size_t i);
  void OnUploaded(size_t i, const absl::Status& s);

  // The sampled clients' updates: the global model plus small noise (each variant its own), so
  // that every upload is valid and of the right layout. Built once, from the first download.
  void BuildVariants(const std::string& global_blob) {
    auto global = core::ParseModel(global_blob);
    std::vector<Variant> variants;
    if (global.ok()) {
      for (int v = 0; v < kUpdateVariants; ++v) {
        core::ModelWeights w = *global;
        core::Rng rng(7, {static_cast<uint64_t>(v)});
        for (auto& t : w.tensors) {
          for (float& x : t.mutable_f32()) x += static_cast<float>((rng.UniformDouble() - 0.5) * 1e-3);
        }
        Variant out;
        out.blob = core::SerializeModel(w);
        out.sha256 = core::Sha256Digest(out.blob);
        variants.push_back(std::move(out));
      }
    }
    std::vector<size_t> waiting;
    {
      std::lock_guard lock(mu_);
      variants_ = std::move(variants);
      if (!variants_.empty()) upload_bytes_ = variants_[0].blob.size();
      waiting.swap(waiting_for_variants_);
    }
    for (size_t i : waiting) StartUpload(i);
  }

  const LoadgenArgs args_;
  const absl::Duration budget_;
  std::vector<std::unique_ptr<v1::Coordinator::Stub>> control_, data_;
  std::vector<VClient> clients_;
  std::thread scheduler_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool scheduler_stop_ = false;
  int outstanding_ = 0;
  std::multimap<absl::Time, std::function<void()>> timers_;
  absl::Duration heartbeat_interval_;
  int registered_ = 0, register_errors_ = 0;
  absl::Duration register_time_;
  std::set<size_t> lost_;
  std::vector<double> beats_idle_ms_, beats_round_ms_;
  int beat_errors_ = 0, poll_errors_ = 0;
  int tasks_ = 0, downloads_ok_ = 0, download_errors_ = 0, download_shed_ = 0;
  int uploads_ok_ = 0, uploads_failed_ = 0, shed_ = 0, retries_ = 0;
  bool round_active_ = false, run_finished_seen_ = false;
  absl::Time round_start_, round_end_;
  size_t keeper_ = 0;  // the client whose download keeps the model's bytes
  uint64_t model_bytes_ = 0, upload_bytes_ = 0;
  std::vector<Variant> variants_;
  std::vector<size_t> waiting_for_variants_;
};

// Downloads a client's model in chunks, checking order, size and SHA-256 as they stream; only
// the keeper's download keeps the bytes.
class LoadGenerator::Download final : public grpc::ClientReadReactor<v1::ModelChunk> {
 public:
  Download(LoadGenerator* g, size_t i, const core::TrainTask& task, bool keep)
      : g_(g), i_(i), total_(task.model_bytes), sha_expected_(task.model_sha256), keep_(keep) {
    req_.set_client_id(g->clients_[i].id);
    core::ToProto(task.ref, req_.mutable_ref());
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + g->budget_));
    g->DataStub(i)->async()->DownloadModel(&ctx_, &req_, this);
    StartRead(&chunk_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (chunk_.offset() != received_ || chunk_.data().size() > total_ - received_) {
      bad_ = true;
      ctx_.TryCancel();
      return;
    }
    sha_.Update(chunk_.data());
    if (keep_) blob_ += chunk_.data();
    received_ += chunk_.data().size();
    StartRead(&chunk_);
  }
  void OnDone(const grpc::Status& s) override {
    absl::Status status = client::StatusFromCall(s, ctx_);  // a shed download carries its hint
    if (status.ok() && (bad_ || received_ != total_ || sha_.Finish() != sha_expected_)) {
      status = absl::DataLossError("download corrupted or cut short");
    }
    LoadGenerator* g = g_;
    const size_t i = i_;
    std::string kept = std::move(blob_);
    delete this;
    g->OnDownloaded(i, status, std::move(kept));
    g->Finished();
  }

 private:
  LoadGenerator* g_;
  size_t i_;
  uint64_t total_;
  std::string sha_expected_;
  bool keep_;
  bool bad_ = false;
  uint64_t received_ = 0;
  core::Sha256 sha_;
  std::string blob_;
  grpc::ClientContext ctx_;
  v1::DownloadModelRequest req_;
  v1::ModelChunk chunk_;
};

// Uploads one update: the header, then the blob in chunks.
class LoadGenerator::Upload final : public grpc::ClientWriteReactor<v1::UploadChunk> {
 public:
  Upload(LoadGenerator* g, size_t i, const core::TrainTask& task, const Variant& v)
      : g_(g), i_(i), blob_(v.blob) {
    auto* h = header_.mutable_header();
    h->set_client_id(g->clients_[i].id);
    core::ToProto(task.ref, h->mutable_ref());
    h->set_num_examples(1);
    h->set_total_bytes(v.blob.size());
    h->set_sha256(v.sha256);
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + g->budget_));
    g->DataStub(i)->async()->UploadResult(&ctx_, &resp_, this);
    StartWrite(&header_);
    StartCall();
  }
  // The bytes follow once the header is written and the coordinator admitted the upload (its
  // initial metadata); a shed upload ends without them.
  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) Ready();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return;  // the coordinator answered early (shed or refused); OnDone follows
    if (!header_written_) {
      header_written_ = true;
      Ready();
      return;
    }
    WriteNext();
  }
  void Ready() {
    if (ready_.fetch_add(1) == 1) WriteNext();  // the second of the two events
  }
  void WriteNext() {
    if (offset_ >= blob_.size()) {
      StartWritesDone();
      return;
    }
    const size_t n = std::min(kChunkBytes, blob_.size() - offset_);
    chunk_.set_data(blob_.data() + offset_, n);
    offset_ += n;
    StartWrite(&chunk_);
  }
  void OnDone(const grpc::Status& s) override {
    const absl::Status status = client::StatusFromCall(s, ctx_);
    LoadGenerator* g = g_;
    const size_t i = i_;
    delete this;
    g->OnUploaded(i, status);
    g->Finished();
  }

 private:
  LoadGenerator* g_;
  size_t i_;
  const std::string& blob_;  // a variant: lives as long as the generator
  size_t offset_ = 0;
  bool header_written_ = false;
  std::atomic<int> ready_{0};
  grpc::ClientContext ctx_;
  v1::UploadChunk header_, chunk_;
  v1::UploadResponse resp_;
};

void LoadGenerator::StartDownload(size_t i) {
  core::TrainTask task;
  bool keep;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    ++outstanding_;
    task = clients_[i].task;
    keep = i == keeper_;
  }
  new Download(this, i, task, keep);
}

void LoadGenerator::OnDownloaded(size_t i, const absl::Status& s, std::string kept) {
  bool build = false, upload = false;
  absl::Duration retry = absl::InfiniteDuration();
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (!s.ok()) {
      if (client::RetryAfter(s)) ++download_shed_; else ++download_errors_;
      if (client::IsRetryable(s) || absl::IsDataLoss(s)) retry = clients_[i].backoff->NextFor(s);
      if (retry == absl::InfiniteDuration()) {
        ++uploads_failed_;  // it cannot take part
        clients_[i].working = false;
        cv_.notify_all();
      }
    } else {
      ++downloads_ok_;
      build = i == keeper_;
      upload = !build && !variants_.empty();
      if (!build && !upload) waiting_for_variants_.push_back(i);
    }
  }
  if (retry != absl::InfiniteDuration()) After(retry, [this, i] { StartDownload(i); });
  if (build) {
    BuildVariants(kept);
    StartUpload(i);
  }
  if (upload) StartUpload(i);
}

void LoadGenerator::StartUpload(size_t i) {
  core::TrainTask task;
  const Variant* v = nullptr;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (variants_.empty()) {  // the model did not parse: nothing valid to send
      ++uploads_failed_;
      cv_.notify_all();
      return;
    }
    ++outstanding_;
    task = clients_[i].task;
    v = &variants_[i % variants_.size()];
  }
  new Upload(this, i, task, *v);
}

void LoadGenerator::OnUploaded(size_t i, const absl::Status& s) {
  absl::Duration delay = absl::InfiniteDuration();
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    VClient& c = clients_[i];
    if (s.ok()) {
      ++uploads_ok_;
      c.working = false;
      if (uploads_ok_ + uploads_failed_ >= args_.sampled) {
        round_end_ = absl::Now();
        round_active_ = false;
      }
      cv_.notify_all();
    } else {
      if (client::IsRetryable(s)) delay = c.backoff->NextFor(s);
      if (client::RetryAfter(s)) ++shed_;
      if (delay == absl::InfiniteDuration()) {
        ++uploads_failed_;
        c.working = false;
        cv_.notify_all();
      } else {
        ++retries_;
      }
    }
  }
  if (s.ok()) {
    Poll(i);  // to hear that the run finished
  } else if (delay != absl::InfiniteDuration()) {
    After(delay, [this, i] { StartUpload(i); });
  }
}

// ------------------------------------------------------------------------- the command

bool IsLoopback(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

absl::Status Validate(const LoadgenArgs& a) {
  if (a.clients < 1 || a.clients > kMaxClients) {
    return absl::InvalidArgumentError(StrCat("--clients must be in [1, ", kMaxClients, "]"));
  }
  if (a.sampled < 1 || a.sampled > a.clients) return absl::InvalidArgumentError("--sampled must be in [1, --clients]");
  if (!(a.duration > 0 && a.duration <= kMaxDurationSeconds)) {
    return absl::InvalidArgumentError(StrCat("--duration must be in (0, ", kMaxDurationSeconds, "] seconds"));
  }
  if (a.channels < 1 || a.channels > 64) return absl::InvalidArgumentError("--channels must be in [1, 64]");
  if (a.max_concurrent_uploads < 1) return absl::InvalidArgumentError("--max-concurrent-uploads must be at least 1");
  if (a.upload_memory_mb < 0) return absl::InvalidArgumentError("--upload-memory-mb must be at least 0");
  if (!IsLoopback(a.address)) {
    return absl::InvalidArgumentError(
        StrCat("--address '", a.address, "' is not loopback: the load generator only runs against 127.0.0.1"));
  }
  return absl::OkStatus();
}

// Round 1 of the child's metrics.jsonl, if it was written.
std::optional<json> FirstRound(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.value("round", 0) == 1) return j;
  }
  return std::nullopt;
}

int Fail(const absl::Status& s) {
  std::cerr << "tessera loadgen: " << s.message() << " [" << absl::StatusCodeToString(s.code()) << "]\n";
  return absl::IsInvalidArgument(s) ? kExitUsage : kExitFailure;
}

}  // namespace

void AddLoadgen(CLI::App& app, LoadgenArgs* a) {
  auto* sub = app.add_subcommand("loadgen", "Load-test a coordinator it starts itself on loopback");
  sub->add_option("--clients", a->clients, "Virtual clients to register and keep heartbeating (<= 20000)")
      ->capture_default_str();
  sub->add_option("--sampled", a->sampled, "Clients sampled in the round: each downloads and uploads")
      ->capture_default_str();
  sub->add_option("--model", a->model, "The coordinator's model: logreg | mlp | cnn")->capture_default_str();
  sub->add_option("--duration", a->duration, "Seconds the whole run may take (<= 1800)")->capture_default_str();
  sub->add_option("--channels", a->channels, "gRPC connections the virtual clients share")->capture_default_str();
  sub->add_option("--max-concurrent-uploads", a->max_concurrent_uploads, "Passed to the coordinator")
      ->capture_default_str();
  sub->add_option("--upload-memory-mb", a->upload_memory_mb, "Passed to the coordinator (0: from the model)")
      ->capture_default_str();
  sub->add_option("--address", a->address, "Loopback host the coordinator listens on")->capture_default_str();
  sub->add_option("--output", a->output, "Directory for the coordinator's output and log (default: a temp dir)");
  sub->add_option("--json", a->json, "Also write the report to this file");
  sub->add_option("--log-level", a->log_level, "The coordinator's log level")->capture_default_str();
}

int RunLoadgen(CLI::App* sub, LoadgenArgs& a, const std::string& self) {
  (void)sub;
  if (absl::Status s = Validate(a); !s.ok()) return Fail(s);
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(a.duration);
  fs::path dir = a.output;
  if (dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "tessera-loadgen-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return Fail(absl::InternalError("cannot make a temporary directory"));
    dir = tmpl;
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  const fs::path port_file = dir / "port";
  fs::remove(port_file, ec);

  const double memcpy_gbps = MemcpyGBps();  // before the load, on a quiet process

  // The coordinator samples ceil(fraction * clients - 1e-9): a fraction rounded down to 12
  // decimals samples exactly --sampled (clients <= 20000).
  char fraction[32];
  std::snprintf(fraction, sizeof(fraction), "%.12f",
                std::floor(static_cast<double>(a.sampled) / a.clients * 1e12) / 1e12);
  std::vector<std::string> argv = {self, "coordinator", "--insecure", "--address", StrCat(a.address, ":0"),
                                   "--port-file", port_file.string(), "--model", a.model, "--rounds", "1",
                                   "--min-clients", std::to_string(a.clients), "--fraction", fraction,
                                   "--min-results", std::to_string(a.sampled),
                                   "--round-timeout", StrCat(static_cast<int>(a.duration)),
                                   "--linger", StrCat(static_cast<int>(a.duration)),  // until our SIGTERM
                                   "--max-concurrent-uploads", std::to_string(a.max_concurrent_uploads),
                                   "--upload-memory-mb", std::to_string(a.upload_memory_mb),
                                   "--output", (dir / "coordinator").string(), "--log-level", a.log_level};
  auto child = std::make_unique<core::Subprocess>(argv, (dir / "coordinator.log").string());
  if (!child->started()) return Fail(absl::InternalError(StrCat("cannot start ", self)));
  int port = -1;
  while (absl::Now() < deadline && port < 0) {
    auto text = core::ReadFile(port_file.string());
    if (text.ok() && !text->empty()) port = std::atoi(text->c_str());
    if (port < 0 && child->Wait(std::chrono::milliseconds(50))) break;
  }
  if (port <= 0) {
    return Fail(absl::UnavailableError(StrCat("the coordinator did not start; see ", (dir / "coordinator.log").string())));
  }
  const std::string target = a.address == "::1" ? StrCat("[::1]:", port) : StrCat(a.address, ":", port);
  std::printf("tessera loadgen: coordinator pid %d on %s; %d clients, %d sampled, model %s\n",
              static_cast<int>(child->pid()), target.c_str(), a.clients, a.sampled, a.model.c_str());
  std::fflush(stdout);

  auto gen = std::make_unique<LoadGenerator>(a, target, deadline - absl::Now());
  const absl::Time t0 = absl::Now();
  const int registered = gen->RegisterAll(deadline);
  gen->set_register_time(absl::Now() - t0);
  const uint64_t rss_registered = ProcStatusBytes(child->pid(), "VmRSS");
  bool round_done = false;
  uint64_t peak_rss = 0;
  json timeline = json::array();  // [s into the round, coordinator RSS MiB, downloads, uploads]
  if (registered == a.clients) {
    gen->Start();
    const pid_t pid = child->pid();
    round_done = gen->WaitRoundDone(deadline, absl::Seconds(1), [&] {
      std::vector<double> p = gen->Progress();
      timeline.push_back({p[0], static_cast<double>(ProcStatusBytes(pid, "VmRSS") >> 20), p[1], p[2]});
      peak_rss = std::max(peak_rss, ProcStatusBytes(pid, "VmHWM"));  // also known if it dies later
      return !child->Wait(std::chrono::milliseconds(0)).has_value();  // the coordinator died: stop
    });
  }
  gen->Stop();
  peak_rss = std::max(peak_rss, ProcStatusBytes(child->pid(), "VmHWM"));
  child->Signal(SIGTERM);
  const std::optional<int> exit_code = child->Wait(std::chrono::milliseconds(60'000));
  if (!gen->WaitIdle(absl::Seconds(30))) {
    std::cerr << "tessera loadgen: calls still outstanding after the coordinator stopped\n";
    (void)gen.release();  // completions may still run: the generator must outlive them
  }
  json report = gen ? gen->Report() : json::object();
  gen.reset();

  const auto round = FirstRound(dir / "coordinator" / "metrics.jsonl");
  const bool completed = round_done && round && round->value("outcome", "") == "completed" &&
                         round->value("reported", 0) == a.sampled;
  report["round_completed"] = completed;
  report["round_reported"] = round ? round->value("reported", 0) : 0;
  report["coordinator_round_seconds"] = round ? (*round)["durations"].value("round_seconds", 0.0) : 0.0;
  report["coordinator_peak_rss_mb"] = static_cast<double>(peak_rss) / (1 << 20);
  report["coordinator_rss_after_register_mb"] = static_cast<double>(rss_registered) / (1 << 20);
  report["coordinator_exit"] = exit_code ? *exit_code : -1;
  report["memcpy_gb_per_s"] = memcpy_gbps;
  report["max_concurrent_uploads"] = a.max_concurrent_uploads;
  report["wall_seconds"] = absl::ToDoubleSeconds(absl::Now() - start);
  report["output"] = dir.string();
  report["timeline"] = timeline;

  auto num = [&](const char* k) { return report.value(k, 0.0); };
  std::printf(
      "clients held            %d of %d (lost %d; registered in %.2f s)\n"
      "coordinator peak RSS    %.0f MiB (%.0f MiB after registration)\n"
      "heartbeats              p50 %.2f ms, p99 %.2f ms during the round (%d beats)\n"
      "round                   %d uploads of %d in %.2f s (coordinator: %.2f s); %d shed, %d retries, %d failed;"
      " %d downloads shed\n"
      "throughput              %.3f GB/s down+up = %.4f of memcpy %.1f GB/s (1 core, same run)\n"
      "round completed         %s; coordinator exit %d\n",
      report.value("registered", 0) - report.value("clients_lost", 0), a.clients, report.value("clients_lost", 0),
      num("register_seconds"), num("coordinator_peak_rss_mb"), num("coordinator_rss_after_register_mb"),
      num("heartbeat_round_p50_ms"), num("heartbeat_round_p99_ms"), report.value("heartbeats_during_round", 0),
      report.value("uploads_ok", 0), a.sampled,
      num("round_seconds"), num("coordinator_round_seconds"), report.value("uploads_shed", 0),
      report.value("upload_retries", 0), report.value("uploads_failed", 0), report.value("downloads_shed", 0),
      num("transfer_gb_per_s"),
      num("transfer_gb_per_s") / memcpy_gbps, memcpy_gbps, completed ? "yes" : "NO", exit_code ? *exit_code : -1);
  if (!a.json.empty()) {
    if (absl::Status s = core::WriteFileAtomic(a.json, report.dump(2)); !s.ok()) return Fail(s);
  }
  const bool clean = completed && report.value("clients_lost", 0) == 0 && exit_code && *exit_code == 0;
  return clean ? 0 : kExitFailure;
}

}  // namespace tessera::cli
