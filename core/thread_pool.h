// A fixed-size FIFO thread pool. Tasks start in submission order (FIFO), which the simulator
// relies on for its ordered commit of results. Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera::core {

class ThreadPool {
 public:
  // `on_start` runs once on each worker before it takes tasks (e.g. to set per-thread state).
  explicit ThreadPool(int threads, std::function<void()> on_start = {});
  ~ThreadPool();  // runs the queued tasks, then joins
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(std::function<void()> task);
  // Blocks until every submitted task has finished.
  void Wait();
  int size() const { return static_cast<int>(workers_.size()); }

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<std::function<void()>> queue_;  // GUARDED_BY(mu_)
  int running_ = 0;                          // GUARDED_BY(mu_)
  bool stopping_ = false;                    // GUARDED_BY(mu_)
  std::function<void()> on_start_;
  std::vector<std::thread> workers_;
};

}  // namespace tessera::core
