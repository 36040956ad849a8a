#include "runtime/kv/sequence_kv.h"

#include <cassert>

#include "absl/strings/str_format.h"

namespace funnel {

SequenceKv::SequenceKv(int32_t num_layers, int32_t block_size)
    : block_size_(block_size),
      tables_(static_cast<size_t>(num_layers)),
      lengths_(static_cast<size_t>(num_layers), 0) {}

SequenceKv::~SequenceKv() {
  for ([[maybe_unused]] const auto& t : tables_) assert(t.empty() && "SequenceKv not released");
}

absl::StatusOr<SequenceKv> SequenceKv::Allocate(BlockPool& pool, int32_t block_size,
                                                std::span<const int64_t> lengths,
                                                int64_t num_positions) {
  SequenceKv kv(static_cast<int32_t>(lengths.size()), block_size);
  int64_t blocks = 0;
  for (int64_t n : lengths) blocks += (n + block_size - 1) / block_size;
  if (blocks > pool.num_free()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "KV pool exhausted: the sequence needs %d blocks, %d free", blocks, pool.num_free()));
  }
  for (size_t l = 0; l < lengths.size(); ++l) {
    absl::Status grown = kv.Grow(pool, static_cast<int32_t>(l), lengths[l]);
    assert(grown.ok());  // counted above
    (void)grown;
  }
  kv.set_num_positions(num_positions);
  return kv;
}

int64_t SequenceKv::BlocksNeeded(int32_t layer, int64_t new_length) const {
  const int64_t have = static_cast<int64_t>(tables_[static_cast<size_t>(layer)].size());
  const int64_t need = (new_length + block_size_ - 1) / block_size_;
  return need > have ? need - have : 0;
}

absl::Status SequenceKv::Grow(BlockPool& pool, int32_t layer, int64_t new_length) {
  const int64_t extra = BlocksNeeded(layer, new_length);
  if (extra > pool.num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("KV pool exhausted: layer %d needs %d more blocks, %d free", layer, extra,
                        pool.num_free()));
  }
  auto& table = tables_[static_cast<size_t>(layer)];
  for (int64_t i = 0; i < extra; ++i) table.push_back(*pool.Allocate());
  if (new_length > lengths_[static_cast<size_t>(layer)])
    lengths_[static_cast<size_t>(layer)] = new_length;
  return absl::OkStatus();
}

void SequenceKv::Release(BlockPool& pool) {
  for (auto& table : tables_) {
    for (BlockId b : table) pool.Unref(b);
    table.clear();
  }
  for (auto& len : lengths_) len = 0;
  num_positions_ = 0;
}

void SequenceKv::Truncate(BlockPool& pool, int32_t layer, int64_t new_length) {
  auto& table = tables_[static_cast<size_t>(layer)];
  int64_t& length = lengths_[static_cast<size_t>(layer)];
  assert(new_length >= 0 && new_length <= length);
  const size_t keep = static_cast<size_t>((new_length + block_size_ - 1) / block_size_);
  for (size_t i = keep; i < table.size(); ++i) pool.Unref(table[i]);
  if (table.size() > keep) table.resize(keep);
  length = new_length;
}

SequenceKv SequenceKv::Fork(BlockPool& pool) const {
  SequenceKv copy(num_layers(), block_size_);
  copy.tables_ = tables_;
  copy.lengths_ = lengths_;
  copy.num_positions_ = num_positions_;
  for (const auto& table : tables_) {
    for (BlockId b : table) pool.Ref(b);
  }
  return copy;
}

bool SequenceKv::NeedsCopyOnWrite(const BlockPool& pool, int32_t layer) const {
  const auto& table = tables_[static_cast<size_t>(layer)];
  const int64_t len = lengths_[static_cast<size_t>(layer)];
  return len % block_size_ != 0 && !table.empty() && pool.ref_count(table.back()) > 1;
}

void SequenceKv::ReplaceBlock(BlockPool& pool, int32_t layer, int64_t index, BlockId block) {
  BlockId& slot = tables_[static_cast<size_t>(layer)][static_cast<size_t>(index)];
  pool.Unref(slot);
  slot = block;
}

int64_t SequenceKv::num_blocks() const {
  int64_t n = 0;
  for (const auto& t : tables_) n += static_cast<int64_t>(t.size());
  return n;
}

}  // namespace funnel
