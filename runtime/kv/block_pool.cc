#include "runtime/kv/block_pool.h"

#include <cassert>

namespace funnel {

BlockPool::BlockPool(int32_t num_blocks) : ref_counts_(static_cast<size_t>(num_blocks), 0) {
  free_.reserve(static_cast<size_t>(num_blocks));
  // Hand out low ids first.
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

std::optional<BlockId> BlockPool::Allocate() {
  if (free_.empty()) return std::nullopt;
  BlockId b = free_.back();
  free_.pop_back();
  ref_counts_[static_cast<size_t>(b)] = 1;
  return b;
}

void BlockPool::Ref(BlockId block) {
  assert(ref_counts_[static_cast<size_t>(block)] > 0);
  ++ref_counts_[static_cast<size_t>(block)];
}

void BlockPool::Unref(BlockId block) {
  int32_t& rc = ref_counts_[static_cast<size_t>(block)];
  assert(rc > 0);
  if (--rc == 0) free_.push_back(block);
}

}  // namespace funnel
