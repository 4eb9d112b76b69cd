#include "security/tls/certs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <span>

#include "core/file_io.h"
#include "core/status.h"
#include "core/strings.h"
#include "security/crypto/openssl_util.h"

namespace tessera::security::tls {
namespace {

using core::StrCat;
using internal::OpenSslError;

struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }  // wipes the private key
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }  // a memory BIO's buffer is cleansed when freed
};
struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct X509ExtensionDeleter {
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
struct GeneralNamesDeleter {
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, X509ExtensionDeleter>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, GeneralNamesDeleter>;

constexpr int kMaxDays = 36500;
constexpr size_t kMaxNameLength = 64;  // RFC 5280's upper bound for a CN
// Backdating by default absorbs clocks that are a little behind the issuer's.
constexpr absl::Duration kClockSkew = absl::Minutes(5);

absl::Status Internal(std::string_view what) { return OpenSslError(absl::StatusCode::kInternal, what); }

absl::StatusOr<EvpPkeyPtr> GenerateKey(KeyType type) {
  EVP_PKEY* key = type == KeyType::kEd25519 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                                            : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (key == nullptr) return Internal("cannot generate a key");
  return EvpPkeyPtr(key);
}

// Ed25519 signs the message itself (no separate digest); ECDSA with SHA-256.
const EVP_MD* DigestFor(EVP_PKEY* signing_key) {
  return EVP_PKEY_get_id(signing_key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
}

absl::StatusOr<std::pair<absl::Time, absl::Time>> Window(const Validity& v) {
  if (v.days < 1 || v.days > kMaxDays) {
    return absl::InvalidArgumentError(StrCat("validity must be 1 to ", kMaxDays, " days, got ", v.days));
  }
  const absl::Time from = v.not_before.value_or(absl::Now() - kClockSkew);
  return std::make_pair(from, from + absl::Hours(24) * v.days);
}

absl::Time ToTime(const ASN1_TIME* t) {
  struct tm tm = {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

absl::Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509ExtensionPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value.c_str()));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1) {
    return Internal(StrCat("cannot add the ", OBJ_nid2sn(nid), " extension"));
  }
  return absl::OkStatus();
}

// A v3 certificate for `subject_key` named `common_name` with a random 159-bit serial, not yet
// signed and without extensions.
absl::StatusOr<X509Ptr> NewCertificate(EVP_PKEY* subject_key, const std::string& common_name, absl::Time not_before,
                                       absl::Time not_after) {
  X509Ptr cert(X509_new());
  if (cert == nullptr || X509_set_version(cert.get(), X509_VERSION_3) != 1) return Internal("cannot make a certificate");
  BnPtr serial(BN_new());
  if (serial == nullptr || BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return Internal("cannot draw a serial number");
  }
  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), absl::ToTimeT(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), absl::ToTimeT(not_after)) == nullptr) {
    return Internal("cannot set the validity");
  }
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) != 1) {
    return Internal("cannot set the subject name");
  }
  if (X509_set_pubkey(cert.get(), subject_key) != 1) return Internal("cannot set the public key");
  return cert;
}

absl::StatusOr<CertAndKey> ToPem(X509* cert, EVP_PKEY* key) {
  CertAndKey out;
  BioPtr cert_bio(BIO_new(BIO_s_mem()));
  if (cert_bio == nullptr || PEM_write_bio_X509(cert_bio.get(), cert) != 1) return Internal("cannot encode the certificate");
  char* data = nullptr;
  long n = BIO_get_mem_data(cert_bio.get(), &data);  // NOLINT(runtime/int): OpenSSL's type
  out.cert_pem.assign(data, static_cast<size_t>(n));
  // PKCS#8, unencrypted: the file's mode protects it.
  BioPtr key_bio(BIO_new(BIO_s_secmem()));
  if (key_bio == nullptr || PEM_write_bio_PrivateKey(key_bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Internal("cannot encode the private key");
  }
  n = BIO_get_mem_data(key_bio.get(), &data);
  out.key_pem = SecretBytes::Copy({reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(n)});
  return out;
}

absl::StatusOr<X509Ptr> ParseCertificate(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (cert == nullptr) return OpenSslError(absl::StatusCode::kInvalidArgument, "not a PEM certificate");
  return cert;
}

absl::StatusOr<EvpPkeyPtr> ParsePrivateKey(const SecretBytes& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EvpPkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (key == nullptr) return OpenSslError(absl::StatusCode::kInvalidArgument, "not a PEM private key");
  return key;
}

std::string CommonName(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  const int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (i < 0) return "";
  const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<size_t>(ASN1_STRING_length(s)));
}

std::vector<std::string> SubjectAltNames(X509* cert) {
  std::vector<std::string> out;
  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names.get(), i);
    if (g->type == GEN_DNS) {
      const ASN1_STRING* s = g->d.dNSName;
      out.push_back(StrCat("DNS:", std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                               static_cast<size_t>(ASN1_STRING_length(s)))));
    } else if (g->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = g->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = "";
      const int family = ASN1_STRING_length(ip) == 4 ? AF_INET : AF_INET6;
      if (inet_ntop(family, ASN1_STRING_get0_data(ip), text, sizeof(text)) != nullptr) out.push_back(StrCat("IP:", text));
    } else {
      out.push_back("other");
    }
  }
  return out;
}

absl::StatusOr<CertInfo> Describe(X509* cert) {
  CertInfo info;
  info.common_name = CommonName(cert);
  info.subject_alt_names = SubjectAltNames(cert);
  info.not_before = ToTime(X509_get0_notBefore(cert));
  info.not_after = ToTime(X509_get0_notAfter(cert));
  info.is_ca = (X509_get_extension_flags(cert) & EXFLAG_CA) != 0;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return Internal("cannot hash the certificate");
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned int i = 0; i < len; ++i) {
    if (i) info.sha256_fingerprint += ':';
    info.sha256_fingerprint += kHex[md[i] >> 4];
    info.sha256_fingerprint += kHex[md[i] & 15];
  }
  return info;
}

// "IP:a.b.c.d" / "IP:v6" for an address, "DNS:host" for a host name (labels of [A-Za-z0-9-],
// optionally a leading "*." wildcard); INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> SanEntry(const std::string& host) {
  unsigned char buf[16];
  if (inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1) {
    return StrCat("IP:", host);
  }
  std::string_view rest = host;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  bool ok = !rest.empty() && host.size() <= 253;
  size_t label = 0;
  for (char c : rest) {
    if (c == '.') {
      ok = ok && label > 0;
      label = 0;
    } else {
      ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-') && ++label <= 63;
    }
  }
  if (!ok || label == 0) {
    return absl::InvalidArgumentError(StrCat("'", host, "' is neither an IP address nor a host name"));
  }
  return StrCat("DNS:", host);
}

// ------------------------------------------------------------------ files

absl::Status ErrnoStatus(std::string_view what, const std::string& path, int e) {
  std::string msg = StrCat(what, " ", path, ": ", std::strerror(e));
  if (e == ENOENT) return absl::NotFoundError(msg);
  if (e == EEXIST) return absl::AlreadyExistsError(StrCat(path, " already exists"));
  if (e == EACCES || e == EPERM || e == EROFS) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

// Writes `data` to `path` with `mode`: into a temporary file beside it (created 0600, so a key is
// never readable by others, not even for a moment), fsynced, then moved into place. Without
// `overwrite` the move fails with ALREADY_EXISTS if `path` appeared meanwhile.
absl::Status WriteFileWithMode(const std::string& path, std::span<const uint8_t> data, mode_t mode, bool overwrite) {
  std::string tmp = StrCat(path, ".tmp.XXXXXX");
  const int fd = mkstemp(tmp.data());
  if (fd < 0) return ErrnoStatus("cannot create", tmp, errno);
  auto fail = [&](std::string_view what) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return ErrnoStatus(what, tmp, e);
  };
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("cannot write");
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, mode) != 0) return fail("cannot set the mode of");
  if (::fsync(fd) != 0) return fail("cannot fsync");
  ::close(fd);
  int r = overwrite ? ::rename(tmp.c_str(), path.c_str())
                    : ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE);
  if (r != 0 && !overwrite && (errno == EINVAL || errno == ENOSYS)) {
    // A file system without RENAME_NOREPLACE: link(2) refuses an existing target just as well.
    r = ::link(tmp.c_str(), path.c_str());
    if (r == 0) ::unlink(tmp.c_str());
  }
  if (r != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus("cannot write", path, e);
  }
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const int dir = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return absl::OkStatus();
}

std::span<const uint8_t> Bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

absl::Status RefuseExisting(const std::vector<std::string>& paths, bool overwrite) {
  if (overwrite) return absl::OkStatus();
  for (const auto& p : paths) {
    std::error_code ec;
    if (std::filesystem::symlink_status(p, ec).type() != std::filesystem::file_type::not_found) {
      return absl::AlreadyExistsError(StrCat(p, " already exists (not overwritten)"));
    }
  }
  return absl::OkStatus();
}

absl::Status WritePair(const CertAndKey& pair, const std::string& cert_path, const std::string& key_path,
                       bool overwrite) {
  // The key first: a certificate on disk always has its key beside it.
  TESSERA_RETURN_IF_ERROR(WriteFileWithMode(key_path, pair.key_pem.span(), 0600, overwrite));
  return WriteFileWithMode(cert_path, Bytes(pair.cert_pem), 0644, overwrite);
}

std::string Join(const std::string& dir, const std::string& file) {
  return (std::filesystem::path(dir) / file).string();
}

}  // namespace

absl::StatusOr<KeyType> ParseKeyType(std::string_view text) {
  if (text == "ec-p256") return KeyType::kEcP256;
  if (text == "ed25519") return KeyType::kEd25519;
  return absl::InvalidArgumentError(StrCat("unknown key type '", text, "' (ec-p256 or ed25519)"));
}

absl::Status ValidateName(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("the name is empty");
  if (name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(StrCat("name '", name, "' is longer than ", kMaxNameLength, " characters"));
  }
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          StrCat("name '", name, "' has a character outside [A-Za-z0-9._-]: '", std::string(1, c), "'"));
    }
  }
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) {
    return absl::InvalidArgumentError(StrCat("name '", name, "' must start with a letter or digit"));
  }
  if (name.size() == 2 && std::tolower(static_cast<unsigned char>(name[0])) == 'c' &&
      std::tolower(static_cast<unsigned char>(name[1])) == 'a') {
    return absl::InvalidArgumentError("name 'ca' is reserved for the federation's CA");
  }
  return absl::OkStatus();
}

absl::StatusOr<CertAndKey> CreateCa(const CaOptions& options) {
  if (options.common_name.empty() || options.common_name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(StrCat("the CA's name must be 1 to ", kMaxNameLength, " characters"));
  }
  TESSERA_ASSIGN_OR_RETURN(auto window, Window(options.validity));
  TESSERA_ASSIGN_OR_RETURN(EvpPkeyPtr key, GenerateKey(options.key_type));
  TESSERA_ASSIGN_OR_RETURN(X509Ptr cert, NewCertificate(key.get(), options.common_name, window.first, window.second));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1) return Internal("cannot set the issuer");
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  // pathlen 0: the CA signs end-entity certificates only, never another CA.
  TESSERA_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  TESSERA_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
  TESSERA_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  TESSERA_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(cert.get(), key.get(), DigestFor(key.get())) <= 0) return Internal("cannot sign the CA certificate");
  return ToPem(cert.get(), key.get());
}

absl::StatusOr<CertAndKey> IssueCertificate(const CertAndKey& ca, const IssueOptions& options) {
  TESSERA_RETURN_IF_ERROR(ValidateName(options.name));
  if (!options.server && !options.extra_sans.empty()) {
    // A second SAN would be a second identity the coordinator accepts for this certificate.
    return absl::InvalidArgumentError("extra subjectAltNames are for server certificates only");
  }
  std::vector<std::string> sans = {StrCat("DNS:", options.name)};
  if (options.server) {
    std::vector<std::string> hosts = {"localhost", "127.0.0.1"};
    hosts.insert(hosts.end(), options.extra_sans.begin(), options.extra_sans.end());
    for (const auto& h : hosts) {
      TESSERA_ASSIGN_OR_RETURN(std::string entry, SanEntry(h));
      if (std::find(sans.begin(), sans.end(), entry) == sans.end()) sans.push_back(std::move(entry));
    }
  }
  TESSERA_ASSIGN_OR_RETURN(auto window, Window(options.validity));

  TESSERA_ASSIGN_OR_RETURN(X509Ptr ca_cert, ParseCertificate(ca.cert_pem));
  TESSERA_ASSIGN_OR_RETURN(EvpPkeyPtr ca_key, ParsePrivateKey(ca.key_pem));
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    return OpenSslError(absl::StatusCode::kInvalidArgument, "the CA key does not belong to the CA certificate");
  }
  if ((X509_get_extension_flags(ca_cert.get()) & EXFLAG_CA) == 0) {
    return absl::InvalidArgumentError("the CA certificate is not a CA (basicConstraints CA:TRUE)");
  }
  const absl::Time ca_not_after = ToTime(X509_get0_notAfter(ca_cert.get()));
  if (ca_not_after <= absl::Now()) {
    return absl::FailedPreconditionError(
        StrCat("the CA certificate expired at ", absl::FormatTime(ca_not_after, absl::UTCTimeZone())));
  }
  window.second = std::min(window.second, ca_not_after);

  TESSERA_ASSIGN_OR_RETURN(EvpPkeyPtr key, GenerateKey(options.key_type));
  TESSERA_ASSIGN_OR_RETURN(X509Ptr cert, NewCertificate(key.get(), options.name, window.first, window.second));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get())) != 1) {
    return Internal("cannot set the issuer");
  }
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca_cert.get(), cert.get(), nullptr, nullptr, 0);
  TESSERA_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
  TESSERA_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature"));
  TESSERA_RETURN_IF_ERROR(
      AddExtension(cert.get(), &ctx, NID_ext_key_usage, options.server ? "serverAuth" : "clientAuth"));
  std::string san;
  for (const auto& s : sans) san += (san.empty() ? "" : ",") + s;
  TESSERA_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_alt_name, san));
  TESSERA_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  TESSERA_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(cert.get(), ca_key.get(), DigestFor(ca_key.get())) <= 0) return Internal("cannot sign the certificate");
  return ToPem(cert.get(), key.get());
}

absl::StatusOr<CertInfo> DescribeCertificate(std::string_view cert_pem) {
  TESSERA_ASSIGN_OR_RETURN(X509Ptr cert, ParseCertificate(cert_pem));
  return Describe(cert.get());
}

absl::StatusOr<WrittenFiles> InitCaDirectory(const std::string& dir, const CaOptions& options, bool overwrite) {
  if (dir.empty()) return absl::InvalidArgumentError("the directory is empty");
  std::error_code ec;
  const auto status = std::filesystem::status(dir, ec);
  if (status.type() == std::filesystem::file_type::not_found) {
    // 0700: the directory holds the CA's key.
    if (!std::filesystem::create_directories(dir, ec) && ec) {
      return absl::PermissionDeniedError(StrCat("cannot create ", dir, ": ", ec.message()));
    }
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  } else if (status.type() != std::filesystem::file_type::directory) {
    return absl::InvalidArgumentError(StrCat(dir, " is not a directory"));
  }
  WrittenFiles out{Join(dir, "ca.pem"), Join(dir, "ca.key"), {}};
  TESSERA_RETURN_IF_ERROR(RefuseExisting({out.cert_path, out.key_path}, overwrite));
  TESSERA_ASSIGN_OR_RETURN(CertAndKey ca, CreateCa(options));
  TESSERA_RETURN_IF_ERROR(WritePair(ca, out.cert_path, out.key_path, overwrite));
  TESSERA_ASSIGN_OR_RETURN(out.info, DescribeCertificate(ca.cert_pem));
  return out;
}

absl::StatusOr<WrittenFiles> IssueToDirectory(const std::string& dir, const IssueOptions& options, bool overwrite) {
  TESSERA_RETURN_IF_ERROR(ValidateName(options.name));
  if (dir.empty()) return absl::InvalidArgumentError("the directory is empty");
  const std::string ca_cert_path = Join(dir, "ca.pem"), ca_key_path = Join(dir, "ca.key");
  if (!std::filesystem::exists(ca_cert_path) || !std::filesystem::exists(ca_key_path)) {
    return absl::NotFoundError(StrCat("no CA in ", dir, " (ca.pem and ca.key): create one first"));
  }
  WrittenFiles out{Join(dir, options.name + ".pem"), Join(dir, options.name + ".key"), {}};
  TESSERA_RETURN_IF_ERROR(RefuseExisting({out.cert_path, out.key_path}, overwrite));
  CertAndKey ca;
  TESSERA_ASSIGN_OR_RETURN(ca.cert_pem, core::ReadFile(ca_cert_path, 1 << 20));
  {
    TESSERA_ASSIGN_OR_RETURN(std::string key, core::ReadFile(ca_key_path, 1 << 20));
    ca.key_pem = SecretBytes::Copy(Bytes(key));
    Cleanse(key.data(), key.size());
  }
  TESSERA_ASSIGN_OR_RETURN(CertAndKey issued, IssueCertificate(ca, options));
  TESSERA_RETURN_IF_ERROR(WritePair(issued, out.cert_path, out.key_path, overwrite));
  TESSERA_ASSIGN_OR_RETURN(out.info, DescribeCertificate(issued.cert_pem));
  return out;
}

}  // namespace tessera::security::tls
