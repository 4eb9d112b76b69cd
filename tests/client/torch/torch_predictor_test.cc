#include "client/torch/torch_predictor.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"

namespace tessera::client::torch {
namespace {

const ModelSpec kSpec{"mlp", {1, 4, 4}, 3};

std::vector<float> Inputs(int64_t batch) {
  std::vector<float> x(static_cast<size_t>(batch * 16));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i % 11) - 5) / 3.0f;
  return x;
}

TEST(TorchPredictorTest, MatchesTheTrainersPredictionExactlyFromManyThreads) {
  const core::ModelWeights weights = InitialWeights(kSpec, 7).value();
  ASSERT_OK_AND_ASSIGN(auto predictor, TorchPredictor::Create(kSpec, weights));
  EXPECT_EQ(predictor->num_features(), 16);
  EXPECT_EQ(predictor->num_classes(), 3);
  auto trainer = TorchTrainer::Create(kSpec, {}, {}).value();
  const std::vector<float> x = Inputs(5);
  ASSERT_OK_AND_ASSIGN(std::vector<float> expected, trainer->Predict(weights, x));
  std::vector<std::thread> threads;
  std::vector<std::vector<float>> got(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) got[t] = predictor->Predict(x, 5).value();
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, expected);
}

TEST(TorchPredictorTest, RefusesWeightsOfAnotherModel) {
  const core::ModelWeights other = InitialWeights({"logreg", {1, 4, 4}, 3}, 7).value();
  EXPECT_CODE(TorchPredictor::Create(kSpec, other), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(TorchPredictor::Create({"no-such-zoo-model", {16}, 3}, other), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::client::torch
