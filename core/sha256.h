// SHA-256 through OpenSSL's EVP interface.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace tessera::core {

// Incremental SHA-256. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view data);
  // The 32-byte digest; the hasher is spent afterwards.
  std::string Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Digest(std::string_view data);  // 32 raw bytes
std::string HexEncode(std::string_view bytes);

}  // namespace tessera::core
