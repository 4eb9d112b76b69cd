#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "security/crypto/aead.h"
#include "security/crypto/hkdf.h"
#include "security/crypto/prg.h"
#include "security/crypto/secure_bytes.h"
#include "security/crypto/x25519.h"
#include "tests/testing/status_macros.h"

namespace tessera::security {
namespace {

std::vector<uint8_t> FromHex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

PublicKey KeyFromHex(std::string_view hex) {
  std::vector<uint8_t> bytes = FromHex(hex);
  PublicKey key{};
  EXPECT_EQ(bytes.size(), key.size());
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return key;
}

std::vector<uint8_t> Bytes(std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); }

std::vector<uint8_t> ToVector(const SecretBytes& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

// ---- SecretBytes and the CSPRNG ----

TEST(SecretBytesTest, CopyMoveAndCompare) {
  const std::vector<uint8_t> raw = {1, 2, 3, 4};
  SecretBytes a = SecretBytes::Copy(raw);
  EXPECT_EQ(ToVector(a), raw);
  SecretBytes b = std::move(a);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_EQ(b.size(), 4u);
  EXPECT_TRUE(b == SecretBytes::Copy(raw));
  EXPECT_FALSE(b == SecretBytes::Copy(std::vector<uint8_t>{1, 2, 3, 5}));
  SecretBytes c(2);
  c = std::move(b);
  EXPECT_EQ(ToVector(c), raw);
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)
}

TEST(RandomTest, DrawsDiffer) {
  std::array<uint8_t, 32> a{}, b{};
  ASSERT_OK(RandomBytes(a));
  ASSERT_OK(RandomBytes(b));
  EXPECT_NE(a, b);
  ASSERT_OK_AND_ASSIGN(uint64_t x, RandomUint64());
  ASSERT_OK_AND_ASSIGN(uint64_t y, RandomUint64());
  EXPECT_NE(x, y);
}

// ---- X25519 ----

TEST(X25519Test, TwoPartiesAgree) {
  ASSERT_OK_AND_ASSIGN(X25519KeyPair alice, X25519KeyPair::Generate());
  ASSERT_OK_AND_ASSIGN(X25519KeyPair bob, X25519KeyPair::Generate());
  EXPECT_NE(alice.public_key(), bob.public_key());
  ASSERT_OK_AND_ASSIGN(SecretBytes ab, alice.Agree(bob.public_key()));
  ASSERT_OK_AND_ASSIGN(SecretBytes ba, bob.Agree(alice.public_key()));
  EXPECT_EQ(ab.size(), kX25519KeyBytes);
  EXPECT_TRUE(ab == ba);
}

// RFC 7748, section 6.1.
TEST(X25519Test, Rfc7748TestVector) {
  const auto alice_priv =
      FromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const auto bob_priv = FromHex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  ASSERT_OK_AND_ASSIGN(X25519KeyPair alice, X25519KeyPair::FromPrivate(alice_priv));
  ASSERT_OK_AND_ASSIGN(X25519KeyPair bob, X25519KeyPair::FromPrivate(bob_priv));
  EXPECT_EQ(alice.public_key(),
            KeyFromHex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
  EXPECT_EQ(bob.public_key(),
            KeyFromHex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
  const auto shared = FromHex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  ASSERT_OK_AND_ASSIGN(SecretBytes ab, alice.Agree(bob.public_key()));
  ASSERT_OK_AND_ASSIGN(SecretBytes ba, bob.Agree(alice.public_key()));
  EXPECT_EQ(ToVector(ab), shared);
  EXPECT_EQ(ToVector(ba), shared);
  EXPECT_EQ(ToVector(alice.private_key()), alice_priv);
}

TEST(X25519Test, PrivateKeyRoundTripsThroughFromPrivate) {
  ASSERT_OK_AND_ASSIGN(X25519KeyPair a, X25519KeyPair::Generate());
  SecretBytes priv = a.private_key();
  ASSERT_EQ(priv.size(), kX25519KeyBytes);
  ASSERT_OK_AND_ASSIGN(X25519KeyPair b, X25519KeyPair::FromPrivate(priv));
  EXPECT_EQ(a.public_key(), b.public_key());
}

TEST(X25519Test, RefusesSmallOrderPeerKeys) {
  ASSERT_OK_AND_ASSIGN(X25519KeyPair a, X25519KeyPair::Generate());
  EXPECT_CODE(a.Agree(PublicKey{}), absl::StatusCode::kInvalidArgument);  // all zero
  // u = 1 (order 4) and the order-8 point of RFC 7748 / libsodium's blocklist: each forces the
  // all-zero shared secret.
  EXPECT_CODE(a.Agree(KeyFromHex("0100000000000000000000000000000000000000000000000000000000000000")),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(a.Agree(KeyFromHex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")),
              absl::StatusCode::kInvalidArgument);
}

TEST(X25519Test, FromPrivateRefusesWrongLength) {
  std::vector<uint8_t> short_key(31, 7);
  EXPECT_CODE(X25519KeyPair::FromPrivate(short_key), absl::StatusCode::kInvalidArgument);
}

// ---- HKDF ----

// RFC 5869, appendix A.1 (test case 1).
TEST(HkdfTest, Rfc5869TestCase1) {
  const std::vector<uint8_t> ikm(22, 0x0b);
  const auto salt = FromHex("000102030405060708090a0b0c");
  const auto info = FromHex("f0f1f2f3f4f5f6f7f8f9");
  ASSERT_OK_AND_ASSIGN(
      SecretBytes okm,
      HkdfSha256(ikm, salt, std::string_view(reinterpret_cast<const char*>(info.data()), info.size()),
                 42));
  EXPECT_EQ(ToVector(okm), FromHex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                                   "34007208d5b887185865"));
}

// RFC 5869, appendix A.3 (test case 3): empty salt and info.
TEST(HkdfTest, Rfc5869TestCase3EmptySaltAndInfo) {
  const std::vector<uint8_t> ikm(22, 0x0b);
  ASSERT_OK_AND_ASSIGN(SecretBytes okm, HkdfSha256(ikm, {}, "", 42));
  EXPECT_EQ(ToVector(okm), FromHex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                                   "9d201395faa4b61a96c8"));
}

TEST(HkdfTest, InfoSeparatesKeys) {
  const std::vector<uint8_t> ikm(32, 1);
  ASSERT_OK_AND_ASSIGN(SecretBytes a, HkdfSha256(ikm, {}, "tessera/secagg/s1/1->2/mask", 32));
  ASSERT_OK_AND_ASSIGN(SecretBytes b, HkdfSha256(ikm, {}, "tessera/secagg/s1/2->1/mask", 32));
  EXPECT_FALSE(a == b);
}

TEST(HkdfTest, RefusesBadArguments) {
  const std::vector<uint8_t> ikm(32, 1);
  EXPECT_CODE(HkdfSha256(ikm, {}, "x", 0), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(HkdfSha256(ikm, {}, "x", 255 * 32 + 1), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(HkdfSha256({}, {}, "x", 32), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(HkdfSha256(ikm, {}, std::string(kHkdfMaxInfoBytes + 1, 'i'), 32),
              absl::StatusCode::kInvalidArgument);
  EXPECT_OK(HkdfSha256(ikm, {}, "x", 255 * 32));
}

// ---- AEAD ----

class AeadTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_OK(RandomBytes(key_)); }
  std::array<uint8_t, 32> key_{};
  const std::vector<uint8_t> aad_ = Bytes("session=7|round=3|from=1|to=2");
  const std::vector<uint8_t> plaintext_ = Bytes("two Shamir shares, 80 bytes or so");
};

TEST_F(AeadTest, RoundTrip) {
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> sealed, AeadSeal(key_, aad_, plaintext_));
  EXPECT_EQ(sealed.size(), plaintext_.size() + kAeadOverheadBytes);
  ASSERT_OK_AND_ASSIGN(SecretBytes opened, AeadOpen(key_, aad_, sealed));
  EXPECT_EQ(ToVector(opened), plaintext_);
}

TEST_F(AeadTest, EmptyPlaintextRoundTrips) {
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> sealed, AeadSeal(key_, aad_, {}));
  EXPECT_EQ(sealed.size(), kAeadOverheadBytes);
  ASSERT_OK_AND_ASSIGN(SecretBytes opened, AeadOpen(key_, aad_, sealed));
  EXPECT_TRUE(opened.empty());
}

TEST_F(AeadTest, FreshIvEachTime) {
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> a, AeadSeal(key_, aad_, plaintext_));
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> b, AeadSeal(key_, aad_, plaintext_));
  EXPECT_NE(a, b);
}

TEST_F(AeadTest, AnyTamperedByteIsDataLoss) {
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> sealed, AeadSeal(key_, aad_, plaintext_));
  // IV, first and last ciphertext byte, first and last tag byte.
  for (size_t pos : {size_t{0}, kAeadIvBytes - 1, kAeadIvBytes, sealed.size() - kAeadTagBytes - 1,
                     sealed.size() - kAeadTagBytes, sealed.size() - 1}) {
    std::vector<uint8_t> bad = sealed;
    bad[pos] ^= 0x01;
    SCOPED_TRACE(pos);
    EXPECT_CODE(AeadOpen(key_, aad_, bad), absl::StatusCode::kDataLoss);
  }
  std::vector<uint8_t> bad_aad = aad_;
  bad_aad.back() ^= 0x80;
  EXPECT_CODE(AeadOpen(key_, bad_aad, sealed), absl::StatusCode::kDataLoss);
  EXPECT_CODE(AeadOpen(key_, {}, sealed), absl::StatusCode::kDataLoss);
  std::vector<uint8_t> truncated(sealed.begin(), sealed.end() - 1);
  EXPECT_CODE(AeadOpen(key_, aad_, truncated), absl::StatusCode::kDataLoss);
  std::vector<uint8_t> too_short(sealed.begin(), sealed.begin() + kAeadOverheadBytes - 1);
  EXPECT_CODE(AeadOpen(key_, aad_, too_short), absl::StatusCode::kDataLoss);
}

TEST_F(AeadTest, WrongKeyIsDataLoss) {
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> sealed, AeadSeal(key_, aad_, plaintext_));
  std::array<uint8_t, 32> other = key_;
  other[31] ^= 0x80;
  EXPECT_CODE(AeadOpen(other, aad_, sealed), absl::StatusCode::kDataLoss);
}

TEST_F(AeadTest, KeyOfWrongLengthIsInvalidArgument) {
  std::vector<uint8_t> key16(16, 1);
  EXPECT_CODE(AeadSeal(key16, aad_, plaintext_), absl::StatusCode::kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> sealed, AeadSeal(key_, aad_, plaintext_));
  EXPECT_CODE(AeadOpen(key16, aad_, sealed), absl::StatusCode::kInvalidArgument);
}

// ---- Mask PRG ----

std::array<uint8_t, 32> TestKey(uint8_t seed) {
  std::array<uint8_t, 32> key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  return key;
}

std::vector<uint64_t> Stream(std::span<const uint8_t> key, size_t n) {
  auto prg = MaskPrg::Create(key);
  EXPECT_TRUE(prg.ok());
  std::vector<uint64_t> out(n);
  prg->Fill(out);
  return out;
}

// AES-256-CTR of n * 8 zero bytes with a zero IV, by a separate plain EVP call, read as
// little-endian words.
std::vector<uint64_t> ReferenceStream(std::span<const uint8_t> key, size_t n) {
  std::vector<uint8_t> zeros(n * 8, 0), ct(n * 8, 0);
  const uint8_t iv[16] = {};
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int len = 0;
  EXPECT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_256_ctr(), nullptr, key.data(), iv), 1);
  EXPECT_EQ(EVP_EncryptUpdate(ctx, ct.data(), &len, zeros.data(), static_cast<int>(zeros.size())), 1);
  EVP_CIPHER_CTX_free(ctx);
  std::vector<uint64_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    uint64_t w = 0;
    for (int b = 0; b < 8; ++b) w |= static_cast<uint64_t>(ct[8 * i + b]) << (8 * b);
    out[i] = w;
  }
  return out;
}

TEST(MaskPrgTest, EqualsAes256CtrOfZeros) {
  const auto key = TestKey(1);
  const size_t n = 100'003;  // several 64 KiB chunks and a ragged end
  EXPECT_EQ(Stream(key, n), ReferenceStream(key, n));
}

TEST(MaskPrgTest, SameKeySameStream) {
  const auto key = TestKey(2);
  EXPECT_EQ(Stream(key, 5000), Stream(key, 5000));
}

TEST(MaskPrgTest, SplitFillsContinueTheStream) {
  const auto key = TestKey(3);
  const std::vector<uint64_t> whole = Stream(key, 20'000);
  ASSERT_OK_AND_ASSIGN(MaskPrg prg, MaskPrg::Create(key));
  std::vector<uint64_t> pieces;
  for (size_t n : {size_t{1}, size_t{3}, size_t{8191}, size_t{5}, size_t{11'800}}) {  // odd words
    std::vector<uint64_t> part(n);
    prg.Fill(part);
    pieces.insert(pieces.end(), part.begin(), part.end());
  }
  EXPECT_EQ(pieces, whole);
}

TEST(MaskPrgTest, KeysDifferingInTheTopBitGiveUnrelatedStreams) {
  const auto key = TestKey(4);
  for (auto flip : {std::pair<size_t, uint8_t>{31, 0x80}, std::pair<size_t, uint8_t>{0, 0x01}}) {
    auto other = key;
    other[flip.first] ^= flip.second;
    const auto a = Stream(key, 1000);
    const auto b = Stream(other, 1000);
    int differ = 0;
    for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
    EXPECT_GT(differ, 990);
  }
}

TEST(MaskPrgTest, AddToAndSubtractFromMatchFillModulo) {
  const auto key = TestKey(5);
  const size_t n = 9000;  // crosses the AddTo block size
  const std::vector<uint64_t> stream = Stream(key, n);
  for (int k : {20, 32, 64}) {
    const uint64_t mask = k == 64 ? ~uint64_t{0} : (uint64_t{1} << k) - 1;
    std::vector<uint64_t> acc(n);
    for (size_t i = 0; i < n; ++i) acc[i] = (i * 0x9e3779b97f4a7c15ULL) & mask;
    const std::vector<uint64_t> original = acc;
    ASSERT_OK_AND_ASSIGN(MaskPrg add, MaskPrg::Create(key));
    add.AddTo(acc, mask);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(acc[i], (original[i] + stream[i]) & mask) << "k=" << k << " i=" << i;
    }
    ASSERT_OK_AND_ASSIGN(MaskPrg sub, MaskPrg::Create(key));
    sub.SubtractFrom(acc, mask);
    EXPECT_EQ(acc, original) << "k=" << k;
  }
}

TEST(MaskPrgTest, RefusesKeyOfWrongLength) {
  std::vector<uint8_t> key(16, 1);
  EXPECT_CODE(MaskPrg::Create(key), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::security
