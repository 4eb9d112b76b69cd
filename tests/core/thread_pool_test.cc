#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::core {
namespace {

TEST(ThreadPoolTest, OneThreadRunsTasksInSubmissionOrder) {
  ThreadPool pool(1);
  std::vector<int> order;  // only the single worker writes it
  for (int i = 0; i < 200; ++i) pool.Submit([&order, i] { order.push_back(i); });
  pool.Wait();
  ASSERT_EQ(order.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(order[i], i);
}

TEST(ThreadPoolTest, WaitWaitsForEveryTask) {
  ThreadPool pool(2);
  std::atomic<int> done{0};
  constexpr int kTasks = 40;
  for (int i = 0; i < kTasks; ++i) {
    pool.Submit([&done] {
      std::this_thread::sleep_for(std::chrono::microseconds(500));
      done.fetch_add(1);
    });
  }
  pool.Wait();
  EXPECT_EQ(done.load(), kTasks);
  // Wait can be called again, and with nothing queued returns at once.
  pool.Wait();
  pool.Submit([&done] { done.fetch_add(1); });
  pool.Wait();
  EXPECT_EQ(done.load(), kTasks + 1);
}

TEST(ThreadPoolTest, WaitWaitsForTasksSubmittedByTasks) {
  ThreadPool pool(2);
  std::atomic<int> done{0};
  pool.Submit([&] {
    pool.Submit([&done] {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      done.fetch_add(1);
    });
    done.fetch_add(1);
  });
  pool.Wait();
  EXPECT_EQ(done.load(), 2);
}

TEST(ThreadPoolTest, WaitWithNothingSubmittedReturns) {
  ThreadPool pool(3);
  pool.Wait();
  EXPECT_EQ(pool.size(), 3);
}

TEST(ThreadPoolTest, DestructorRunsQueuedTasks) {
  std::atomic<int> done{0};
  {
    ThreadPool pool(1);
    for (int i = 0; i < 50; ++i) {
      pool.Submit([&done] {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        done.fetch_add(1);
      });
    }
  }
  EXPECT_EQ(done.load(), 50);
}

TEST(ThreadPoolTest, OnStartRunsOnceOnEachWorker) {
  std::mutex mu;
  std::vector<std::thread::id> ids;
  thread_local int tagged = 0;
  std::atomic<int> tagged_tasks{0};
  {
    ThreadPool pool(3, [&] {
      tagged = 1;
      std::lock_guard lock(mu);
      ids.push_back(std::this_thread::get_id());
    });
    for (int i = 0; i < 30; ++i) pool.Submit([&] { tagged_tasks.fetch_add(tagged); });
    pool.Wait();
  }
  EXPECT_EQ(ids.size(), 3u);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::unique(ids.begin(), ids.end()), ids.end());
  EXPECT_EQ(tagged_tasks.load(), 30);  // every task ran on a worker whose on_start ran first
}

TEST(ThreadPoolTest, NonPositiveSizeGivesOneThread) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.size(), 1);
  std::atomic<bool> ran{false};
  pool.Submit([&] { ran = true; });
  pool.Wait();
  EXPECT_TRUE(ran.load());
}

}  // namespace
}  // namespace tessera::core
