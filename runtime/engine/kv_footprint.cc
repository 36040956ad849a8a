#include "runtime/engine/kv_footprint.h"

#include <algorithm>

namespace funnel {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int64_t GenerationReserve(int64_t max_tokens, int64_t positions_after_prefill,
                          int64_t context_length) {
  return std::max<int64_t>(0, std::min(max_tokens, context_length - positions_after_prefill));
}

std::vector<int64_t> FreshFinalLengths(const LayerBudgets& budgets, int32_t num_layers,
                                       int64_t reserve) {
  std::vector<int64_t> out(static_cast<size_t>(num_layers));
  for (int32_t l = 0; l < num_layers; ++l) {
    out[static_cast<size_t>(l)] =
        (budgets.compress ? budgets.stored(l) : budgets.prompt_tokens) + reserve;
  }
  return out;
}

std::vector<int64_t> ForkFinalLengths(std::span<const int64_t> base_lengths, int64_t suffix,
                                      int64_t reserve) {
  std::vector<int64_t> out(base_lengths.begin(), base_lengths.end());
  for (int64_t& n : out) n += suffix + reserve;
  return out;
}

std::vector<int64_t> ChunkedPeakLengths(std::span<const int64_t> final_lengths, int64_t prefix) {
  std::vector<int64_t> out(final_lengths.begin(), final_lengths.end());
  for (int64_t& n : out) n = std::max(n, prefix);
  return out;
}

int64_t FreshBlocks(std::span<const int64_t> final_lengths, int32_t block_size) {
  int64_t blocks = 0;
  for (int64_t n : final_lengths) blocks += CeilDiv(n, block_size);
  return blocks;
}

int64_t ForkBlocks(std::span<const int64_t> base_lengths, std::span<const int64_t> final_lengths,
                   int32_t block_size) {
  int64_t blocks = 0;
  for (size_t l = 0; l < final_lengths.size(); ++l) {
    blocks += CeilDiv(final_lengths[l], block_size) - base_lengths[l] / block_size;
  }
  return blocks;
}

int64_t RemainingBlocks(const SequenceKv& kv, const BlockPool& pool,
                        std::span<const int64_t> final_lengths) {
  int64_t blocks = 0;
  for (int32_t l = 0; l < kv.num_layers(); ++l) {
    blocks += kv.BlocksNeeded(l, final_lengths[static_cast<size_t>(l)]);
    blocks += kv.NeedsCopyOnWrite(pool, l) ? 1 : 0;
  }
  return blocks;
}

}  // namespace funnel
