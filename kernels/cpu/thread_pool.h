// Fork-join thread pool for compute kernels.
//
// Thread rules: ParallelFor is called from one thread at a time (the engine thread); it runs
// tasks on `num_threads - 1` workers plus the calling thread and returns when all are done.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace funnel {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Runs fn(task, thread_index) for task in [0, num_tasks); tasks are handed out dynamically.
  // thread_index is in [0, num_threads) and unique among concurrently running tasks.
  void ParallelFor(int64_t num_tasks, const std::function<void(int64_t, int)>& fn);

 private:
  void WorkerLoop(int thread_index);
  void RunTasks(int thread_index);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  // Published by the generation_ release-increment; read by workers after acquiring it.
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t num_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_workers_{0};  // workers still inside the current region
  bool stop_ = false;                    // guarded by mu_
};

}  // namespace funnel
