#include "client/torch/bare_sgd.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "client/data/dataset.h"
#include "client/torch/torch_trainer.h"
#include "core/federation.h"

namespace tessera::client::torch {
namespace {

constexpr int kPixels = 784;
constexpr int kClasses = 10;

// n noisy 28x28 images whose label is the index of a bright block of pixels.
std::shared_ptr<const Dataset> Images(int n) {
  auto data = std::make_shared<Dataset>();
  data->example_shape = {1, 28, 28};
  data->num_classes = kClasses;
  data->features.resize(static_cast<size_t>(n) * kPixels);
  data->labels.resize(n);
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> noise(0.0f, 0.3f);
  for (int i = 0; i < n; ++i) {
    data->labels[i] = i % kClasses;
    float* x = data->features.data() + static_cast<size_t>(i) * kPixels;
    for (int p = 0; p < kPixels; ++p) x[p] = noise(gen);
    for (int p = (i % kClasses) * 78; p < (i % kClasses + 1) * 78; ++p) x[p] = 1.0f;
  }
  return data;
}

// The benchmark's limit must do the trainer's work: with one batch per epoch the shuffle does not
// change the gradient, so after the same steps both see the same loss (up to the order of float
// sums).
TEST(BareSgdTest, SameLossAsTorchTrainerWithFullBatches) {
  const int n = 40;
  auto data = Images(n);
  for (const std::string architecture : {"logreg", "mlp", "cnn"}) {
    SCOPED_TRACE(architecture);
    const ModelSpec spec{architecture, {1, 28, 28}, kClasses};
    auto initial = InitialWeights(spec, 3);
    ASSERT_TRUE(initial.ok()) << initial.status();
    auto trainer = TorchTrainer::Create(spec, DatasetView::All(data), DatasetView{});
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    core::TrainConfig config;
    config.local_epochs = 3;
    config.batch_size = n;
    config.learning_rate = 0.1;
    auto trained = (*trainer)->Train(*initial, config);
    ASSERT_TRUE(trained.ok()) << trained.status();

    auto bare = BareSgd(architecture, *initial, spec.input_shape, data->features, data->labels,
                        BareSgdOptions{3, n, 0.1, 5});
    ASSERT_TRUE(bare.ok()) << bare.status();
    EXPECT_EQ(bare->steps, 3);
    EXPECT_NEAR(bare->last_loss, trained->metrics.at("train_loss"), 1e-5);
    EXPECT_LT(bare->last_loss, std::log(10.0));  // it learned something in two steps
  }
}

TEST(BareSgdTest, LastBatchOfAnEpochIsSmaller) {
  auto data = Images(25);
  const ModelSpec spec{"logreg", {1, 28, 28}, kClasses};
  auto initial = InitialWeights(spec, 1);
  ASSERT_TRUE(initial.ok());
  auto bare = BareSgd("logreg", *initial, spec.input_shape, data->features, data->labels, BareSgdOptions{2, 10, 0.05, 0});
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->steps, 6);  // 2 epochs x (10 + 10 + 5)
}

TEST(BareSgdTest, RefusesWhatItCannotRun) {
  auto data = Images(10);
  const ModelSpec spec{"mlp", {1, 28, 28}, kClasses};
  auto mlp = InitialWeights(spec, 1);
  ASSERT_TRUE(mlp.ok());
  const std::vector<int64_t> shape = {1, 28, 28};
  EXPECT_EQ(BareSgd("resnet", *mlp, shape, data->features, data->labels, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BareSgd("cnn", *mlp, shape, data->features, data->labels, {}).status().code(),
            absl::StatusCode::kInvalidArgument);  // 6 tensors, the cnn has 8
  const std::span<const float> short_features(data->features.data(), data->features.size() - 1);
  EXPECT_EQ(BareSgd("mlp", *mlp, shape, short_features, data->labels, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BareSgd("mlp", *mlp, shape, data->features, data->labels, BareSgdOptions{0, 10, 0.05, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::client::torch
