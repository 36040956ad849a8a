// Accounting for the shared pool of KV blocks: fixed ids, a free list, reference counts.
//
// Pure bookkeeping (the K/V storage lives in the backend). O(1) per operation.
// Thread rules: owned and used by the engine thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace funnel {

using BlockId = int32_t;

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_used() const { return num_blocks() - num_free(); }

  // A free block with reference count 1, or nullopt when the pool is exhausted.
  std::optional<BlockId> Allocate();
  // Adds a reference to an allocated block (sharing it between sequences).
  void Ref(BlockId block);
  // Drops a reference; the block returns to the free list when none are left.
  void Unref(BlockId block);
  int32_t ref_count(BlockId block) const { return ref_counts_[static_cast<size_t>(block)]; }

 private:
  std::vector<int32_t> ref_counts_;
  std::vector<BlockId> free_;
};

}  // namespace funnel
