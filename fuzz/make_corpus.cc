// Writes the seed corpus of every fuzz target with Tessera's own encoders:
//   build-fuzz/make_corpus fuzz/corpus
// makes fuzz/corpus/<target>/<seed>. The seeds are small valid inputs (and a few near misses)
// from which libFuzzer's mutations reach the decoders' deeper branches quickly. The output is
// deterministic except for the Shamir shares (their polynomials come from the CSPRNG), so the
// checked-in corpus only changes when this program does.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/proto_convert.h"
#include "core/safetensors.h"
#include "security/secagg/shamir.h"
#include "security/secagg/wire.h"

namespace {

namespace fs = std::filesystem;
using tessera::core::DType;
using tessera::core::ModelWeights;
using tessera::core::NamedTensor;

fs::path g_root;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(g_root / target);
  std::ofstream out(g_root / target / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s/%s\n", target.c_str(), name.c_str());
    std::exit(1);
  }
}

std::string AsString(std::span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

NamedTensor Tensor(const std::string& name, std::vector<int64_t> shape, DType dtype) {
  NamedTensor t(name, std::move(shape), dtype);
  auto bytes = t.mutable_bytes();
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 1);
  return t;
}

ModelWeights TwoTensors() {
  ModelWeights w;
  w.tensors.push_back(Tensor("fc.weight", {2, 3}, DType::kFloat32));
  w.tensors.push_back(Tensor("fc.bias", {2}, DType::kFloat32));
  return w;
}

ModelWeights EveryDType() {
  ModelWeights w;
  w.tensors.push_back(Tensor("f64", {1, 2}, DType::kFloat64));
  w.tensors.push_back(Tensor("i64", {2}, DType::kInt64));
  w.tensors.push_back(Tensor("i32", {3}, DType::kInt32));
  w.tensors.push_back(Tensor("u8", {2, 2}, DType::kUInt8));
  w.tensors.push_back(Tensor("scalar", {}, DType::kFloat32));
  return w;
}

std::string Gzip(const std::string& raw) {
  z_stream zs{};
  if (deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&zs, raw.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string BigEndian32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string Idx(const std::vector<uint32_t>& dims) {
  std::string s = BigEndian32(0x0800 | static_cast<uint32_t>(dims.size()));
  size_t n = 1;
  for (uint32_t d : dims) {
    s += BigEndian32(d);
    n *= d;
  }
  for (size_t i = 0; i < n; ++i) s += static_cast<char>(i * 37 % 251);
  return s;
}

void Model() {
  Write("model", "two_tensors", tessera::core::SerializeModel(TwoTensors()));
  Write("model", "every_dtype", tessera::core::SerializeModel(EveryDType()));
  ModelWeights bad = TwoTensors();
  bad.tensors[1] = Tensor("fc.weight", {1}, DType::kFloat32);  // duplicate name
  Write("model", "duplicate_name", tessera::core::SerializeModel(bad));
  ModelWeights empty;
  empty.tensors.push_back(Tensor("empty", {0, 4}, DType::kFloat32));
  Write("model", "zero_size_tensor", tessera::core::SerializeModel(empty));
}

void Safetensors() {
  Write("safetensors", "two_tensors", tessera::core::EncodeSafetensors(TwoTensors()));
  Write("safetensors", "every_dtype_metadata",
        tessera::core::EncodeSafetensors(EveryDType(), {{"format", "pt"}, {"round", "3"}}));
  Write("safetensors", "empty", tessera::core::EncodeSafetensors({}));
  // Written by hand: zero-size tensors (one sharing its offset with another tensor's data).
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("c":{"dtype":"I32","shape":[0],"data_offsets":[2,2]}})";
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  Write("safetensors", "zero_size_tensors", file + header + "xy");
}

void ChunkAssembler() {
  // The target reads its input through FuzzedDataProvider; random bytes of a few lengths give
  // libFuzzer starting points with several operations each.
  std::mt19937 rng(20240601);
  for (size_t len : {16, 96, 600, 3000}) {
    std::string s(len, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    Write("chunk_assembler", "random_" + std::to_string(len), s);
  }
}

void SecAggWire() {
  using namespace tessera::security::secagg;  // NOLINT
  tessera::security::PublicKey k1{}, k2{};
  for (size_t i = 0; i < k1.size(); ++i) {
    k1[i] = static_cast<uint8_t>(i);
    k2[i] = static_cast<uint8_t>(255 - i);
  }
  Write("secagg_wire", "request_advertise_keys", SerializeRequest({AdvertiseKeys{k1, k2}}));
  Write("secagg_wire", "request_share_keys",
        SerializeRequest({ShareKeys{{{2, {1, 2, 3, 4}}, {3, {5, 6}}}}}));
  Write("secagg_wire", "request_masked_input",
        SerializeRequest({MaskedInput{{1, 2, 0xffffffffffffffffull}}}));
  UnmaskingResponse unmask;
  tessera::security::ShamirShare share;
  share.x = 2;
  share.y = {7, 8, 9};
  unmask.self_mask_shares[2] = share;
  share.x = 3;
  unmask.key_shares[4] = share;
  Write("secagg_wire", "request_unmasking", SerializeRequest({std::move(unmask)}));
  KeysBroadcast keys;
  keys.neighbours[2] = AdvertiseKeys{k1, k2};
  keys.neighbours[5] = AdvertiseKeys{k2, k1};
  Write("secagg_wire", "reply_keys", SerializeReply({std::move(keys)}));
  Write("secagg_wire", "reply_shares", SerializeReply({SharesForClient{{{1, {9, 8, 7}}}}}));
  Write("secagg_wire", "reply_unmasking_request", SerializeReply({UnmaskingRequest{{1, 3}, {2}}}));
  Write("secagg_wire", "reply_done", SerializeReply({std::monostate{}}));
}

void Idx() {
  const std::string labels = Idx({10});
  const std::string images = Idx({2, 3, 3});
  Write("idx", "labels", labels);
  Write("idx", "images", images);
  Write("idx", "labels.gz", Gzip(labels));
  Write("idx", "images.gz", Gzip(images));
  Write("idx", "images_two_members.gz", Gzip(images.substr(0, 10)) + Gzip(images.substr(10)));
  Write("idx", "images_truncated", images.substr(0, images.size() - 1));
}

void ShamirShares() {
  std::vector<uint8_t> secret(32);
  for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<uint8_t>(i * 11);
  auto shares = tessera::security::ShamirSplit(secret, 3, 5);
  if (!shares.ok()) std::abort();
  Write("shamir_share", "secret32_x1", AsString(SerializeShare((*shares)[0]).span()));
  Write("shamir_share", "secret32_x5", AsString(SerializeShare((*shares)[4]).span()));
  auto small = tessera::security::ShamirSplit(std::vector<uint8_t>{1, 2, 3, 4}, 1, 1);
  if (!small.ok()) std::abort();
  Write("shamir_share", "secret4_x1", AsString(SerializeShare((*small)[0]).span()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  Model();
  Safetensors();
  ChunkAssembler();
  SecAggWire();
  Idx();
  ShamirShares();
  return 0;
}
