#include "runtime/kv/block_pool.h"

#include <cstdint>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace funnel {
namespace {

TEST(BlockPoolTest, StartsAllFree) {
  BlockPool pool(8);
  EXPECT_EQ(pool.num_blocks(), 8);
  EXPECT_EQ(pool.num_free(), 8);
  EXPECT_EQ(pool.num_used(), 0);
  for (BlockId b = 0; b < 8; ++b) EXPECT_EQ(pool.ref_count(b), 0);
}

TEST(BlockPoolTest, AllocatesLowIdsFirstUntilExhausted) {
  BlockPool pool(5);
  for (BlockId want = 0; want < 5; ++want) {
    const std::optional<BlockId> b = pool.Allocate();
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(*b, want);
    EXPECT_EQ(pool.ref_count(*b), 1);
    EXPECT_EQ(pool.num_used(), want + 1);
    EXPECT_EQ(pool.num_free(), 4 - want);
  }
  EXPECT_EQ(pool.Allocate(), std::nullopt);
  EXPECT_EQ(pool.Allocate(), std::nullopt);  // stays exhausted, no state change
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_EQ(pool.num_used(), 5);
}

TEST(BlockPoolTest, EmptyPool) {
  BlockPool pool(0);
  EXPECT_EQ(pool.num_blocks(), 0);
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_EQ(pool.Allocate(), std::nullopt);
}

TEST(BlockPoolTest, UnrefReturnsBlockForReuse) {
  BlockPool pool(3);
  const BlockId a = *pool.Allocate(), b = *pool.Allocate(), c = *pool.Allocate();
  EXPECT_EQ(pool.Allocate(), std::nullopt);
  pool.Unref(b);
  EXPECT_EQ(pool.ref_count(b), 0);
  EXPECT_EQ(pool.num_free(), 1);
  const std::optional<BlockId> again = pool.Allocate();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, b);
  EXPECT_EQ(pool.ref_count(b), 1);
  pool.Unref(a);
  pool.Unref(b);
  pool.Unref(c);
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_EQ(pool.num_used(), 0);
  // Every block can be handed out again exactly once.
  std::set<BlockId> got;
  for (int i = 0; i < 3; ++i) got.insert(*pool.Allocate());
  EXPECT_EQ(got, (std::set<BlockId>{0, 1, 2}));
  EXPECT_EQ(pool.Allocate(), std::nullopt);
}

TEST(BlockPoolTest, SharedBlockFreedOnlyAfterLastUnref) {
  BlockPool pool(2);
  const BlockId b = *pool.Allocate();
  pool.Ref(b);
  pool.Ref(b);
  EXPECT_EQ(pool.ref_count(b), 3);
  EXPECT_EQ(pool.num_used(), 1);
  pool.Unref(b);
  EXPECT_EQ(pool.ref_count(b), 2);
  EXPECT_EQ(pool.num_free(), 1);
  pool.Unref(b);
  EXPECT_EQ(pool.ref_count(b), 1);
  EXPECT_EQ(pool.num_free(), 1);
  // The other block is what Allocate hands out while b is still shared.
  const BlockId other = *pool.Allocate();
  EXPECT_NE(other, b);
  EXPECT_EQ(pool.Allocate(), std::nullopt);
  pool.Unref(b);
  EXPECT_EQ(pool.ref_count(b), 0);
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_EQ(*pool.Allocate(), b);
}

// Random Allocate / Ref / Unref against a model of reference counts.
TEST(BlockPoolTest, RandomOperationsMatchModel) {
  constexpr int32_t kBlocks = 64;
  BlockPool pool(kBlocks);
  std::vector<int32_t> model(kBlocks, 0);
  std::mt19937 rng(5);
  for (int step = 0; step < 20000; ++step) {
    std::vector<BlockId> live;
    for (BlockId b = 0; b < kBlocks; ++b) {
      if (model[b] > 0) live.push_back(b);
    }
    const int op = static_cast<int>(rng() % 3);
    if (op == 0 || live.empty()) {
      const std::optional<BlockId> b = pool.Allocate();
      if (live.size() == static_cast<size_t>(kBlocks)) {
        ASSERT_EQ(b, std::nullopt);
      } else {
        ASSERT_TRUE(b.has_value());
        ASSERT_GE(*b, 0);
        ASSERT_LT(*b, kBlocks);
        ASSERT_EQ(model[*b], 0) << "handed out a block in use";
        model[*b] = 1;
      }
    } else {
      const BlockId b = live[rng() % live.size()];
      if (op == 1 && model[b] < 4) {
        pool.Ref(b);
        ++model[b];
      } else {
        pool.Unref(b);
        --model[b];
      }
    }
    int32_t used = 0;
    for (BlockId b = 0; b < kBlocks; ++b) {
      ASSERT_EQ(pool.ref_count(b), model[b]) << "step " << step;
      used += model[b] > 0;
    }
    ASSERT_EQ(pool.num_used(), used);
    ASSERT_EQ(pool.num_free(), kBlocks - used);
  }
}

}  // namespace
}  // namespace funnel
