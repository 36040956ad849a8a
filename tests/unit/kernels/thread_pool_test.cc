#include "kernels/cpu/thread_pool.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace funnel {
namespace {

TEST(ThreadPoolTest, NumThreadsClampsToOne) {
  EXPECT_EQ(ThreadPool(1).num_threads(), 1);
  EXPECT_EQ(ThreadPool(0).num_threads(), 1);
  EXPECT_EQ(ThreadPool(-3).num_threads(), 1);
  EXPECT_EQ(ThreadPool(4).num_threads(), 4);
}

TEST(ThreadPoolTest, EveryTaskRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 7, 8, 9, 64, 1000, 100000}) {
      std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
      for (auto& r : runs) r.store(0);
      std::atomic<int> bad_index{0};
      pool.ParallelFor(n, [&](int64_t task, int thread) {
        if (thread < 0 || thread >= threads) bad_index.fetch_add(1);
        runs[static_cast<size_t>(task)].fetch_add(1, std::memory_order_relaxed);
      });
      for (int64_t t = 0; t < n; ++t) {
        ASSERT_EQ(runs[static_cast<size_t>(t)].load(), 1)
            << "threads=" << threads << " n=" << n << " task=" << t;
      }
      EXPECT_EQ(bad_index.load(), 0);
    }
  }
}

// thread_index is in range and never held by two running tasks at once.
TEST(ThreadPoolTest, ThreadIndexUniqueAmongConcurrentTasks) {
  for (int threads : {2, 3, 5}) {
    ThreadPool pool(threads);
    std::vector<std::atomic<bool>> in_use(static_cast<size_t>(threads));
    for (auto& f : in_use) f.store(false);
    std::atomic<int> out_of_range{0}, collisions{0};
    std::atomic<int64_t> sum{0};
    for (int rep = 0; rep < 50; ++rep) {
      pool.ParallelFor(200, [&](int64_t task, int thread) {
        if (thread < 0 || thread >= threads) {
          out_of_range.fetch_add(1);
          return;
        }
        if (in_use[static_cast<size_t>(thread)].exchange(true)) collisions.fetch_add(1);
        volatile int64_t spin = 0;
        for (int i = 0; i < 200; ++i) spin = spin + i;
        sum.fetch_add(task, std::memory_order_relaxed);
        in_use[static_cast<size_t>(thread)].store(false);
      });
    }
    EXPECT_EQ(out_of_range.load(), 0) << threads;
    EXPECT_EQ(collisions.load(), 0) << threads;
    EXPECT_EQ(sum.load(), 50 * (199 * 200 / 2)) << threads;
  }
}

// All num_threads threads really run at once: num_threads tasks each wait for all to start.
// (The caller's task blocks, so the others must be picked up by the workers.)
TEST(ThreadPoolTest, UsesAllThreadsConcurrently) {
  for (int threads : {2, 3, 4}) {
    ThreadPool pool(threads);
    std::atomic<int> started{0};
    std::atomic<int> timed_out{0};
    std::vector<std::atomic<int>> seen(static_cast<size_t>(threads));
    for (auto& s : seen) s.store(0);
    pool.ParallelFor(threads, [&](int64_t, int thread) {
      seen[static_cast<size_t>(thread)].fetch_add(1);
      started.fetch_add(1);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (started.load() < threads) {
        if (std::chrono::steady_clock::now() > deadline) {
          timed_out.fetch_add(1);
          return;
        }
        std::this_thread::yield();
      }
    });
    EXPECT_EQ(timed_out.load(), 0) << threads;
    for (int t = 0; t < threads; ++t) EXPECT_EQ(seen[static_cast<size_t>(t)].load(), 1) << t;
  }
}

// Many tiny back-to-back regions: no lost wake-up, no deadlock, no stale task from an earlier
// region leaking into the next one. 100k calls with 2 threads; fewer with more threads than a
// small CI machine has cores, where each region costs up to a scheduler quantum (spinning
// workers hold the cores and every worker must check in to each region).
TEST(ThreadPoolTest, ManyBackToBackCallsFinish) {
  for (int threads : {2, 3, 4}) {
    ThreadPool pool(threads);
    const int calls = threads == 2 ? 100000 : 300;
    int64_t expected = 0;
    std::atomic<int64_t> sum{0};
    std::atomic<int> wrong_generation{0};
    for (int call = 0; call < calls; ++call) {
      const int64_t n = 2 + call % 3;
      expected += n * (call + 1);
      pool.ParallelFor(
          n, [&, call](int64_t, int) { sum.fetch_add(call + 1, std::memory_order_relaxed); });
      // Everything of this call has finished when ParallelFor returns.
      if (sum.load() != expected) wrong_generation.fetch_add(1);
    }
    EXPECT_EQ(sum.load(), expected) << threads;
    EXPECT_EQ(wrong_generation.load(), 0) << threads;
  }
}

TEST(ThreadPoolTest, SingleThreadRunsInlineInOrder) {
  ThreadPool pool(1);
  const auto caller = std::this_thread::get_id();
  std::vector<int64_t> order;
  bool all_inline = true;
  pool.ParallelFor(10, [&](int64_t task, int thread) {
    all_inline = all_inline && std::this_thread::get_id() == caller && thread == 0;
    order.push_back(task);
  });
  EXPECT_TRUE(all_inline);
  ASSERT_EQ(order.size(), 10u);
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], i);
}

TEST(ThreadPoolTest, OneTaskRunsInlineOnAnyPool) {
  ThreadPool pool(3);
  const auto caller = std::this_thread::get_id();
  bool inline_run = false;
  pool.ParallelFor(1, [&](int64_t task, int thread) {
    inline_run = task == 0 && thread == 0 && std::this_thread::get_id() == caller;
  });
  EXPECT_TRUE(inline_run);
}

// Results written by tasks are visible to the caller after ParallelFor returns (plain stores).
TEST(ThreadPoolTest, WritesVisibleAfterReturn) {
  ThreadPool pool(3);
  std::vector<int64_t> out(5000);
  for (int rep = 0; rep < 100; ++rep) {
    pool.ParallelFor(static_cast<int64_t>(out.size()),
                     [&](int64_t task, int) { out[static_cast<size_t>(task)] = task * rep; });
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_EQ(out[i], static_cast<int64_t>(i) * rep) << rep;
    }
  }
}

// Construction and destruction without work, and right after work, shut down cleanly.
TEST(ThreadPoolTest, CreateAndDestroyRepeatedly) {
  for (int i = 0; i < 50; ++i) {
    ThreadPool idle(3);
  }
  for (int i = 0; i < 50; ++i) {
    ThreadPool pool(3);
    std::atomic<int> n{0};
    pool.ParallelFor(10, [&](int64_t, int) { n.fetch_add(1); });
    EXPECT_EQ(n.load(), 10);
  }
}

}  // namespace
}  // namespace funnel
