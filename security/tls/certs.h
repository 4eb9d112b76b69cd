// The federation's X.509 material for mutual TLS (SECURITY.md, "Transport and identity"): a CA,
// and the certificates it issues to the coordinator and to each client.
//
// A client's certificate names the client id twice: as its subject CN and as its only
// subjectAltName (DNS:<id>). gRPC reports the SANs of a peer certificate as the peer identity
// (the CN only when there is no SAN), and the coordinator binds the claimed client id to it, so a
// certificate is good for exactly one id. Client certificates carry extendedKeyUsage clientAuth
// and server certificates serverAuth only, so neither can stand in for the other.
//
// Everything goes through OpenSSL 3's EVP and X509 APIs. Private keys are PKCS#8 PEM without a
// passphrase, written with mode 0600 and never logged; in memory they sit in SecretBytes.
// The functions are thread-safe (they share no state).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "security/crypto/secure_bytes.h"

namespace tessera::security::tls {

enum class KeyType { kEcP256, kEd25519 };

// "ec-p256" or "ed25519"; INVALID_ARGUMENT otherwise.
absl::StatusOr<KeyType> ParseKeyType(std::string_view text);

// When a certificate is valid: from `not_before` (default: 5 minutes ago, for clock skew) for
// `days` days (1 to 36500). A window entirely in the past is allowed: tests need expired
// certificates.
struct Validity {
  std::optional<absl::Time> not_before;
  int days = 365;
};

struct CaOptions {
  std::string common_name = "Tessera federation CA";
  KeyType key_type = KeyType::kEcP256;
  Validity validity{std::nullopt, 3650};
};

struct IssueOptions {
  // The subject CN, and for a client its id: see ValidateName.
  std::string name;
  // A coordinator's certificate: SAN DNS:<name>, DNS:localhost, IP:127.0.0.1 and `extra_sans`,
  // extendedKeyUsage serverAuth. Otherwise a client's: SAN DNS:<name> only, clientAuth.
  bool server = false;
  // Host names or IP addresses (v4 or v6) the coordinator is reached at. Server only.
  std::vector<std::string> extra_sans;
  KeyType key_type = KeyType::kEcP256;
  // Clamped to end no later than the CA certificate.
  Validity validity;
};

// A PEM certificate and its PEM private key. The key is wiped from memory when freed.
struct CertAndKey {
  std::string cert_pem;
  SecretBytes key_pem;
};

// What a certificate says, for printing and checking.
struct CertInfo {
  std::string common_name;
  std::vector<std::string> subject_alt_names;  // "DNS:name", "IP:127.0.0.1", in certificate order
  absl::Time not_before;
  absl::Time not_after;
  bool is_ca = false;
  std::string sha256_fingerprint;  // "AB:CD:..." over the DER encoding
};

// OK for a name a certificate may be issued to: 1 to 64 characters from [A-Za-z0-9._-], starting
// with a letter or digit, and not "ca" in any case (DIR/ca.pem is the CA). INVALID_ARGUMENT
// otherwise, naming the offending character.
absl::Status ValidateName(std::string_view name);

// A self-signed CA certificate (basicConstraints critical CA:TRUE, pathlen 0; keyUsage critical
// keyCertSign, cRLSign) and its fresh key. INVALID_ARGUMENT for bad options; INTERNAL if OpenSSL
// fails.
absl::StatusOr<CertAndKey> CreateCa(const CaOptions& options);

// A fresh key and a certificate for it signed by `ca`. INVALID_ARGUMENT for a bad name, SAN or
// validity, or a CA whose certificate and key do not belong together or that is not a CA;
// FAILED_PRECONDITION when the CA certificate has expired; INTERNAL if OpenSSL fails.
absl::StatusOr<CertAndKey> IssueCertificate(const CertAndKey& ca, const IssueOptions& options);

// INVALID_ARGUMENT unless `cert_pem` holds a PEM certificate.
absl::StatusOr<CertInfo> DescribeCertificate(std::string_view cert_pem);

// ------------------------------------------------------------------ a federation's directory
// DIR/ca.pem and DIR/ca.key (the CA), DIR/<name>.pem and DIR/<name>.key (what it issued).
// Certificates are written with mode 0644, keys with 0600; each file is written to a temporary
// file, fsynced and then moved into place, so a file is either complete or absent.

struct WrittenFiles {
  std::string cert_path;
  std::string key_path;
  CertInfo info;
};

// Creates the CA in `dir` (created with mode 0700 when missing). ALREADY_EXISTS, and nothing is
// written, when ca.pem or ca.key exists and `overwrite` is false. INVALID_ARGUMENT when `dir`
// is not a directory; PERMISSION_DENIED or INTERNAL when a file cannot be written.
absl::StatusOr<WrittenFiles> InitCaDirectory(const std::string& dir, const CaOptions& options, bool overwrite);

// Issues `options.name`'s key and certificate with the CA in `dir`. NOT_FOUND when `dir` has no
// CA; ALREADY_EXISTS (nothing written) when <name>.pem or <name>.key exists and `overwrite` is
// false; otherwise as IssueCertificate and InitCaDirectory.
absl::StatusOr<WrittenFiles> IssueToDirectory(const std::string& dir, const IssueOptions& options, bool overwrite);

}  // namespace tessera::security::tls
