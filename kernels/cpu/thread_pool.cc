#include "kernels/cpu/thread_pool.h"

#include <sched.h>

#include <algorithm>

namespace funnel {
namespace {

// Claim word layout: [generation: 28 bits][task count: 18 bits][next task: 18 bits].
constexpr int kTaskBits = 18;
constexpr uint64_t kTaskMask = (uint64_t{1} << kTaskBits) - 1;
constexpr int64_t kMaxRegionTasks = int64_t{1} << (kTaskBits - 1);  // next may reach count

inline uint64_t GenerationOf(uint64_t w) { return w >> (2 * kTaskBits); }
inline int64_t CountOf(uint64_t w) { return static_cast<int64_t>((w >> kTaskBits) & kTaskMask); }
inline int64_t NextOf(uint64_t w) { return static_cast<int64_t>(w & kTaskMask); }
inline uint64_t Word(uint64_t generation, int64_t count) {
  return (generation << (2 * kTaskBits)) | (static_cast<uint64_t>(count) << kTaskBits);
}

// A decode step issues hundreds of short parallel regions and a futex wake costs tens of
// microseconds, so both sides spin briefly, yielding now and then, before sleeping.
constexpr int kSpinIterations = 4000;
constexpr int kYieldEvery = 64;

inline void CpuRelax(int iteration) {
  if (iteration % kYieldEvery == kYieldEvery - 1) {
    sched_yield();
  } else {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(num_threads < 1 ? 1 : num_threads) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    claim_.store(Word(GenerationOf(claim_.load()) + 1, 0), std::memory_order_release);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::RunTasks(uint64_t generation, int thread_index) {
  uint64_t w = claim_.load(std::memory_order_acquire);
  for (;;) {
    if (GenerationOf(w) != generation || NextOf(w) >= CountOf(w)) return;
    if (!claim_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;  // `w` was reloaded
    }
    // The claimed task keeps this region alive, so fn_ and first_task_ are its own.
    const int64_t count = CountOf(w);
    (*fn_)(first_task_ + NextOf(w), thread_index);
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == count) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.notify_one();
    }
    w = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::RunRegion(int64_t first, int64_t count,
                           const std::function<void(int64_t, int)>& fn) {
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    first_task_ = first;
    finished_.store(0, std::memory_order_relaxed);
    generation = GenerationOf(claim_.load(std::memory_order_relaxed)) + 1;
    claim_.store(Word(generation, count), std::memory_order_release);
  }
  wake_.notify_all();
  RunTasks(generation, 0);
  for (int i = 0; i < kSpinIterations; ++i) {
    if (finished_.load(std::memory_order_acquire) == count) return;
    CpuRelax(i);
  }
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return finished_.load(std::memory_order_acquire) == count; });
}

void ThreadPool::ParallelFor(int64_t num_tasks, const std::function<void(int64_t, int)>& fn) {
  if (num_tasks <= 0) return;
  if (workers_.empty() || num_tasks == 1) {
    for (int64_t t = 0; t < num_tasks; ++t) fn(t, 0);
    return;
  }
  for (int64_t first = 0; first < num_tasks; first += kMaxRegionTasks) {
    RunRegion(first, std::min(kMaxRegionTasks, num_tasks - first), fn);
  }
}

void ThreadPool::WorkerLoop(int thread_index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t current = GenerationOf(claim_.load(std::memory_order_acquire));
    for (int i = 0; current == seen && i < kSpinIterations; ++i) {
      CpuRelax(i);
      current = GenerationOf(claim_.load(std::memory_order_acquire));
    }
    if (current == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock,
                 [&] { return GenerationOf(claim_.load(std::memory_order_acquire)) != seen; });
      current = GenerationOf(claim_.load(std::memory_order_acquire));
    }
    seen = current;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    RunTasks(current, thread_index);
  }
}

}  // namespace funnel
