#include "runtime/kv/sequence_kv.h"

#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "runtime/kv/block_pool.h"

namespace funnel {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::vector<BlockId> Table(const SequenceKv& seq, int32_t layer) {
  const auto t = seq.block_table(layer);
  return {t.begin(), t.end()};
}

TEST(SequenceKvTest, StartsEmpty) {
  SequenceKv seq(3, 16);
  EXPECT_EQ(seq.num_layers(), 3);
  EXPECT_EQ(seq.block_size(), 16);
  EXPECT_EQ(seq.num_positions(), 0);
  EXPECT_EQ(seq.num_blocks(), 0);
  for (int32_t l = 0; l < 3; ++l) {
    EXPECT_EQ(seq.layer_length(l), 0);
    EXPECT_TRUE(seq.block_table(l).empty());
  }
  seq.set_num_positions(42);
  EXPECT_EQ(seq.num_positions(), 42);
}

TEST(SequenceKvTest, BlocksNeeded) {
  BlockPool pool(16);
  SequenceKv seq(1, 4);
  EXPECT_EQ(seq.BlocksNeeded(0, 0), 0);
  EXPECT_EQ(seq.BlocksNeeded(0, 1), 1);
  EXPECT_EQ(seq.BlocksNeeded(0, 4), 1);
  EXPECT_EQ(seq.BlocksNeeded(0, 5), 2);
  EXPECT_EQ(seq.BlocksNeeded(0, 17), 5);
  ASSERT_TRUE(seq.Grow(pool, 0, 6).ok());
  EXPECT_EQ(seq.BlocksNeeded(0, 3), 0);
  EXPECT_EQ(seq.BlocksNeeded(0, 8), 0);
  EXPECT_EQ(seq.BlocksNeeded(0, 9), 1);
  seq.Release(pool);
}

TEST(SequenceKvTest, GrowAllocatesCeilBlocksPerLayer) {
  for (int32_t bs : {1, 3, 16}) {
    BlockPool pool(200);
    SequenceKv seq(4, bs);
    const int64_t lengths[] = {1, 17, 0, 48};  // different per layer
    int64_t total = 0;
    for (int32_t l = 0; l < 4; ++l) {
      ASSERT_TRUE(seq.Grow(pool, l, lengths[l]).ok()) << "bs=" << bs << " layer " << l;
      total += CeilDiv(lengths[l], bs);
    }
    std::set<BlockId> all;
    for (int32_t l = 0; l < 4; ++l) {
      EXPECT_EQ(seq.layer_length(l), lengths[l]);
      EXPECT_EQ(static_cast<int64_t>(seq.block_table(l).size()), CeilDiv(lengths[l], bs))
          << "bs=" << bs << " layer " << l;
      for (BlockId b : seq.block_table(l)) {
        EXPECT_EQ(pool.ref_count(b), 1);
        all.insert(b);
      }
    }
    EXPECT_EQ(static_cast<int64_t>(all.size()), total) << "a block is in two tables";
    EXPECT_EQ(seq.num_blocks(), total);
    EXPECT_EQ(pool.num_used(), total);
    seq.Release(pool);
  }
}

TEST(SequenceKvTest, IncrementalGrowAllocatesOnlyAtBlockBoundaries) {
  BlockPool pool(10);
  SequenceKv seq(2, 4);
  std::vector<BlockId> prev;
  for (int64_t len = 1; len <= 20; ++len) {
    ASSERT_TRUE(seq.Grow(pool, 1, len).ok()) << len;
    EXPECT_EQ(seq.layer_length(1), len);
    const std::vector<BlockId> table = Table(seq, 1);
    ASSERT_EQ(static_cast<int64_t>(table.size()), CeilDiv(len, 4)) << len;
    // Existing entries of the table never move.
    for (size_t i = 0; i < prev.size(); ++i) EXPECT_EQ(table[i], prev[i]) << len;
    prev = table;
    EXPECT_EQ(seq.layer_length(0), 0);
    EXPECT_TRUE(seq.block_table(0).empty());
  }
  EXPECT_EQ(pool.num_used(), 5);
  // Growing to a length it already covers (or less) allocates nothing and keeps the length.
  ASSERT_TRUE(seq.Grow(pool, 1, 20).ok());
  ASSERT_TRUE(seq.Grow(pool, 1, 3).ok());
  EXPECT_EQ(seq.layer_length(1), 20);
  EXPECT_EQ(Table(seq, 1), prev);
  EXPECT_EQ(pool.num_used(), 5);
  seq.Release(pool);
}

TEST(SequenceKvTest, GrowBeyondCapacityFailsAndChangesNothing) {
  BlockPool pool(6);
  SequenceKv seq(2, 4);
  ASSERT_TRUE(seq.Grow(pool, 0, 9).ok());  // 3 blocks
  ASSERT_TRUE(seq.Grow(pool, 1, 4).ok());  // 1 block
  const std::vector<BlockId> t0 = Table(seq, 0), t1 = Table(seq, 1);
  ASSERT_EQ(pool.num_free(), 2);

  // Layer 1 to 13 entries needs 3 more blocks; only 2 are free.
  const absl::Status s = seq.Grow(pool, 1, 13);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(pool.num_free(), 2);
  EXPECT_EQ(Table(seq, 0), t0);
  EXPECT_EQ(Table(seq, 1), t1);
  EXPECT_EQ(seq.layer_length(0), 9);
  EXPECT_EQ(seq.layer_length(1), 4);
  EXPECT_EQ(seq.num_blocks(), 4);

  // Exactly the free count succeeds, then the pool is empty and one more entry fails.
  ASSERT_TRUE(seq.Grow(pool, 1, 12).ok());
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_EQ(seq.layer_length(1), 12);
  EXPECT_EQ(seq.Grow(pool, 0, 13).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(seq.layer_length(0), 9);
  EXPECT_EQ(Table(seq, 0), t0);
  // Within the last block there is still room without new blocks.
  EXPECT_TRUE(seq.Grow(pool, 0, 12).ok());
  EXPECT_EQ(seq.layer_length(0), 12);

  seq.Release(pool);
  EXPECT_EQ(pool.num_free(), 6);
}

TEST(SequenceKvTest, TruncateKeepsThePrefixAndFreesTheBlocksPastIt) {
  BlockPool pool(32);
  SequenceKv seq(2, 4);
  ASSERT_TRUE(seq.Grow(pool, 0, 23).ok());  // 6 blocks
  ASSERT_TRUE(seq.Grow(pool, 1, 8).ok());   // 2 blocks
  const std::vector<BlockId> before = Table(seq, 0);
  seq.Truncate(pool, 0, 9);  // 3 blocks
  EXPECT_EQ(seq.layer_length(0), 9);
  EXPECT_EQ(Table(seq, 0), std::vector<BlockId>(before.begin(), before.begin() + 3));
  EXPECT_EQ(pool.num_used(), 5);
  seq.Truncate(pool, 0, 9);  // no-op
  EXPECT_EQ(pool.num_used(), 5);
  seq.Truncate(pool, 1, 0);
  EXPECT_EQ(seq.layer_length(1), 0);
  EXPECT_TRUE(seq.block_table(1).empty());
  EXPECT_EQ(pool.num_used(), 3);
  // A shared block survives its truncation by one owner.
  SequenceKv fork = seq.Fork(pool);
  fork.Truncate(pool, 0, 4);
  EXPECT_EQ(pool.num_used(), 3);
  seq.Release(pool);
  EXPECT_EQ(pool.num_used(), 1);
  fork.Release(pool);
  EXPECT_EQ(pool.num_used(), 0);
}

TEST(SequenceKvTest, ReleaseReturnsEveryBlock) {
  BlockPool pool(50);
  SequenceKv a(3, 3), b(3, 3);
  ASSERT_TRUE(a.Grow(pool, 0, 10).ok());
  ASSERT_TRUE(b.Grow(pool, 0, 5).ok());
  ASSERT_TRUE(a.Grow(pool, 2, 7).ok());
  ASSERT_TRUE(b.Grow(pool, 1, 30).ok());
  a.set_num_positions(10);
  const int32_t used_by_b = static_cast<int32_t>(b.num_blocks());
  EXPECT_EQ(pool.num_used(), a.num_blocks() + used_by_b);

  a.Release(pool);
  EXPECT_EQ(pool.num_used(), used_by_b);
  EXPECT_EQ(a.num_blocks(), 0);
  EXPECT_EQ(a.num_positions(), 0);
  for (int32_t l = 0; l < 3; ++l) {
    EXPECT_EQ(a.layer_length(l), 0);
    EXPECT_TRUE(a.block_table(l).empty());
  }
  b.Release(pool);
  EXPECT_EQ(pool.num_free(), pool.num_blocks());

  // Usable again after release.
  ASSERT_TRUE(a.Grow(pool, 1, 4).ok());
  EXPECT_EQ(a.num_blocks(), 2);
  a.Release(pool);
  EXPECT_EQ(pool.num_free(), 50);
}

TEST(SequenceKvTest, ReleaseDropsOnlyItsOwnReference) {
  BlockPool pool(8);
  SequenceKv seq(1, 2);
  ASSERT_TRUE(seq.Grow(pool, 0, 6).ok());
  const BlockId shared = seq.block_table(0)[1];
  pool.Ref(shared);  // e.g. a prefix cache keeps it
  seq.Release(pool);
  EXPECT_EQ(pool.ref_count(shared), 1);
  EXPECT_EQ(pool.num_used(), 1);
  pool.Unref(shared);
  EXPECT_EQ(pool.num_free(), 8);
}

TEST(SequenceKvTest, MoveKeepsBlocks) {
  BlockPool pool(8);
  SequenceKv a(2, 4);
  ASSERT_TRUE(a.Grow(pool, 1, 8).ok());
  const std::vector<BlockId> t = Table(a, 1);
  SequenceKv b(std::move(a));
  EXPECT_EQ(Table(b, 1), t);
  EXPECT_EQ(b.layer_length(1), 8);
  SequenceKv c(1, 1);
  c = std::move(b);
  EXPECT_EQ(Table(c, 1), t);
  EXPECT_EQ(c.num_blocks(), 2);
  c.Release(pool);
  EXPECT_EQ(pool.num_free(), 8);
}

}  // namespace
}  // namespace funnel
