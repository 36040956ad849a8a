// One sequence's view of the KV cache: a block table and a stored-entry count per layer.
//
// Layers can hold different numbers of entries (after compression), so each has its own table.
// `num_positions` is the sequence's logical length: the RoPE position of the next new token,
// which can exceed any layer's stored count once entries were evicted.
// Thread rules: engine thread only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/kv/block_pool.h"

namespace funnel {

class SequenceKv {
 public:
  SequenceKv(int32_t num_layers, int32_t block_size);
  // A sequence whose layer l holds lengths[l] (uninitialized) entries, at `num_positions`.
  // ResourceExhausted (nothing allocated) when the pool lacks the blocks.
  static absl::StatusOr<SequenceKv> Allocate(BlockPool& pool, int32_t block_size,
                                             std::span<const int64_t> lengths,
                                             int64_t num_positions);
  ~SequenceKv();  // blocks must have been released (asserted in debug builds)
  SequenceKv(SequenceKv&&) = default;
  SequenceKv& operator=(SequenceKv&&) = default;

  int32_t num_layers() const { return static_cast<int32_t>(tables_.size()); }
  int32_t block_size() const { return block_size_; }
  int64_t num_positions() const { return num_positions_; }
  void set_num_positions(int64_t n) { num_positions_ = n; }

  int64_t layer_length(int32_t layer) const { return lengths_[static_cast<size_t>(layer)]; }
  std::span<const BlockId> block_table(int32_t layer) const {
    return tables_[static_cast<size_t>(layer)];
  }

  // Blocks needed so that `layer` can hold `new_length` entries, beyond what it has.
  int64_t BlocksNeeded(int32_t layer, int64_t new_length) const;
  // Grows `layer` to `new_length` entries, allocating blocks from `pool`. All-or-nothing:
  // ResourceExhausted (and no change) when the pool cannot supply them.
  absl::Status Grow(BlockPool& pool, int32_t layer, int64_t new_length);
  // A new sequence sharing every block of this one (reference counts +1, no copy), with the same
  // lengths and positions. Appending to either copies a shared, partially filled last block
  // first (copy-on-write; see NeedsCopyOnWrite).
  SequenceKv Fork(BlockPool& pool) const;
  // True when appending to `layer` would write into a last block that other sequences share.
  bool NeedsCopyOnWrite(const BlockPool& pool, int32_t layer) const;
  // Puts `block` in place of the table entry `index` of `layer`, dropping this sequence's
  // reference to the old block (the caller copied its contents).
  void ReplaceBlock(BlockPool& pool, int32_t layer, int64_t index, BlockId block);
  // Returns every block to `pool` and empties all layers.
  void Release(BlockPool& pool);
  // Keeps the first `new_length` entries of `layer` (<= its length) and returns the blocks past
  // them to the pool (compression of a prompt whose full K/V was written in chunks).
  void Truncate(BlockPool& pool, int32_t layer, int64_t new_length);
  // Total blocks held over all layers.
  int64_t num_blocks() const;

 private:
  int32_t block_size_;
  int64_t num_positions_ = 0;
  std::vector<std::vector<BlockId>> tables_;
  std::vector<int64_t> lengths_;
};

}  // namespace funnel
