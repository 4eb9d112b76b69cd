// TorchScript export as a user without Tessera meets it: each zoo architecture and a TorchScript
// one, exported with Fashion-MNIST's normalization inside, loaded by Python's torch.jit.load and
// run on raw pixels, must give the logits TorchTrainer::Predict gives on the pixels the IDX
// reader normalized (within 1e-5). Skips only when /usr/bin/python3 cannot import torch.
#include "client/torch/torch_export.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "client/data/idx_reader.h"
#include "client/torch/torch_trainer.h"
#include "core/strings.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace tessera::client::torch {
namespace {

using namespace std::chrono_literals;

const std::string kPython = "/usr/bin/python3";
const std::string kRunner = TESSERA_SOURCE_DIR "/tests/data/run_torchscript.py";
const std::string kTinyScripted = TESSERA_SOURCE_DIR "/tests/data/tiny_mlp_scripted.pt";
constexpr int kExamples = 16;

// Runs /usr/bin/python3 with `args`; the exit code (-1 when it did not end within two minutes).
int RunPython(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv = {kPython};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::Subprocess p(argv, log);
  if (!p.started()) return -1;
  return p.Wait(120s).value_or(-1);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBigEndian32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

struct RawImages {
  std::vector<uint8_t> pixels;  // kExamples x side x side
  Dataset dataset;              // the same images as the IDX reader normalizes them
};

// Random raw images written as IDX files and read back with Fashion-MNIST's preprocessing.
RawImages MakeImages(const testutil::ScopedTempDir& dir, int side) {
  RawImages out;
  std::mt19937 gen(42);
  std::uniform_int_distribution<int> pixel(0, 255);
  out.pixels.resize(static_cast<size_t>(kExamples * side * side));
  for (auto& p : out.pixels) p = static_cast<uint8_t>(pixel(gen));
  std::string images, labels;
  WriteBigEndian32(images, 0x00000803);
  for (uint32_t d : {uint32_t{kExamples}, uint32_t(side), uint32_t(side)}) WriteBigEndian32(images, d);
  images.append(out.pixels.begin(), out.pixels.end());
  WriteBigEndian32(labels, 0x00000801);
  WriteBigEndian32(labels, kExamples);
  for (int i = 0; i < kExamples; ++i) labels.push_back(static_cast<char>(i % 10));
  std::ofstream(dir.Join("images.idx"), std::ios::binary) << images;
  std::ofstream(dir.Join("labels.idx"), std::ios::binary) << labels;
  auto dataset = ReadIdxDataset(dir.Join("images.idx"), dir.Join("labels.idx"), FashionMnistPreprocessing(), 10);
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  if (dataset.ok()) out.dataset = *std::move(dataset);
  return out;
}

// Moves every weight a little so that a module that ignored them could not pass.
void Perturb(core::ModelWeights& weights) {
  for (auto& t : weights.tensors) {
    auto values = t.mutable_f32();
    for (size_t i = 0; i < values.size(); ++i) values[i] += 0.01f * static_cast<float>(i % 7) - 0.03f;
  }
}

}  // namespace

// Names the parameter in test output.
void PrintTo(const ModelSpec& spec, std::ostream* os) { *os << spec.architecture; }

namespace {

bool PythonHasTorch(const std::string& log) { return RunPython({"-c", "import torch"}, log) == 0; }

class TorchExportTest : public ::testing::TestWithParam<ModelSpec> {};

TEST_P(TorchExportTest, PythonGivesTheTrainersLogitsOnRawInputs) {
  testutil::ScopedTempDir dir;
  if (!PythonHasTorch(dir.Join("python.log"))) {
    GTEST_SKIP() << kPython << " cannot import torch (install python3-torch): " << Slurp(dir.Join("python.log"));
  }
  const ModelSpec spec = GetParam();
  const int side = static_cast<int>(spec.input_shape.back());
  const RawImages images = MakeImages(dir, side);
  ASSERT_EQ(images.dataset.size(), kExamples);

  auto weights = InitialWeights(spec, 7);
  ASSERT_TRUE(weights.ok()) << weights.status();
  Perturb(*weights);
  auto trainer = TorchTrainer::Create(spec, {}, {});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto expected = (*trainer)->Predict(*weights, images.dataset.features);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(expected->size(), static_cast<size_t>(kExamples * spec.num_classes));

  const std::string model = dir.Join("model.pt");
  const absl::Status exported = ExportTorchScript(spec, *weights, FashionMnistPreprocessing(), model);
  ASSERT_TRUE(exported.ok()) << exported;

  // The inputs Python sees are the raw pixel values, as floats.
  std::vector<float> raw(images.pixels.begin(), images.pixels.end());
  std::ofstream(dir.Join("inputs.f32"), std::ios::binary)
      .write(reinterpret_cast<const char*>(raw.data()), static_cast<std::streamsize>(raw.size() * sizeof(float)));
  std::string shape = core::StrCat(kExamples);
  for (int64_t d : spec.input_shape) shape += core::StrCat(",", d);
  ASSERT_EQ(RunPython({kRunner, model, dir.Join("inputs.f32"), shape, dir.Join("out.f32")}, dir.Join("run.log")), 0)
      << Slurp(dir.Join("run.log"));

  const std::string out = Slurp(dir.Join("out.f32"));
  ASSERT_EQ(out.size(), expected->size() * sizeof(float));
  std::vector<float> actual(expected->size());
  std::memcpy(actual.data(), out.data(), out.size());
  double max_diff = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(actual[i]) - (*expected)[i]));
  }
  EXPECT_LE(max_diff, 1e-5) << spec.architecture;
  // The logits are not all alike (a module that ignored its input or weights would be).
  EXPECT_NE((*expected)[0], (*expected)[spec.num_classes]);
}

INSTANTIATE_TEST_SUITE_P(Architectures, TorchExportTest,
                         ::testing::Values(ModelSpec{"logreg", {1, 28, 28}, 10}, ModelSpec{"mlp", {1, 28, 28}, 10},
                                           ModelSpec{"cnn", {1, 8, 8}, 10}, ModelSpec{kTinyScripted, {1, 28, 28}, 10}),
                         [](const auto& info) {
                           const std::string& a = info.param.architecture;
                           return a.find('/') == std::string::npos ? a : std::string("torchscript");
                         });

TEST(TorchExportErrorsTest, RefusesWeightsOfAnotherLayout) {
  testutil::ScopedTempDir dir;
  auto mlp = InitialWeights(ModelSpec{"mlp", {1, 28, 28}, 10}, 1);
  ASSERT_TRUE(mlp.ok());
  const absl::Status s =
      ExportTorchScript(ModelSpec{"logreg", {1, 28, 28}, 10}, *mlp, FashionMnistPreprocessing(), dir.Join("m.pt"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_FALSE(std::filesystem::exists(dir.Join("m.pt")));
}

TEST(TorchExportErrorsTest, RefusesNonPositiveStddevAndMissingScript) {
  testutil::ScopedTempDir dir;
  auto logreg = InitialWeights(ModelSpec{"logreg", {1, 28, 28}, 10}, 1);
  ASSERT_TRUE(logreg.ok());
  Preprocessing bad;
  bad.stddev = 0;
  EXPECT_EQ(ExportTorchScript(ModelSpec{"logreg", {1, 28, 28}, 10}, *logreg, bad, dir.Join("m.pt")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExportTorchScript(ModelSpec{dir.Join("missing.pt"), {1, 28, 28}, 10}, *logreg, Preprocessing{},
                              dir.Join("m.pt"))
                .code(),
            absl::StatusCode::kNotFound);
}

TEST(InferZooSpecTest, RecoversEachZooSpecFromItsWeights) {
  for (const ModelSpec& spec : {ModelSpec{"logreg", {1, 28, 28}, 10}, ModelSpec{"mlp", {1, 28, 28}, 10},
                                ModelSpec{"cnn", {1, 8, 8}, 10}, ModelSpec{"cnn", {3, 28, 28}, 4},
                                ModelSpec{"mlp", {12}, 3}}) {
    auto weights = InitialWeights(spec, 1);
    ASSERT_TRUE(weights.ok()) << weights.status();
    auto inferred = InferZooSpec(*weights);
    ASSERT_TRUE(inferred.ok()) << inferred.status();
    EXPECT_EQ(inferred->architecture, spec.architecture);
    EXPECT_EQ(inferred->input_shape, spec.input_shape) << spec.architecture;
    EXPECT_EQ(inferred->num_classes, spec.num_classes);
  }
}

TEST(InferZooSpecTest, RefusesWeightsOfATorchScriptModel) {
  auto tiny = InitialWeights(ModelSpec{kTinyScripted, {1, 28, 28}, 10}, 0);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(InferZooSpec(*tiny).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::client::torch
