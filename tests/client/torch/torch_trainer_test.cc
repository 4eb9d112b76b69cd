#include "client/torch/torch_trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/data/dataset.h"
#include "core/federation.h"
#include "core/tensor.h"

namespace tessera::client::torch {
namespace {

constexpr int kPixels = 784;
constexpr int kClasses = 10;
constexpr int kBlock = kPixels / kClasses;  // 78 pixels per class

// Images whose label is the block of pixels that is bright (1.0), on noise in [0, 0.3):
// linearly separable, so logreg and mlp must reach high accuracy in a few epochs.
std::shared_ptr<const Dataset> BlockDataset(int n, uint32_t seed) {
  auto data = std::make_shared<Dataset>();
  data->example_shape = {1, 28, 28};
  data->num_classes = kClasses;
  data->features.resize(static_cast<size_t>(n) * kPixels);
  data->labels.resize(n);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> noise(0.0f, 0.3f);
  for (int i = 0; i < n; ++i) {
    const int label = i % kClasses;
    data->labels[i] = label;
    float* x = data->features.data() + static_cast<size_t>(i) * kPixels;
    for (int p = 0; p < kPixels; ++p) x[p] = noise(gen);
    for (int p = label * kBlock; p < (label + 1) * kBlock; ++p) x[p] = 1.0f;
  }
  return data;
}

ModelSpec Spec(std::string architecture, std::vector<int64_t> input_shape = {1, 28, 28}) {
  return ModelSpec{std::move(architecture), std::move(input_shape), kClasses};
}

std::string TinyScriptedPath() {
  return std::string(TESSERA_SOURCE_DIR) + "/tests/data/tiny_mlp_scripted.pt";
}

bool BitEqual(const core::ModelWeights& a, const core::ModelWeights& b) {
  if (!a.CheckSameLayout(b).ok()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto x = a.tensors[i].bytes();
    const auto y = b.tensors[i].bytes();
    if (std::memcmp(x.data(), y.data(), x.size()) != 0) return false;
  }
  return true;
}

core::TrainConfig Config(int epochs, double lr, uint64_t seed) {
  core::TrainConfig config;
  config.local_epochs = epochs;
  config.batch_size = 10;
  config.learning_rate = lr;
  config.seed = seed;
  return config;
}

class TorchTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ConfigureTorchThreads(1); }

  std::shared_ptr<const Dataset> train_data_ = BlockDataset(200, 1);
  std::shared_ptr<const Dataset> eval_data_ = BlockDataset(200, 2);
};

TEST_F(TorchTrainerTest, ZooParameterCountsMatchMcMahanEtAl) {
  auto mlp = InitialWeights(Spec("mlp", {784}), 0);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_EQ(mlp->num_elements(), 199210);

  auto cnn = InitialWeights(Spec("cnn"), 0);
  ASSERT_TRUE(cnn.ok()) << cnn.status();
  EXPECT_EQ(cnn->num_elements(), 1663370);

  auto logreg = InitialWeights(Spec("logreg", {784}), 0);
  ASSERT_TRUE(logreg.ok()) << logreg.status();
  EXPECT_EQ(logreg->num_elements(), 7850);
}

TEST_F(TorchTrainerTest, ZooStateHasReadableNamesInModuleOrder) {
  auto cnn = InitialWeights(Spec("cnn"), 0);
  ASSERT_TRUE(cnn.ok()) << cnn.status();
  std::vector<std::string> names;
  for (const auto& t : cnn->tensors) names.push_back(t.name());
  EXPECT_EQ(names, (std::vector<std::string>{"conv1.weight", "conv1.bias", "conv2.weight",
                                             "conv2.bias", "fc1.weight", "fc1.bias",
                                             "fc2.weight", "fc2.bias"}));
  EXPECT_EQ(cnn->tensors[0].shape(), (std::vector<int64_t>{32, 1, 5, 5}));
  EXPECT_EQ(cnn->tensors[4].shape(), (std::vector<int64_t>{512, 3136}));
  for (const auto& t : cnn->tensors) EXPECT_EQ(t.dtype(), core::DType::kFloat32);
}

TEST_F(TorchTrainerTest, InitialWeightsDependOnTheSeedOnly) {
  auto a = InitialWeights(Spec("mlp"), 7);
  auto b = InitialWeights(Spec("mlp"), 7);
  auto c = InitialWeights(Spec("mlp"), 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(BitEqual(*a, *b));
  EXPECT_FALSE(BitEqual(*a, *c));

  // PyTorch's default scale: uniform in +-1/sqrt(fan_in), and not all zero.
  const core::NamedTensor* fc1 = a->Find("fc1.weight");
  ASSERT_NE(fc1, nullptr);
  float max_abs = 0;
  for (float v : fc1->f32()) max_abs = std::max(max_abs, std::abs(v));
  EXPECT_LE(max_abs, 1.0f / std::sqrt(784.0f));
  EXPECT_GT(max_abs, 0.9f / std::sqrt(784.0f));
}

void ExpectLearnsBlocks(const std::string& architecture, double lr,
                        std::shared_ptr<const Dataset> train_data,
                        std::shared_ptr<const Dataset> eval_data) {
  auto trainer = TorchTrainer::Create(Spec(architecture), DatasetView::All(train_data),
                                      DatasetView::All(eval_data));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto initial = InitialWeights(Spec(architecture), 3);
  ASSERT_TRUE(initial.ok()) << initial.status();

  auto before = (*trainer)->Evaluate(*initial);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_LT(before->at("accuracy"), 0.4);
  EXPECT_EQ(before->at("num_examples"), 200);

  auto trained = (*trainer)->Train(*initial, Config(5, lr, 11));
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->num_examples, 200);
  EXPECT_TRUE(trained->weights.CheckSameLayout(*initial).ok());
  EXPECT_GT(trained->metrics.at("train_accuracy"), 0.9);
  EXPECT_LT(trained->metrics.at("train_loss"), before->at("loss"));

  auto after = (*trainer)->Evaluate(trained->weights);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GT(after->at("accuracy"), 0.9);
  EXPECT_LT(after->at("loss"), before->at("loss"));
}

TEST_F(TorchTrainerTest, LogRegLearnsSeparableData) {
  ExpectLearnsBlocks("logreg", 0.1, train_data_, eval_data_);
}

// Predict is the trainer's own forward pass: its argmax reproduces Evaluate's accuracy, whatever
// the batching (1000 per batch, the last one smaller).
TEST_F(TorchTrainerTest, PredictAgreesWithEvaluate) {
  auto eval = BlockDataset(1010, 5);
  auto trainer = TorchTrainer::Create(Spec("mlp"), DatasetView::All(train_data_), DatasetView::All(eval));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto initial = InitialWeights(Spec("mlp"), 3);
  ASSERT_TRUE(initial.ok());
  auto trained = (*trainer)->Train(*initial, Config(2, 0.1, 11));
  ASSERT_TRUE(trained.ok()) << trained.status();
  auto metrics = (*trainer)->Evaluate(trained->weights);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  auto logits = (*trainer)->Predict(trained->weights, eval->features);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(), static_cast<size_t>(1010 * kClasses));
  int correct = 0;
  for (int i = 0; i < 1010; ++i) {
    const float* row = logits->data() + static_cast<size_t>(i) * kClasses;
    correct += std::max_element(row, row + kClasses) - row == eval->labels[i];
  }
  EXPECT_DOUBLE_EQ(correct / 1010.0, metrics->at("accuracy"));

  const std::span<const float> one_and_a_bit(eval->features.data(), kPixels + 1);
  EXPECT_EQ((*trainer)->Predict(trained->weights, one_and_a_bit).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*trainer)->Predict(trained->weights, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TorchTrainerTest, MlpLearnsSeparableData) {
  ExpectLearnsBlocks("mlp", 0.1, train_data_, eval_data_);
}

TEST_F(TorchTrainerTest, TrainIsBitReproducibleAndSeedDependent) {
  auto trainer = TorchTrainer::Create(Spec("mlp"), DatasetView::All(train_data_), {});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto initial = InitialWeights(Spec("mlp"), 3);
  ASSERT_TRUE(initial.ok());

  auto a = (*trainer)->Train(*initial, Config(2, 0.05, 5));
  auto b = (*trainer)->Train(*initial, Config(2, 0.05, 5));
  auto c = (*trainer)->Train(*initial, Config(2, 0.05, 6));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(BitEqual(a->weights, b->weights));
  EXPECT_EQ(a->metrics, b->metrics);
  EXPECT_FALSE(BitEqual(a->weights, c->weights));  // another shuffle
  EXPECT_FALSE(BitEqual(a->weights, *initial));
}

TEST_F(TorchTrainerTest, MaxStepsStopsTrainingWhereTheBudgetEnds) {
  auto trainer = TorchTrainer::Create(Spec("mlp"), DatasetView::All(train_data_), {});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto initial = InitialWeights(Spec("mlp"), 3);
  ASSERT_TRUE(initial.ok());
  core::TrainConfig budget = Config(3, 0.05, 5);
  budget.max_steps = 20;  // 200 examples in batches of 10: one epoch
  auto cut = (*trainer)->Train(*initial, budget);
  auto one_epoch = (*trainer)->Train(*initial, Config(1, 0.05, 5));
  ASSERT_TRUE(cut.ok() && one_epoch.ok());
  EXPECT_TRUE(BitEqual(cut->weights, one_epoch->weights));
  EXPECT_EQ(cut->metrics, one_epoch->metrics);
}

// One SGD step with the proximal term toward `anchor`: w1 = w0 - lr (g + mu (w0 - anchor)), where
// w0 - lr g is the step without it.
TEST_F(TorchTrainerTest, ProximalStepMatchesTheClosedForm) {
  auto trainer = TorchTrainer::Create(Spec("logreg"), DatasetView::All(train_data_), {});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto start = InitialWeights(Spec("logreg"), 3);
  auto anchor = InitialWeights(Spec("logreg"), 4);
  ASSERT_TRUE(start.ok() && anchor.ok());
  core::TrainConfig plain = Config(1, 0.1, 5);
  plain.max_steps = 1;
  core::TrainConfig prox = plain;
  prox.proximal_mu = 0.5;
  auto without = (*trainer)->Train(*start, plain);
  auto with = (*trainer)->TrainToward(*start, *anchor, prox);
  ASSERT_TRUE(without.ok() && with.ok()) << with.status();
  for (size_t t = 0; t < start->tensors.size(); ++t) {
    const auto w0 = start->tensors[t].f32(), a = anchor->tensors[t].f32();
    const auto plain_step = without->weights.tensors[t].f32(), got = with->weights.tensors[t].f32();
    for (size_t i = 0; i < w0.size(); ++i) {
      EXPECT_NEAR(got[i], plain_step[i] - 0.1 * 0.5 * (w0[i] - a[i]), 1e-6) << t << ":" << i;
    }
  }
  // FedProx (anchor = start): the first step is the plain one; later steps stay closer to it.
  prox.max_steps = 0;
  plain.max_steps = 0;
  prox.local_epochs = plain.local_epochs = 3;
  prox.proximal_mu = 1.0;
  auto fedprox = (*trainer)->Train(*start, prox);
  auto fedavg = (*trainer)->Train(*start, plain);
  ASSERT_TRUE(fedprox.ok() && fedavg.ok());
  auto drift = [&](const core::ModelWeights& w) { return *core::MaxAbsDiff(w, *start); };
  EXPECT_LT(drift(fedprox->weights), drift(fedavg->weights));
  prox.proximal_mu = -1;
  EXPECT_EQ((*trainer)->Train(*start, prox).status().code(), absl::StatusCode::kInvalidArgument);
}

// Two trainers on disjoint halves of the data, run one after the other and then in two
// threads at once: the threads must not change a bit of either result.
void ExpectParallelMatchesSequential(const std::string& architecture,
                                     std::shared_ptr<const Dataset> data, int epochs) {
  DatasetView half_a = DatasetView::All(data);
  DatasetView half_b = half_a;
  const int64_t half = half_a.size() / 2;
  half_a.indices.resize(half);
  half_b.indices.erase(half_b.indices.begin(), half_b.indices.begin() + half);
  auto initial = InitialWeights(Spec(architecture), 3);
  ASSERT_TRUE(initial.ok()) << initial.status();
  const core::TrainConfig config_a = Config(epochs, 0.05, 21);
  const core::TrainConfig config_b = Config(epochs, 0.05, 22);

  auto trainer_a = TorchTrainer::Create(Spec(architecture), half_a, {});
  auto trainer_b = TorchTrainer::Create(Spec(architecture), half_b, {});
  ASSERT_TRUE(trainer_a.ok() && trainer_b.ok());
  auto sequential_a = (*trainer_a)->Train(*initial, config_a);
  auto sequential_b = (*trainer_b)->Train(*initial, config_b);
  ASSERT_TRUE(sequential_a.ok() && sequential_b.ok());

  absl::StatusOr<TrainOutput> parallel_a, parallel_b;
  std::thread thread_a([&] { parallel_a = (*trainer_a)->Train(*initial, config_a); });
  std::thread thread_b([&] { parallel_b = (*trainer_b)->Train(*initial, config_b); });
  thread_a.join();
  thread_b.join();
  ASSERT_TRUE(parallel_a.ok()) << parallel_a.status();
  ASSERT_TRUE(parallel_b.ok()) << parallel_b.status();
  EXPECT_TRUE(BitEqual(parallel_a->weights, sequential_a->weights));
  EXPECT_TRUE(BitEqual(parallel_b->weights, sequential_b->weights));
  EXPECT_EQ(parallel_a->metrics, sequential_a->metrics);
  EXPECT_FALSE(BitEqual(parallel_a->weights, parallel_b->weights));
}

TEST_F(TorchTrainerTest, ParallelMlpTrainersMatchSequentialRuns) {
  ExpectParallelMatchesSequential("mlp", train_data_, 2);
}

TEST_F(TorchTrainerTest, ParallelCnnTrainersMatchSequentialRuns) {
  ExpectParallelMatchesSequential("cnn", BlockDataset(60, 3), 1);
}

TEST_F(TorchTrainerTest, WrongLayoutWeightsAreInvalidArgumentNamingTheTensor) {
  auto trainer = TorchTrainer::Create(Spec("mlp"), DatasetView::All(train_data_),
                                      DatasetView::All(eval_data_));
  ASSERT_TRUE(trainer.ok());
  auto mlp = InitialWeights(Spec("mlp"), 0);
  auto logreg = InitialWeights(Spec("logreg"), 0);
  ASSERT_TRUE(mlp.ok() && logreg.ok());

  auto other_model = (*trainer)->Train(*logreg, Config(1, 0.1, 0));
  EXPECT_EQ(other_model.status().code(), absl::StatusCode::kInvalidArgument);

  core::ModelWeights wrong_shape = *mlp;
  wrong_shape.tensors[4] = core::NamedTensor("fc3.weight", {10, 201});
  auto shape_result = (*trainer)->Train(wrong_shape, Config(1, 0.1, 0));
  EXPECT_EQ(shape_result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(shape_result.status().message().find("fc3.weight"), std::string::npos)
      << shape_result.status();

  core::ModelWeights wrong_dtype = *mlp;
  wrong_dtype.tensors[1] = core::NamedTensor("fc1.bias", {200}, core::DType::kFloat64);
  auto eval_result = (*trainer)->Evaluate(wrong_dtype);
  EXPECT_EQ(eval_result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(eval_result.status().message().find("fc1.bias"), std::string::npos);

  // The trainer still works after the rejected calls.
  EXPECT_TRUE((*trainer)->Train(*mlp, Config(1, 0.1, 0)).ok());
}

TEST_F(TorchTrainerTest, EmptyViewsAreFailedPrecondition) {
  auto trainer = TorchTrainer::Create(Spec("logreg"), {}, {});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto weights = InitialWeights(Spec("logreg"), 0);
  ASSERT_TRUE(weights.ok());
  EXPECT_EQ((*trainer)->Train(*weights, Config(1, 0.1, 0)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*trainer)->Evaluate(*weights).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(TorchTrainerTest, SpecsThatDoNotFitAreInvalidArgument) {
  // The data has 784 values per example, the model takes 100.
  auto mismatch = TorchTrainer::Create(Spec("mlp", {100}), DatasetView::All(train_data_), {});
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  // cnn needs [C,H,W] with H, W divisible by 4.
  EXPECT_EQ(InitialWeights(Spec("cnn", {784}), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(InitialWeights(Spec("cnn", {1, 30, 30}), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(InitialWeights(Spec("resnet"), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Labels beyond num_classes.
  ModelSpec five_classes = Spec("logreg");
  five_classes.num_classes = 5;
  EXPECT_EQ(TorchTrainer::Create(five_classes, {}, DatasetView::All(eval_data_)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TorchTrainerTest, TorchScriptModelTrainsInCpp) {
  const ModelSpec spec = Spec(TinyScriptedPath());
  auto initial = InitialWeights(spec, 0);
  ASSERT_TRUE(initial.ok()) << initial.status();
  std::vector<std::string> names;
  for (const auto& t : initial->tensors) names.push_back(t.name());
  EXPECT_EQ(names,
            (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}));
  EXPECT_EQ(initial->num_elements(), 784 * 16 + 16 + 16 * 10 + 10);
  // The stored weights, whatever the seed.
  auto again = InitialWeights(spec, 99);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(BitEqual(*initial, *again));

  auto trainer =
      TorchTrainer::Create(spec, DatasetView::All(train_data_), DatasetView::All(eval_data_));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto before = (*trainer)->Evaluate(*initial);
  ASSERT_TRUE(before.ok()) << before.status();
  auto trained = (*trainer)->Train(*initial, Config(3, 0.1, 1));
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_TRUE(trained->weights.CheckSameLayout(*initial).ok());
  auto after = (*trainer)->Evaluate(trained->weights);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_LT(after->at("loss"), 0.5 * before->at("loss"));
  EXPECT_GT(after->at("accuracy"), before->at("accuracy"));

  // Reproducible like the zoo models.
  auto trained_again = (*trainer)->Train(*initial, Config(3, 0.1, 1));
  ASSERT_TRUE(trained_again.ok());
  EXPECT_TRUE(BitEqual(trained->weights, trained_again->weights));
}

TEST_F(TorchTrainerTest, MissingTorchScriptFileIsNotFound) {
  const ModelSpec spec = Spec(std::string(TESSERA_SOURCE_DIR) + "/tests/data/no_such_model.pt");
  auto trainer = TorchTrainer::Create(spec, DatasetView::All(train_data_), {});
  EXPECT_EQ(trainer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(InitialWeights(spec, 0).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(TorchTrainerTest, GarbageTorchScriptFileIsInvalidArgument) {
  const std::string path = ::testing::TempDir() + "/garbage_model.pt";
  {
    std::ofstream out(path, std::ios::binary);
    std::mt19937 gen(42);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>(gen() & 0xff));
  }
  auto trainer = TorchTrainer::Create(Spec(path), DatasetView::All(train_data_), {});
  EXPECT_EQ(trainer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(trainer.status().message().find("garbage_model.pt"), std::string::npos)
      << trainer.status();
  std::remove(path.c_str());
}

TEST_F(TorchTrainerTest, TorchScriptModelWithWrongClassCountIsInvalidArgument) {
  ModelSpec spec = Spec(TinyScriptedPath());
  spec.num_classes = 7;  // the file's model outputs 10 logits
  EXPECT_EQ(TorchTrainer::Create(spec, {}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::client::torch
