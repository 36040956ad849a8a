// Exact KV block arithmetic for admission (DESIGN.md section 4).
//
// A request's footprint is fixed before it runs: each layer ends with final_l entries, where
// final_l = (compressed prompt size of layer l, or the session's layer length + suffix for a
// session fork) + max_tokens (capped by the model context). Blocks are per layer:
// ceil(final_l / block_size). A session fork shares the session's full blocks and copies its
// partially filled last block of each layer (copy-on-write), so it takes
// ceil(final_l / bs) - floor(session_l / bs) new blocks per layer.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/kv/block_pool.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/kv/sequence_kv.h"

namespace funnel {

// Generated entries a sequence may still append after its prompt: max_tokens, capped by the
// context left after `positions_after_prefill`. Counts the last token too (fed in append mode).
int64_t GenerationReserve(int64_t max_tokens, int64_t positions_after_prefill,
                          int64_t context_length);

// Per-layer entries at the end of a fresh prompt's life.
std::vector<int64_t> FreshFinalLengths(const LayerBudgets& budgets, int32_t num_layers,
                                       int64_t reserve);
// Per-layer entries at the end of a fork of a sequence holding `base_lengths` entries.
std::vector<int64_t> ForkFinalLengths(std::span<const int64_t> base_lengths, int64_t suffix,
                                      int64_t reserve);

// Per-layer entries at the peak of a chunked compressed prefill whose uncompressed prefix reaches
// `prefix` entries before the compressing step: max(prefix, final) per layer.
std::vector<int64_t> ChunkedPeakLengths(std::span<const int64_t> final_lengths, int64_t prefix);

// New blocks for a fresh sequence ending at `final_lengths`.
int64_t FreshBlocks(std::span<const int64_t> final_lengths, int32_t block_size);
// New blocks for a fork of a sequence holding `base_lengths` (shared) ending at `final_lengths`.
int64_t ForkBlocks(std::span<const int64_t> base_lengths, std::span<const int64_t> final_lengths,
                   int32_t block_size);
// Blocks a running sequence may still take from the pool to reach `final_lengths`, one
// copy-on-write copy per layer whose partial last block is shared included.
int64_t RemainingBlocks(const SequenceKv& kv, const BlockPool& pool,
                        std::span<const int64_t> final_lengths);

}  // namespace funnel
