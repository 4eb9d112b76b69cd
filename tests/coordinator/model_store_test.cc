#include "coordinator/model_store.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/proto_convert.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fakes.h"
#include "tests/testing/status_macros.h"
#include "tests/testing/temp_dir.h"

namespace tessera::coordinator {
namespace {

using testutil::FloatModel;
using testutil::Values;

TEST(ModelStoreTest, InMemoryStorePublishesVersionsInOrder) {
  ASSERT_OK_AND_ASSIGN(auto store, ModelStore::Create("", FloatModel({1, 2}), "run"));
  auto v0 = store->Current();
  EXPECT_EQ(v0->version, 0u);
  EXPECT_EQ(v0->round, 0u);
  EXPECT_EQ(store->PathFor(0), "");
  EXPECT_EQ(v0->sha256, core::Sha256Digest(v0->serialized));
  ASSERT_OK_AND_ASSIGN(core::ModelWeights parsed, core::ParseModel(v0->serialized));
  EXPECT_EQ(Values(parsed), (std::vector<float>{1, 2}));

  ASSERT_OK(store->Publish(FloatModel({3, 4}), 1, {}));
  ASSERT_OK(store->Publish(FloatModel({5, 6}), 3, {}));
  auto v2 = store->Current();
  EXPECT_EQ(v2->version, 2u);
  EXPECT_EQ(v2->round, 3u);
  EXPECT_EQ(Values(*v2->weights), (std::vector<float>{5, 6}));
  // A download in flight keeps the version it started with.
  EXPECT_EQ(v0->version, 0u);
  EXPECT_EQ(Values(*v0->weights), (std::vector<float>{1, 2}));
}

TEST(ModelStoreTest, DirectoryStoreWritesEachVersionWithMetadata) {
  testutil::ScopedTempDir dir;
  const std::string models = dir.Join("a/b/models");  // created on demand
  ASSERT_OK_AND_ASSIGN(auto store, ModelStore::Create(models, FloatModel({1, 2}), "run-7"));
  EXPECT_EQ(store->PathFor(0), models + "/model_v000000.safetensors");
  EXPECT_EQ(store->PathFor(123), models + "/model_v000123.safetensors");
  ASSERT_OK(store->Publish(FloatModel({3, 4}), 1, {{"accuracy", 0.5}}));

  ASSERT_OK_AND_ASSIGN(core::SafetensorsFile v0, core::ReadSafetensorsFile(store->PathFor(0)));
  EXPECT_EQ(Values(v0.weights), (std::vector<float>{1, 2}));
  EXPECT_EQ(v0.metadata.at("run_id"), "run-7");
  EXPECT_EQ(v0.metadata.at("version"), "0");
  EXPECT_EQ(v0.metadata.at("round"), "0");
  ASSERT_OK_AND_ASSIGN(core::SafetensorsFile v1, core::ReadSafetensorsFile(store->PathFor(1)));
  EXPECT_EQ(Values(v1.weights), (std::vector<float>{3, 4}));
  EXPECT_EQ(v1.metadata.at("version"), "1");
  EXPECT_EQ(v1.metadata.at("round"), "1");
  EXPECT_DOUBLE_EQ(std::stod(v1.metadata.at("metric.accuracy")), 0.5);
}

TEST(ModelStoreTest, FailedWriteLeavesTheCurrentVersion) {
  testutil::ScopedTempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, ModelStore::Create(dir.Join("m"), FloatModel({1, 2}), "run"));
  std::filesystem::remove_all(dir.Join("m"));
  EXPECT_FALSE(store->Publish(FloatModel({3, 4}), 1, {}).ok());
  EXPECT_EQ(store->Current()->version, 0u);
  EXPECT_EQ(Values(*store->Current()->weights), (std::vector<float>{1, 2}));
}

}  // namespace
}  // namespace tessera::coordinator
