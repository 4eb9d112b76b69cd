// The model card's JSON: every field survives a round trip, absent optionals are null, and
// damaged or foreign cards are refused with INVALID_ARGUMENT.
#include "core/model_card.h"

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"

namespace tessera::core {
namespace {

using nlohmann::json;

ModelCard FullCard() {
  ModelCard c;
  c.framework_version = std::string(FrameworkVersion());
  c.architecture = "cnn";
  c.input_shape = {1, 28, 28};
  c.input_description = "raw pixel values in [0, 255], float32";
  c.preprocessing = {1.0 / 255.0, 0.2860, 0.3530, true};
  c.num_classes = 3;
  c.class_labels = {"a", "b", "c"};
  c.dataset = "fashion-mnist";
  c.run_id = "run-7";
  c.version = 4;
  c.round = 5;
  c.parent_version = 3;
  c.contributing_clients = 9;
  c.metrics = {{"accuracy", 0.8125}, {"loss", 0.4375}};
  c.created_at = "2026-11-22T18:00:00Z";
  c.weights_file = "model_v000004.safetensors";
  c.weights_sha256 = std::string(64, 'a');
  c.num_parameters = 1234;
  c.exported = ModelCard::Export{"torchscript", "m.pt", std::string(64, 'b'), "2026-11-22T18:01:00Z"};
  return c;
}

TEST(ModelCardTest, RoundTripsEveryField) {
  const ModelCard card = FullCard();
  auto back = ModelCardFromJson(ModelCardToJson(card));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, card);
  // Doubles are written so that they read back to the bit (scale = 1/255 is not a short decimal).
  EXPECT_EQ(back->preprocessing.scale, 1.0 / 255.0);
}

TEST(ModelCardTest, AbsentOptionalsAreNullAndRoundTrip) {
  ModelCard card = FullCard();
  card.parent_version.reset();
  card.contributing_clients.reset();
  card.exported.reset();
  const std::string text = ModelCardToJson(card);
  const json j = json::parse(text);
  EXPECT_TRUE(j.at("parent_version").is_null());
  EXPECT_TRUE(j.at("contributing_clients").is_null());
  EXPECT_TRUE(j.at("export").is_null());
  EXPECT_EQ(j.at("format"), kModelCardFormat);
  EXPECT_EQ(j.at("preprocessing").at("formula"), "x' = (x * scale - mean) / stddev");
  auto back = ModelCardFromJson(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, card);
}

TEST(ModelCardTest, RefusesDamagedOrForeignCards) {
  const std::string good = ModelCardToJson(FullCard());
  EXPECT_EQ(ModelCardFromJson("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ModelCardFromJson("[1]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ModelCardFromJson(good.substr(0, good.size() / 2)).status().code(), absl::StatusCode::kInvalidArgument);

  json j = json::parse(good);
  j["format"] = "something/2";
  EXPECT_EQ(ModelCardFromJson(j.dump()).status().code(), absl::StatusCode::kInvalidArgument);

  j = json::parse(good);
  j.erase("round");
  EXPECT_EQ(ModelCardFromJson(j.dump()).status().code(), absl::StatusCode::kInvalidArgument);

  j = json::parse(good);
  j["version"] = "four";
  EXPECT_EQ(ModelCardFromJson(j.dump()).status().code(), absl::StatusCode::kInvalidArgument);

  j = json::parse(good);
  j["class_labels"] = {"only one"};
  EXPECT_EQ(ModelCardFromJson(j.dump()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelCardTest, FormatsTimesAsRfc3339Utc) {
  EXPECT_EQ(FormatUtc(absl::FromUnixSeconds(1795370400)), "2026-11-22T18:00:00Z");
}

}  // namespace
}  // namespace tessera::core
