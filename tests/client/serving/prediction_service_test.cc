#include "client/serving/prediction_service.h"

#include <cmath>
#include <functional>
#include <future>
#include <limits>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/serving_fakes.h"
#include "tests/testing/status_macros.h"

namespace tessera::client::serving {
namespace {

using testutil::FakeLinearPredictor;
using testutil::FakeSnapshot;

constexpr int64_t kFeatures = 6;
constexpr int kClasses = 3;

ServingOptions Options() {
  ServingOptions o;
  o.num_features = kFeatures;
  o.num_classes = kClasses;
  o.preprocessing = {1.0 / 255.0, 0.25, 0.5};
  o.max_batch = 4;
  return o;
}

std::unique_ptr<PredictionService> MakeService() { return PredictionService::Create(Options()).value(); }

TEST(PredictionServiceTest, PredictsPreprocessedInputsWithTheCurrentModel) {
  auto service = MakeService();
  ASSERT_OK(service->Swap(FakeSnapshot(7, kFeatures, kClasses)));
  const std::vector<float> raw = {0, 255, 10, 20, 30, 40, 255, 0, 1, 2, 3, 4};
  ASSERT_OK_AND_ASSIGN(Prediction p, service->Predict(raw, 2));
  EXPECT_EQ(p.model->version, 7u);
  // The model saw (x / 255 - 0.25) / 0.5, computed in double and rounded to float.
  std::vector<float> seen(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) seen[i] = static_cast<float>((raw[i] * (1.0 / 255.0) - 0.25) / 0.5);
  auto expected = FakeLinearPredictor(kFeatures, kClasses, 7).Predict(seen, 2).value();
  EXPECT_EQ(p.logits, expected);
  EXPECT_EQ(p.classes, ArgmaxRows(expected, kClasses));
  EXPECT_EQ(p.num_classes, kClasses);
}

TEST(PredictionServiceTest, UnavailableBeforeTheFirstModel) {
  auto service = MakeService();
  EXPECT_EQ(service->Current(), nullptr);
  EXPECT_CODE(service->Predict(std::vector<float>(kFeatures, 1.0f), 1), absl::StatusCode::kUnavailable);
}

TEST(PredictionServiceTest, RefusesMalformedBatches) {
  auto service = MakeService();
  ASSERT_OK(service->Swap(FakeSnapshot(1, kFeatures, kClasses)));
  const std::vector<float> one(kFeatures, 1.0f);
  EXPECT_CODE(service->Predict({}, 0), absl::StatusCode::kInvalidArgument);                         // empty
  EXPECT_CODE(service->Predict(std::vector<float>(5 * kFeatures, 1.0f), 5), absl::StatusCode::kInvalidArgument);  // cap 4
  EXPECT_CODE(service->Predict(std::vector<float>(kFeatures - 1, 1.0f), 1), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(service->Predict(one, 2), absl::StatusCode::kInvalidArgument);  // 2 examples declared, 1 given
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = one;
    x[3] = bad;
    EXPECT_CODE(service->Predict(x, 1), absl::StatusCode::kInvalidArgument);
  }
}

TEST(PredictionServiceTest, RefusesAValueThatPreprocessingTurnsInfinite) {
  ServingOptions o = Options();
  o.preprocessing = {1.0, 0.0, 1e-30};  // finite raw inputs overflow float after / 1e-30
  auto service = PredictionService::Create(o).value();
  ASSERT_OK(service->Swap(FakeSnapshot(1, kFeatures, kClasses)));
  std::vector<float> x(kFeatures, 0.0f);
  x[0] = 1e10f;
  EXPECT_CODE(service->Predict(x, 1), absl::StatusCode::kInvalidArgument);
}

TEST(PredictionServiceTest, SwapRefusesAModelOfAnotherShapeAndKeepsTheCurrentOne) {
  auto service = MakeService();
  ASSERT_OK(service->Swap(FakeSnapshot(1, kFeatures, kClasses)));
  EXPECT_CODE(service->Swap(nullptr), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(service->Swap(std::make_shared<const ModelSnapshot>()), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(service->Swap(FakeSnapshot(2, kFeatures + 1, kClasses)), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(service->Swap(FakeSnapshot(3, kFeatures, kClasses + 1)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(service->Current()->version, 1u);
}

TEST(PredictionServiceTest, CreateRefusesBadOptions) {
  for (auto mutate : std::vector<std::function<void(ServingOptions&)>>{
           [](ServingOptions& o) { o.num_features = 0; }, [](ServingOptions& o) { o.num_classes = 0; },
           [](ServingOptions& o) { o.max_batch = 0; }, [](ServingOptions& o) { o.preprocessing.stddev = 0; },
           [](ServingOptions& o) { o.preprocessing.mean = std::nan(""); }}) {
    ServingOptions o = Options();
    mutate(o);
    EXPECT_CODE(PredictionService::Create(o), absl::StatusCode::kInvalidArgument);
  }
}

// A request inside the old model when Swap() runs: Swap does not wait for it, new requests get
// the new model, the old request answers from the old one, and the old model is freed after it.
TEST(PredictionServiceTest, InFlightRequestKeepsItsModelAcrossASwap) {
  auto service = MakeService();
  auto slow = std::make_shared<FakeLinearPredictor>(kFeatures, kClasses, 1.0f);
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  slow->on_predict = [&entered, released] {
    entered.set_value();
    released.wait();
  };
  ASSERT_OK(service->Swap(FakeSnapshot(1, kFeatures, kClasses, slow)));
  std::weak_ptr<const ModelSnapshot> old = service->Current();
  slow.reset();
  const std::vector<float> x(kFeatures, 3.0f);
  auto in_flight = std::async(std::launch::async, [&] { return service->Predict(x, 1); });
  entered.get_future().wait();

  ASSERT_OK(service->Swap(FakeSnapshot(2, kFeatures, kClasses)));  // does not wait for the request
  ASSERT_OK_AND_ASSIGN(Prediction fresh, service->Predict(x, 1));
  EXPECT_EQ(fresh.model->version, 2u);
  EXPECT_FALSE(old.expired());  // pinned by the request

  release.set_value();
  ASSERT_OK_AND_ASSIGN(Prediction pinned, in_flight.get());
  EXPECT_EQ(pinned.model->version, 1u);
  std::vector<float> seen(kFeatures, static_cast<float>((3.0 / 255.0 - 0.25) / 0.5));
  EXPECT_EQ(pinned.logits, FakeLinearPredictor(kFeatures, kClasses, 1.0f).Predict(seen, 1).value());
  pinned.model.reset();
  EXPECT_TRUE(old.expired());  // freed with its last request
}

TEST(PredictionServiceTest, ArgmaxTakesTheFirstMaximum) {
  EXPECT_EQ(ArgmaxRows(std::vector<float>{1, 3, 3, 0, -1, -1}, 3), (std::vector<int64_t>{1, 0}));
}

}  // namespace
}  // namespace tessera::client::serving
