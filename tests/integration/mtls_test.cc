// Mutual TLS over loopback: a real CoordinatorServer on 127.0.0.1:<ephemeral> requiring client
// certificates from the federation's CA, and real GrpcCoordinatorChannels presenting them. The
// certificates are made by security/tls/certs in a temporary directory, as `tessera certs` makes
// them. Checks who gets in (a certified client whose id is its certificate's name) and who does
// not: no certificate, another CA, an expired certificate, a server certificate (handshake
// failures: UNAVAILABLE), an id other than the certificate's, a revoked id, an id outside the
// allow-list (PERMISSION_DENIED). Every RPC has a deadline; every wait is bounded.
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/client_runtime.h"
#include "client/grpc/grpc_channel.h"
#include "coordinator/coordinator.h"
#include "coordinator/grpc/coordinator_service.h"
#include "coordinator/strategy.h"
#include "core/clock.h"
#include "core/file_io.h"
#include "core/status.h"
#include "core/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "security/tls/certs.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"
#include "tests/testing/temp_dir.h"

namespace tessera {
namespace {

using client::ChannelOptions;
using client::ChannelTlsOptions;
using client::GrpcCoordinatorChannel;
using coordinator::Coordinator;
using coordinator::CoordinatorServer;
using core::ClientId;
using core::StrCat;
using SteadyClock = std::chrono::steady_clock;
using testutil::FloatModel;
using testutil::ResultFor;
using testutil::Values;
using ::testing::HasSubstr;
namespace tls = security::tls;

constexpr char kRunId[] = "run-mtls";

// A certificate and its key on disk.
struct Identity {
  std::string cert_file;
  std::string key_file;
};

// The federation's PKI in a temporary directory: the CA, the coordinator's certificate, and
// whatever the tests issue.
class Pki {
 public:
  Pki() {
    dir_ = tmp_.Join("pki");
    auto ca = tls::InitCaDirectory(dir_, {}, false);
    EXPECT_OK(ca);
    tls::IssueOptions server;
    server.name = "coordinator";
    server.server = true;
    EXPECT_OK(tls::IssueToDirectory(dir_, server, false));
  }
  std::string ca_file() const { return dir_ + "/ca.pem"; }
  tls::CertAndKey Ca() const {
    auto key = core::ReadFile(dir_ + "/ca.key");
    EXPECT_OK(key);
    tls::CertAndKey ca{core::ReadFile(ca_file()).value_or(""),
                       security::SecretBytes::Copy({reinterpret_cast<const uint8_t*>(key->data()), key->size()})};
    return ca;
  }
  Identity coordinator() const { return {dir_ + "/coordinator.pem", dir_ + "/coordinator.key"}; }

  // A client certificate for `name` from the federation's CA, written by the library's own
  // directory code.
  Identity Client(const std::string& name) {
    tls::IssueOptions o;
    o.name = name;
    auto written = tls::IssueToDirectory(dir_, o, /*overwrite=*/true);
    EXPECT_OK(written);
    return {written->cert_path, written->key_path};
  }
  // A certificate for `name` signed by `ca`, with `validity`, under a file name of its own.
  Identity Other(const tls::CertAndKey& ca, const tls::IssueOptions& o, const std::string& file) {
    auto issued = tls::IssueCertificate(ca, o);
    EXPECT_OK(issued);
    return Write(*issued, file);
  }
  Identity Write(const tls::CertAndKey& pair, const std::string& file) {
    Identity id{tmp_.Join(file + ".pem"), tmp_.Join(file + ".key")};
    EXPECT_OK(core::WriteFileAtomic(id.cert_file, pair.cert_pem));
    EXPECT_OK(core::WriteFileAtomic(
        id.key_file, std::string_view(reinterpret_cast<const char*>(pair.key_pem.data()), pair.key_pem.size())));
    return id;
  }

 private:
  testutil::ScopedTempDir tmp_;
  std::string dir_;
};

struct FederationOptions {
  int min_available = 1;
  core::RoundNumber num_rounds = 1;
  std::optional<std::set<std::string>> allowed_clients;
  std::set<std::string> revoked_clients;
  std::optional<Identity> server_identity;  // default: the PKI's coordinator certificate
};

// A coordinator (FedAvg, fraction 1.0, real clock) behind a mutual-TLS gRPC server on loopback.
class Federation {
 public:
  static absl::StatusOr<std::unique_ptr<Federation>> Start(const Pki& pki, core::ModelWeights initial,
                                                           FederationOptions o = {}) {
    coordinator::CoordinatorOptions options;
    options.round.run_id = kRunId;
    options.round.num_rounds = o.num_rounds;
    options.round.round_deadline = absl::Minutes(5);  // no round closes by deadline in these tests
    options.round.min_results = 1;
    options.round.seed = 3;
    options.liveness_timeout = absl::Minutes(5);
    options.allowed_clients = o.allowed_clients;
    options.revoked_clients = o.revoked_clients;
    coordinator::FedAvgOptions fedavg;
    fedavg.fraction = 1.0;
    fedavg.min_fit_clients = 1;
    fedavg.min_available_clients = o.min_available;
    TESSERA_ASSIGN_OR_RETURN(auto strategy, coordinator::FedAvgStrategy::Create(fedavg));
    std::unique_ptr<Federation> f(new Federation());
    TESSERA_ASSIGN_OR_RETURN(f->coordinator, Coordinator::Create(options, std::move(strategy), std::move(initial)));
    const Identity server = o.server_identity.value_or(pki.coordinator());
    coordinator::ServerTlsOptions tls;
    tls.cert_file = server.cert_file;
    tls.key_file = server.key_file;
    tls.client_ca_file = pki.ca_file();
    TESSERA_ASSIGN_OR_RETURN(f->server, CoordinatorServer::Start(f->coordinator.get(), "127.0.0.1:0", tls));
    return f;
  }
  ~Federation() {
    if (server) server->Shutdown();
    server.reset();  // before the coordinator it borrows
    coordinator.reset();
  }
  // The client checks the coordinator's certificate against this address: IP:127.0.0.1.
  std::string address() const { return StrCat("127.0.0.1:", server->port()); }

  std::unique_ptr<Coordinator> coordinator;
  std::unique_ptr<CoordinatorServer> server;

 private:
  Federation() = default;
};

ChannelOptions QuickChannelOptions() {
  ChannelOptions o;
  o.rpc_timeout = absl::Seconds(10);
  o.transfer_timeout = absl::Seconds(30);
  o.retry.max_attempts = 2;  // a failed handshake is UNAVAILABLE, which the channel retries
  o.retry.initial_backoff = absl::Milliseconds(10);
  o.retry.max_backoff = absl::Milliseconds(50);
  return o;
}

// A channel trusting the federation's CA and presenting `identity` (none: no client certificate).
absl::StatusOr<std::unique_ptr<GrpcCoordinatorChannel>> Connect(const Federation& fed, const Pki& pki,
                                                                const std::optional<Identity>& identity) {
  ChannelTlsOptions tls;
  tls.ca_file = pki.ca_file();
  if (identity) {
    tls.cert_file = identity->cert_file;
    tls.key_file = identity->key_file;
  }
  return GrpcCoordinatorChannel::Create(fed.address(), tls, QuickChannelOptions());
}

double SecondsSince(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// Adds `delta` to every weight and reports 8 examples.
class AddingTrainer final : public client::Trainer {
 public:
  explicit AddingTrainer(float delta) : delta_(delta) {}
  absl::StatusOr<client::TrainOutput> Train(const core::ModelWeights& global, const core::TrainConfig&) override {
    client::TrainOutput out;
    out.weights = global;
    for (auto& t : out.weights.tensors) {
      for (float& v : t.mutable_f32()) v += delta_;
    }
    out.num_examples = 8;
    return out;
  }
  absl::StatusOr<core::Metrics> Evaluate(const core::ModelWeights&) override {
    return core::Metrics{{"accuracy", 0.5}};
  }

 private:
  float delta_;
};

// ---------------------------------------------------------------------------------------------
// Who gets in.

TEST(MtlsTest, CertifiedClientRegistersAndCompletesARound) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1, 2, 3})));
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(*fed, pki, pki.Client("alice")));
  AddingTrainer plus_two(2.0f);
  client::ClientOptions options;
  options.id = ClientId{"alice"};
  options.poll_wait = absl::Seconds(2);
  client::ClientRuntime alice(options, channel.get(), &plus_two);

  std::atomic<bool> stop{false};
  absl::Status status = absl::UnknownError("not run");
  std::thread runner([&] { status = alice.Run(&stop); });
  const bool finished = fed->coordinator->WaitFinished(absl::Seconds(20));
  if (!finished) stop = true;  // bound the test: the runtime stops after its current poll
  runner.join();

  ASSERT_TRUE(finished);
  EXPECT_OK(status);
  EXPECT_EQ(alice.tasks_done(), 1);
  EXPECT_EQ(Values(*fed->coordinator->global_model()->weights), (std::vector<float>{3, 4, 5}));
  const auto history = fed->coordinator->history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].reported, 1);
}

// The handshake fails: the channel sees UNAVAILABLE (after its retries), and quickly.
void ExpectHandshakeRefused(const Federation& fed, const Pki& pki, const std::optional<Identity>& identity) {
  ASSERT_OK_AND_ASSIGN(auto channel, Connect(fed, pki, identity));
  const auto t0 = SteadyClock::now();
  auto reg = channel->Register(ClientId{"alice"}, {});
  EXPECT_CODE(reg, absl::StatusCode::kUnavailable);
  EXPECT_LT(SecondsSince(t0), 8.0);
  // The coordinator never heard of it: a registration would have opened round 1.
  EXPECT_EQ(fed.coordinator->current_round(), 0u);
}

TEST(MtlsTest, ClientWithoutACertificateIsRefusedInTheHandshake) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1})));
  ExpectHandshakeRefused(*fed, pki, std::nullopt);
}

TEST(MtlsTest, CertificateFromAnotherCaIsRefusedInTheHandshake) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1})));
  ASSERT_OK_AND_ASSIGN(tls::CertAndKey other_ca, tls::CreateCa({}));
  tls::IssueOptions o;
  o.name = "alice";  // the right name, the wrong issuer
  ExpectHandshakeRefused(*fed, pki, pki.Other(other_ca, o, "alice-other-ca"));
}

TEST(MtlsTest, ExpiredCertificateIsRefusedInTheHandshake) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1})));
  tls::IssueOptions o;
  o.name = "alice";
  o.validity.not_before = absl::Now() - absl::Hours(24 * 10);
  o.validity.days = 1;  // expired nine days ago
  ExpectHandshakeRefused(*fed, pki, pki.Other(pki.Ca(), o, "alice-expired"));
}

TEST(MtlsTest, ServerCertificateCannotActAsAClient) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1})));
  ExpectHandshakeRefused(*fed, pki, pki.coordinator());  // serverAuth only
}

TEST(MtlsTest, ClientRefusesACoordinatorCertifiedByAnotherCa) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(tls::CertAndKey other_ca, tls::CreateCa({}));
  tls::IssueOptions o;
  o.name = "coordinator";
  o.server = true;
  FederationOptions fo;
  fo.server_identity = pki.Other(other_ca, o, "impostor-coordinator");
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1}), fo));
  ExpectHandshakeRefused(*fed, pki, pki.Client("alice"));
}

TEST(MtlsTest, ClaimingAnIdOtherThanTheCertificatesIsPermissionDenied) {
  Pki pki;
  FederationOptions fo;
  fo.min_available = 2;  // no round opens: bob's calls would otherwise be served
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1}), fo));
  ASSERT_OK_AND_ASSIGN(auto alice, Connect(*fed, pki, pki.Client("alice")));
  ASSERT_OK_AND_ASSIGN(auto bob, Connect(*fed, pki, pki.Client("bob")));
  ASSERT_OK(bob->Register(ClientId{"bob"}, {}));

  auto reg = alice->Register(ClientId{"bob"}, {});
  EXPECT_CODE(reg, absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(reg.status().message()), HasSubstr("'bob'"));
  EXPECT_CODE(alice->Heartbeat(ClientId{"bob"}), absl::StatusCode::kPermissionDenied);
  EXPECT_CODE(alice->PullTask(ClientId{"bob"}, absl::ZeroDuration()), absl::StatusCode::kPermissionDenied);
  // Its own id works on the same connection.
  EXPECT_OK(alice->Register(ClientId{"alice"}, {}));
}

TEST(MtlsTest, QueryingAnotherClientsUploadIsPermissionDenied) {
  // A partial upload is found by the certified id: alice cannot ask for bob's, nor resume it.
  Pki pki;
  FederationOptions fo;
  fo.min_available = 2;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1}), fo));
  const Identity alice = pki.Client("alice");
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = core::ReadFile(pki.ca_file()).value_or("");
  ssl.pem_cert_chain = core::ReadFile(alice.cert_file).value_or("");
  ssl.pem_private_key = core::ReadFile(alice.key_file).value_or("");
  auto stub = v1::Coordinator::NewStub(grpc::CreateChannel(fed->address(), grpc::SslCredentials(ssl)));
  for (const char* claimed : {"bob", "alice"}) {
    SCOPED_TRACE(claimed);
    v1::QueryUploadRequest req;
    req.set_client_id(claimed);
    req.mutable_ref()->set_task_id(StrCat(fed->coordinator->run_id(), "/1/", claimed));
    req.set_total_bytes(100);
    req.set_sha256(std::string(32, 'x'));
    v1::QueryUploadResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    const grpc::Status s = stub->QueryUpload(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), std::string(claimed) == "bob" ? grpc::StatusCode::PERMISSION_DENIED : grpc::StatusCode::OK)
        << s.error_message();
    EXPECT_EQ(resp.received(), 0u);
  }
}

TEST(MtlsTest, RevokedClientIsPermissionDenied) {
  Pki pki;
  FederationOptions fo;
  fo.revoked_clients = {"alice"};
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1}), fo));
  ASSERT_OK_AND_ASSIGN(auto alice, Connect(*fed, pki, pki.Client("alice")));
  auto reg = alice->Register(ClientId{"alice"}, {});
  EXPECT_CODE(reg, absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(reg.status().message()), HasSubstr("'alice' is revoked"));
  EXPECT_CODE(alice->PullTask(ClientId{"alice"}, absl::ZeroDuration()), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(fed->coordinator->current_round(), 0u);  // it never counted as available
}

TEST(MtlsTest, ClientOutsideTheAllowListIsPermissionDenied) {
  Pki pki;
  FederationOptions fo;
  fo.allowed_clients = std::set<std::string>{"bob"};
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1}), fo));
  ASSERT_OK_AND_ASSIGN(auto alice, Connect(*fed, pki, pki.Client("alice")));
  auto reg = alice->Register(ClientId{"alice"}, {});
  EXPECT_CODE(reg, absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(reg.status().message()), HasSubstr("'alice' is not on the allow-list"));
  ASSERT_OK_AND_ASSIGN(auto bob, Connect(*fed, pki, pki.Client("bob")));
  EXPECT_OK(bob->Register(ClientId{"bob"}, {}));
}

// ---------------------------------------------------------------------------------------------
// Revocation while running.

TEST(MtlsTest, ClientRevokedInAnOpenRoundCountsAsDroppedAndTheRoundCompletes) {
  Pki pki;
  FederationOptions fo;
  fo.min_available = 2;
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({0, 0}), fo));
  ASSERT_OK_AND_ASSIGN(auto alice, Connect(*fed, pki, pki.Client("alice")));
  ASSERT_OK_AND_ASSIGN(auto bob, Connect(*fed, pki, pki.Client("bob")));
  ASSERT_OK(alice->Register(ClientId{"alice"}, {}));
  ASSERT_OK(bob->Register(ClientId{"bob"}, {}));
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply alice_task, alice->PullTask(ClientId{"alice"}, absl::ZeroDuration()));
  ASSERT_OK_AND_ASSIGN(core::PullTaskReply bob_task, bob->PullTask(ClientId{"bob"}, absl::ZeroDuration()));
  ASSERT_TRUE(alice_task.task.has_value());
  ASSERT_TRUE(bob_task.task.has_value());

  fed->coordinator->Revoke(ClientId{"alice"});
  // Its task is void: no download, no upload, no poll.
  EXPECT_CODE(alice->DownloadModel(ClientId{"alice"}, *alice_task.task), absl::StatusCode::kPermissionDenied);
  auto upload = alice->UploadResult(ClientId{"alice"}, ResultFor(*alice_task.task, FloatModel({100, 100}), 8));
  EXPECT_CODE(upload, absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(upload.status().message()), HasSubstr("'alice'"));
  EXPECT_CODE(alice->PullTask(ClientId{"alice"}, absl::ZeroDuration()), absl::StatusCode::kPermissionDenied);

  // Bob's result alone closes the round: alice counted as dropped, not awaited.
  ASSERT_OK(bob->UploadResult(ClientId{"bob"}, ResultFor(*bob_task.task, FloatModel({4, 6}), 8)));
  ASSERT_TRUE(fed->coordinator->WaitFinished(absl::Seconds(10)));
  const auto history = fed->coordinator->history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].reported, 1);
  EXPECT_EQ(history[0].dropped, 1);
  EXPECT_EQ(Values(*fed->coordinator->global_model()->weights), (std::vector<float>{4, 6}));
}

TEST(MtlsTest, RevokingAnswersThePendingPollAtOnce) {
  Pki pki;
  FederationOptions fo;
  fo.min_available = 3;  // no round opens: the poll waits
  ASSERT_OK_AND_ASSIGN(auto fed, Federation::Start(pki, FloatModel({1}), fo));
  ASSERT_OK_AND_ASSIGN(auto alice, Connect(*fed, pki, pki.Client("alice")));
  ASSERT_OK(alice->Register(ClientId{"alice"}, {}));
  absl::StatusOr<core::PullTaskReply> reply = absl::UnknownError("not answered");
  std::thread poller([&] { reply = alice->PullTask(ClientId{"alice"}, absl::Seconds(8)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the poll is pending by now
  const auto t0 = SteadyClock::now();
  fed->coordinator->Revoke(ClientId{"alice"});
  poller.join();
  EXPECT_LT(SecondsSince(t0), 3.0);
  EXPECT_CODE(reply, absl::StatusCode::kPermissionDenied);
  EXPECT_CODE(alice->Register(ClientId{"alice"}, {}), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace tessera
