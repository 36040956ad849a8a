// Causal attention of new query tokens over a paged KV cache (one layer, one sequence).
#pragma once

#include <cstdint>
#include <vector>

namespace funnel {

// Geometry of one pool block: K then V for all KV heads of one layer, `block_size` slots each.
// K[h][s][:] is at block + (h * block_size + s) * head_dim; V[h][s][:] follows all of K.
struct PagedKvGeometry {
  int64_t block_size = 16;
  int64_t num_kv_heads = 1;
  int64_t head_dim = 64;

  int64_t BlockFloats() const { return 2 * num_kv_heads * block_size * head_dim; }
  int64_t KOffset(int64_t head, int64_t slot) const { return (head * block_size + slot) * head_dim; }
  int64_t VOffset(int64_t head, int64_t slot) const {
    return num_kv_heads * block_size * head_dim + KOffset(head, slot);
  }
  // Appends entry `slot` of `block` (BlockFloats() floats) to `out` as [2][num_kv_heads][head_dim]:
  // the K rows, then the V rows (the entry layout of ModelRunner::ExportLayer).
  void AppendEntry(const float* block, int64_t slot, std::vector<float>& out) const {
    for (int64_t h = 0; h < num_kv_heads; ++h) {
      out.insert(out.end(), block + KOffset(h, slot), block + KOffset(h, slot) + head_dim);
    }
    for (int64_t h = 0; h < num_kv_heads; ++h) {
      out.insert(out.end(), block + VOffset(h, slot), block + VOffset(h, slot) + head_dim);
    }
  }
};

struct PagedAttentionArgs {
  const float* q = nullptr;  // [n_q, num_heads, head_dim], RoPE applied
  float* out = nullptr;      // [n_q, num_heads, head_dim]
  int64_t n_q = 0;
  int64_t num_heads = 0;     // query heads; a multiple of geometry.num_kv_heads
  const float* pool = nullptr;
  PagedKvGeometry geometry;
  const int32_t* block_table = nullptr;  // covers kv_len entries
  int64_t kv_len = 0;  // stored entries, the n_q new ones last; query i sees [0, kv_len - n_q + i]
  float scale = 1.0f;
};

// Per-thread scratch for PagedAttentionKvHead, reused across calls.
struct AttentionScratch {
  std::vector<float> keys, values, scores;
};

// Computes the output of the query heads that share KV head `kv_head` (GQA group).
// Decode-sized n_q reads K/V straight from the blocks; long n_q gathers the head's K/V and uses
// sgemm tiles. Softmax in fp32 over all visible entries.
void PagedAttentionKvHead(const PagedAttentionArgs& args, int64_t kv_head, AttentionScratch& scratch);

// Causal attention of the query heads sharing `kv_head` over contiguous keys/values
// [kv_len, head_dim] of that head (the new n_q queries are the last n_q entries). Same output
// layout as PagedAttentionKvHead; uses sgemm tiles.
void ContiguousAttentionKvHead(const PagedAttentionArgs& args, int64_t kv_head, const float* keys,
                               const float* values, AttentionScratch& scratch);

// Plain-loop reference (double accumulation), for tests.
void PagedAttentionReference(const PagedAttentionArgs& args);

}  // namespace funnel
