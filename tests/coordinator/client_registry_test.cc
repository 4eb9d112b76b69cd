#include "coordinator/client_registry.h"

#include <vector>

#include "core/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_macros.h"

namespace tessera::coordinator {
namespace {

using core::ClientId;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(ClientRegistryTest, RegisterReportsNewClients) {
  core::FakeClock clock;
  ClientRegistry r(absl::Seconds(30));
  EXPECT_TRUE(r.Register(ClientId{"a"}, {{"k", "v"}}, clock.Now()));
  EXPECT_FALSE(r.Register(ClientId{"a"}, {}, clock.Now()));  // re-registration keeps the id
  EXPECT_TRUE(r.Contains(ClientId{"a"}));
  EXPECT_FALSE(r.Contains(ClientId{"b"}));
  EXPECT_EQ(r.size(), 1u);
}

TEST(ClientRegistryTest, TouchOfAnUnknownClientIsNotFound) {
  core::FakeClock clock;
  ClientRegistry r(absl::Seconds(30));
  EXPECT_CODE(r.Touch(ClientId{"ghost"}, clock.Now()), absl::StatusCode::kNotFound);
  r.Register(ClientId{"a"}, {}, clock.Now());
  EXPECT_OK(r.Touch(ClientId{"a"}, clock.Now()));
}

TEST(ClientRegistryTest, AvailableIsSortedAndLiveOnly) {
  core::FakeClock clock;
  ClientRegistry r(absl::Seconds(30));
  r.Register(ClientId{"c"}, {}, clock.Now());
  r.Register(ClientId{"a"}, {}, clock.Now());
  clock.Advance(absl::Seconds(10));
  r.Register(ClientId{"b"}, {}, clock.Now());
  EXPECT_THAT(r.Available(clock.Now()), ElementsAre(ClientId{"a"}, ClientId{"b"}, ClientId{"c"}));
  clock.Advance(absl::Seconds(20));  // a and c silent for exactly the timeout: still live
  EXPECT_EQ(r.Available(clock.Now()).size(), 3u);
  clock.Advance(absl::Milliseconds(1));
  EXPECT_THAT(r.Available(clock.Now()), ElementsAre(ClientId{"b"}));
  ASSERT_OK(r.Touch(ClientId{"c"}, clock.Now()));
  EXPECT_THAT(r.Available(clock.Now()), ElementsAre(ClientId{"b"}, ClientId{"c"}));
  EXPECT_EQ(r.size(), 3u);  // Available does not remove anyone
}

TEST(ClientRegistryTest, ExpireStaleRemovesSilentClients) {
  core::FakeClock clock;
  ClientRegistry r(absl::Seconds(30));
  r.Register(ClientId{"a"}, {}, clock.Now());
  r.Register(ClientId{"b"}, {}, clock.Now());
  clock.Advance(absl::Seconds(30));
  EXPECT_THAT(r.ExpireStale(clock.Now()), IsEmpty());
  ASSERT_OK(r.Touch(ClientId{"b"}, clock.Now()));
  clock.Advance(absl::Seconds(1));
  EXPECT_THAT(r.ExpireStale(clock.Now()), ElementsAre(ClientId{"a"}));
  EXPECT_FALSE(r.Contains(ClientId{"a"}));
  EXPECT_CODE(r.Touch(ClientId{"a"}, clock.Now()), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.ExpireStale(clock.Now()), IsEmpty());
  // An expired client registers again as new.
  EXPECT_TRUE(r.Register(ClientId{"a"}, {}, clock.Now()));
}

}  // namespace
}  // namespace tessera::coordinator
