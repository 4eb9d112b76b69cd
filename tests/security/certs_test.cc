// security/tls/certs: the CA and the certificates it issues, checked with OpenSSL's own verifier
// (X509_verify_cert) the way a TLS peer checks them, and the files they are written to.
#include "security/tls/certs.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"
#include "tests/testing/temp_dir.h"

namespace tessera::security::tls {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

X509Ptr ParseCert(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

PkeyPtr ParseKey(const SecretBytes& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

// X509_verify_cert of `leaf` against the single trusted `ca`, for `purpose` (as a TLS server
// checks a client's certificate: X509_PURPOSE_SSL_CLIENT). X509_V_OK or the verifier's error.
int Verify(const std::string& ca_pem, const std::string& leaf_pem, int purpose) {
  X509Ptr ca = ParseCert(ca_pem), leaf = ParseCert(leaf_pem);
  if (!ca || !leaf) return -1;
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), X509_STORE_free);
  X509_STORE_add_cert(store.get(), ca.get());
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(), X509_STORE_CTX_free);
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx.get(), purpose);
  const int ok = X509_verify_cert(ctx.get());
  const int error = X509_STORE_CTX_get_error(ctx.get());
  return ok == 1 ? X509_V_OK : (error == X509_V_OK ? -2 : error);
}

std::string VerifyError(int code) { return code < 0 ? "not parsed" : X509_verify_cert_error_string(code); }

mode_t Mode(const std::string& path) {
  struct stat st = {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

class CertsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = CreateCa({});
    ASSERT_OK(ca);
    ca_ = *std::move(ca);
  }
  IssueOptions Client(const std::string& name) {
    IssueOptions o;
    o.name = name;
    return o;
  }
  CertAndKey ca_;
};

TEST_F(CertsTest, CaIsASelfSignedCaThatSignsCertificatesOnly) {
  ASSERT_OK_AND_ASSIGN(CertInfo info, DescribeCertificate(ca_.cert_pem));
  EXPECT_TRUE(info.is_ca);
  EXPECT_EQ(info.common_name, "Tessera federation CA");
  EXPECT_TRUE(info.subject_alt_names.empty());
  EXPECT_EQ(Verify(ca_.cert_pem, ca_.cert_pem, X509_PURPOSE_ANY), X509_V_OK);
  X509Ptr cert = ParseCert(ca_.cert_pem);
  EXPECT_EQ(X509_get_key_usage(cert.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_EQ(X509_get_pathlen(cert.get()), 0);
  PkeyPtr key = ParseKey(ca_.key_pem);
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(EVP_PKEY_get_id(key.get()), EVP_PKEY_EC);
  EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
}

TEST_F(CertsTest, ClientCertificateVerifiesAgainstTheCaAndNamesOnlyTheClient) {
  ASSERT_OK_AND_ASSIGN(CertAndKey alice, IssueCertificate(ca_, Client("alice")));
  const int verified = Verify(ca_.cert_pem, alice.cert_pem, X509_PURPOSE_SSL_CLIENT);
  EXPECT_EQ(verified, X509_V_OK) << VerifyError(verified);
  ASSERT_OK_AND_ASSIGN(CertInfo info, DescribeCertificate(alice.cert_pem));
  EXPECT_EQ(info.common_name, "alice");
  EXPECT_THAT(info.subject_alt_names, ElementsAre("DNS:alice"));  // gRPC's peer identity: exactly the id
  EXPECT_FALSE(info.is_ca);
  X509Ptr cert = ParseCert(alice.cert_pem);
  PkeyPtr key = ParseKey(alice.key_pem);
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
  // clientAuth only: it cannot serve as the coordinator's certificate.
  EXPECT_EQ(Verify(ca_.cert_pem, alice.cert_pem, X509_PURPOSE_SSL_SERVER), X509_V_ERR_INVALID_PURPOSE);
}

TEST_F(CertsTest, ServerCertificateNamesLocalhostLoopbackAndTheExtraNames) {
  IssueOptions o;
  o.name = "coordinator";
  o.server = true;
  o.extra_sans = {"fl.example.org", "10.1.2.3", "::1", "localhost"};
  ASSERT_OK_AND_ASSIGN(CertAndKey server, IssueCertificate(ca_, o));
  EXPECT_EQ(Verify(ca_.cert_pem, server.cert_pem, X509_PURPOSE_SSL_SERVER), X509_V_OK);
  ASSERT_OK_AND_ASSIGN(CertInfo info, DescribeCertificate(server.cert_pem));
  EXPECT_EQ(info.common_name, "coordinator");
  EXPECT_THAT(info.subject_alt_names, ElementsAre("DNS:coordinator", "DNS:localhost", "IP:127.0.0.1",
                                                  "DNS:fl.example.org", "IP:10.1.2.3", "IP:::1"));
  X509Ptr cert = ParseCert(server.cert_pem);
  EXPECT_EQ(X509_check_host(cert.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "other.example.org", 0, 0, nullptr), 0);
  // serverAuth only: it cannot act as a client (whose identity it would otherwise claim).
  EXPECT_EQ(Verify(ca_.cert_pem, server.cert_pem, X509_PURPOSE_SSL_CLIENT), X509_V_ERR_INVALID_PURPOSE);
}

TEST_F(CertsTest, Ed25519KeysWork) {
  CaOptions co;
  co.key_type = KeyType::kEd25519;
  ASSERT_OK_AND_ASSIGN(CertAndKey ca, CreateCa(co));
  IssueOptions o = Client("bob");
  o.key_type = KeyType::kEd25519;
  ASSERT_OK_AND_ASSIGN(CertAndKey bob, IssueCertificate(ca, o));
  EXPECT_EQ(Verify(ca.cert_pem, bob.cert_pem, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  EXPECT_EQ(EVP_PKEY_get_id(ParseKey(bob.key_pem).get()), EVP_PKEY_ED25519);
  // An EC key under an Ed25519 CA, too.
  ASSERT_OK_AND_ASSIGN(CertAndKey carol, IssueCertificate(ca, Client("carol")));
  EXPECT_EQ(Verify(ca.cert_pem, carol.cert_pem, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
}

TEST_F(CertsTest, CertificateOfAnotherCaDoesNotVerify) {
  ASSERT_OK_AND_ASSIGN(CertAndKey other_ca, CreateCa({}));
  ASSERT_OK_AND_ASSIGN(CertAndKey mallory, IssueCertificate(other_ca, Client("mallory")));
  EXPECT_EQ(Verify(ca_.cert_pem, mallory.cert_pem, X509_PURPOSE_SSL_CLIENT),
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
}

TEST_F(CertsTest, ValidityWindowInThePastGivesAnExpiredCertificate) {
  IssueOptions o = Client("late");
  o.validity.not_before = absl::Now() - absl::Hours(24 * 10);
  o.validity.days = 1;
  ASSERT_OK_AND_ASSIGN(CertAndKey late, IssueCertificate(ca_, o));
  ASSERT_OK_AND_ASSIGN(CertInfo info, DescribeCertificate(late.cert_pem));
  EXPECT_LT(info.not_after, absl::Now() - absl::Hours(24 * 8));
  EXPECT_EQ(Verify(ca_.cert_pem, late.cert_pem, X509_PURPOSE_SSL_CLIENT), X509_V_ERR_CERT_HAS_EXPIRED);
}

TEST_F(CertsTest, ValidityIsDaysFromNowAndEndsNoLaterThanTheCa) {
  ASSERT_OK_AND_ASSIGN(CertInfo ca_info, DescribeCertificate(ca_.cert_pem));
  IssueOptions o = Client("alice");
  o.validity.days = 30;
  ASSERT_OK_AND_ASSIGN(CertAndKey alice, IssueCertificate(ca_, o));
  ASSERT_OK_AND_ASSIGN(CertInfo info, DescribeCertificate(alice.cert_pem));
  EXPECT_LE(info.not_before, absl::Now());
  EXPECT_GT(info.not_before, absl::Now() - absl::Hours(1));
  EXPECT_EQ(info.not_after - info.not_before, absl::Hours(24 * 30));
  o.validity.days = 36500;
  ASSERT_OK_AND_ASSIGN(CertAndKey long_lived, IssueCertificate(ca_, o));
  ASSERT_OK_AND_ASSIGN(info, DescribeCertificate(long_lived.cert_pem));
  EXPECT_EQ(info.not_after, ca_info.not_after);
}

TEST_F(CertsTest, RefusesBadOptions) {
  EXPECT_CODE(IssueCertificate(ca_, Client("a/b")), absl::StatusCode::kInvalidArgument);
  IssueOptions o = Client("alice");
  o.extra_sans = {"bob"};  // a second identity for a client
  EXPECT_CODE(IssueCertificate(ca_, o), absl::StatusCode::kInvalidArgument);
  o = Client("coordinator");
  o.server = true;
  o.extra_sans = {"bad_host"};
  EXPECT_CODE(IssueCertificate(ca_, o), absl::StatusCode::kInvalidArgument);
  o = Client("alice");
  o.validity.days = 0;
  EXPECT_CODE(IssueCertificate(ca_, o), absl::StatusCode::kInvalidArgument);
  o.validity.days = 36501;
  EXPECT_CODE(IssueCertificate(ca_, o), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(ParseKeyType("rsa"), absl::StatusCode::kInvalidArgument);
}

TEST_F(CertsTest, RefusesACaWhoseKeyDoesNotMatchOrThatExpired) {
  ASSERT_OK_AND_ASSIGN(CertAndKey other, CreateCa({}));
  CertAndKey mixed{ca_.cert_pem, SecretBytes::Copy(other.key_pem.span())};
  auto issued = IssueCertificate(mixed, Client("alice"));
  EXPECT_CODE(issued, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(issued.status().message()), HasSubstr("does not belong"));

  CaOptions old;
  old.validity.not_before = absl::Now() - absl::Hours(24 * 10);
  old.validity.days = 1;
  ASSERT_OK_AND_ASSIGN(CertAndKey expired_ca, CreateCa(old));
  EXPECT_CODE(IssueCertificate(expired_ca, Client("alice")), absl::StatusCode::kFailedPrecondition);

  ASSERT_OK_AND_ASSIGN(CertAndKey leaf, IssueCertificate(ca_, Client("leaf")));  // not a CA
  EXPECT_CODE(IssueCertificate(leaf, Client("alice")), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateNameTest, AcceptsIdsAndRefusesWhatCannotBeAFileOrAnIdentity) {
  for (const char* ok : {"alice", "client-0", "site_7.hospital-a", "0", "A.b-c_d"}) {
    EXPECT_TRUE(ValidateName(ok).ok()) << ok;
  }
  for (const char* bad : {"", "a/b", "../x", ".hidden", "-flag", "a b", "a,b", "\xc3\xa9", "ca", "CA", "Ca"}) {
    EXPECT_EQ(ValidateName(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_OK(ValidateName(std::string(64, 'x')));
  EXPECT_CODE(ValidateName(std::string(65, 'x')), absl::StatusCode::kInvalidArgument);
  auto s = ValidateName("a/b");
  EXPECT_THAT(std::string(s.message()), HasSubstr("'/'"));
}

// ------------------------------------------------------------------ files

class CertsDirectoryTest : public ::testing::Test {
 protected:
  // Modes must not depend on the caller's umask.
  void SetUp() override { old_umask_ = ::umask(0); }
  void TearDown() override { ::umask(old_umask_); }
  std::string Read(const std::string& path) { return core::ReadFile(path).value_or("<missing>"); }

  testutil::ScopedTempDir tmp_;
  mode_t old_umask_ = 0;
};

TEST_F(CertsDirectoryTest, WritesTheCaAndIssuedFilesWithPrivateKeysOnly0600) {
  const std::string dir = tmp_.Join("pki");
  ASSERT_OK_AND_ASSIGN(WrittenFiles ca, InitCaDirectory(dir, {}, false));
  EXPECT_EQ(ca.cert_path, dir + "/ca.pem");
  EXPECT_EQ(ca.key_path, dir + "/ca.key");
  EXPECT_EQ(Mode(dir), 0700u);
  EXPECT_EQ(Mode(ca.key_path), 0600u);
  EXPECT_EQ(Mode(ca.cert_path), 0644u);
  EXPECT_TRUE(ca.info.is_ca);

  IssueOptions o;
  o.name = "client-0";
  ASSERT_OK_AND_ASSIGN(WrittenFiles client, IssueToDirectory(dir, o, false));
  EXPECT_EQ(client.cert_path, dir + "/client-0.pem");
  EXPECT_EQ(client.key_path, dir + "/client-0.key");
  EXPECT_EQ(Mode(client.key_path), 0600u);
  EXPECT_EQ(Mode(client.cert_path), 0644u);
  EXPECT_THAT(client.info.subject_alt_names, ElementsAre("DNS:client-0"));
  EXPECT_EQ(Verify(Read(ca.cert_path), Read(client.cert_path), X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  EXPECT_THAT(Read(client.key_path), HasSubstr("-----BEGIN PRIVATE KEY-----"));
  // No temporary file is left behind.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_THAT(names, ElementsAre("ca.key", "ca.pem", "client-0.key", "client-0.pem"));
}

TEST_F(CertsDirectoryTest, RefusesToOverwriteUnlessAskedTo) {
  const std::string dir = tmp_.path();  // an existing directory keeps its mode
  ASSERT_OK(InitCaDirectory(dir, {}, false));
  const std::string ca_pem = Read(dir + "/ca.pem"), ca_key = Read(dir + "/ca.key");
  auto again = InitCaDirectory(dir, {}, false);
  EXPECT_CODE(again, absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("ca.pem"));
  EXPECT_EQ(Read(dir + "/ca.pem"), ca_pem);
  EXPECT_EQ(Read(dir + "/ca.key"), ca_key);

  IssueOptions o;
  o.name = "alice";
  ASSERT_OK(IssueToDirectory(dir, o, false));
  const std::string alice_pem = Read(dir + "/alice.pem"), alice_key = Read(dir + "/alice.key");
  EXPECT_CODE(IssueToDirectory(dir, o, false), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Read(dir + "/alice.pem"), alice_pem);
  EXPECT_EQ(Read(dir + "/alice.key"), alice_key);
  // A lone key is enough to refuse: the pair is never half replaced.
  std::filesystem::remove(dir + "/alice.pem");
  EXPECT_CODE(IssueToDirectory(dir, o, false), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(std::filesystem::exists(dir + "/alice.pem"));

  ASSERT_OK(IssueToDirectory(dir, o, true));
  EXPECT_NE(Read(dir + "/alice.key"), alice_key);
  EXPECT_EQ(Mode(dir + "/alice.key"), 0600u);
  ASSERT_OK(InitCaDirectory(dir, {}, true));
  EXPECT_NE(Read(dir + "/ca.key"), ca_key);
  EXPECT_EQ(Mode(dir + "/ca.key"), 0600u);
  // alice's certificate was signed by the replaced CA.
  EXPECT_EQ(Verify(Read(dir + "/ca.pem"), Read(dir + "/alice.pem"), X509_PURPOSE_SSL_CLIENT),
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
}

TEST_F(CertsDirectoryTest, IssuingNeedsACaAndAGoodName) {
  IssueOptions o;
  o.name = "alice";
  EXPECT_CODE(IssueToDirectory(tmp_.path(), o, false), absl::StatusCode::kNotFound);
  ASSERT_OK(InitCaDirectory(tmp_.path(), {}, false));
  o.name = "../alice";
  EXPECT_CODE(IssueToDirectory(tmp_.path(), o, false), absl::StatusCode::kInvalidArgument);
  o.name = "ca";
  EXPECT_CODE(IssueToDirectory(tmp_.path(), o, true), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(InitCaDirectory(tmp_.Join("ca.pem"), {}, false), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::security::tls
