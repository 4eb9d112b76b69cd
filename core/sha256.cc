#include "core/sha256.h"

#include <openssl/evp.h>

#include <cstdlib>

namespace tessera::core {

struct Sha256::Impl {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  // Failure here means OpenSSL itself is broken: an invariant, not input.
  if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx.get(), EVP_sha256(), nullptr) != 1) std::abort();
}
Sha256::~Sha256() = default;

void Sha256::Update(std::string_view data) {
  if (EVP_DigestUpdate(impl_->ctx.get(), data.data(), data.size()) != 1) std::abort();
}

std::string Sha256::Finish() {
  std::string out(32, '\0');
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len) !=
          1 ||
      len != 32) {
    std::abort();
  }
  return out;
}

std::string Sha256Digest(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.Finish();
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace tessera::core
