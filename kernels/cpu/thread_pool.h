// Fork-join thread pool for compute kernels.
//
// Thread rules: ParallelFor is called from one thread at a time (the engine thread); it runs
// tasks on the workers and the calling thread and returns when every task has finished. A region
// never waits for a worker that has not woken up: tasks are claimed from one atomic word, so on a
// busy machine the threads that are running simply do all the work.
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
  // One region of at most kMaxRegionTasks tasks.
  void RunRegion(int64_t first, int64_t count, const std::function<void(int64_t, int)>& fn);
  void WorkerLoop(int thread_index);
  // Claims and runs tasks of region `generation` until none are left.
  void RunTasks(uint64_t generation, int thread_index);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;  // a new region (or stop) was published
  std::condition_variable done_;  // the last task of the region finished
  // The region's claim word: generation | task count | next unclaimed task (see the .cc). One
  // word, so a claim always sees the count of its own region, and compare-exchange makes a claim
  // fail rather than land in another region.
  std::atomic<uint64_t> claim_{0};
  // The current region's work: stable while any of its tasks is unfinished.
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t first_task_ = 0;
  std::atomic<int64_t> finished_{0};
  bool stop_ = false;  // guarded by mu_
};

}  // namespace funnel
