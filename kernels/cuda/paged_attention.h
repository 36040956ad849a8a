// Paged KV cache kernels on the GPU: fp32 arithmetic over a pool stored as fp32, bf16 or fp16
// (kv_dtype; the pool pointer holds raw bits of that format). Pool layout as on the CPU
// (kernels/cpu/paged_attention.h, PagedKvGeometry): block b holds K[kv_head][slot][head_dim] then
// V likewise. CPU twins: PagedAttentionKvHead (n_q = 1) over the pool widened to fp32, and the KV
// writes of CpuModelRunner (followed by the rounding of convert.h for 16-bit pools).
#pragma once

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace funnel::cuda {

// Decode attention: one new query token per sequence, attending to all kv_lens[s] stored entries
// of its block table (a different length per sequence, and per layer in the caller's loop).
// Split along the sequence (flash-decoding): `num_splits` partial results per (sequence, head)
// are combined in a second kernel.
struct PagedDecodeParams {
  const float* q = nullptr;  // [num_seqs, num_heads, head_dim]
  float* out = nullptr;      // [num_seqs, num_heads, head_dim]
  int32_t num_seqs = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;  // num_heads / num_kv_heads <= 8
  int32_t head_dim = 0;      // <= 256
  const void* pool = nullptr;
  Dtype kv_dtype = Dtype::kF32;  // the pool's storage format
  int32_t block_size = 16;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  // The row stride of block_tables. 0: every row reads the same table (the rows are the new
  // tokens of one sequence, each with its own causal kv_lens[s]: prefill as decode rows).
  int32_t max_blocks_per_seq = 0;
  const int32_t* kv_lens = nullptr;  // [num_seqs], >= 1
  float scale = 1.0f;
  int32_t num_splits = 1;      // >= 1; entries per split = ceil(max_kv_len / num_splits)
  int32_t max_kv_len = 0;      // max over kv_lens
  float* workspace = nullptr;  // PagedDecodeWorkspaceFloats(params) floats
};

int64_t PagedDecodeWorkspaceFloats(const PagedDecodeParams& params);
int LaunchPagedDecodeAttention(const PagedDecodeParams& params, void* stream);

// Writes rows of new K/V [rows, num_kv_heads, head_dim] (fp32) into the pool at entry slots
// (slots[r] = block_id * block_size + slot within the block), rounded to the pool's format.
int LaunchAppendKv(const float* k, const float* v, const int64_t* slots, int64_t rows,
                   int32_t num_kv_heads, int32_t head_dim, int32_t block_size, void* pool,
                   Dtype kv_dtype, void* stream);

// The first `count` entries of one sequence's blocks (entry e in table[e / block_size], slot
// e % block_size), widened to fp32 into a contiguous workspace laid out [2][num_kv_heads][n]
// [head_dim] (all keys, then all values; count <= n). The inverse of LaunchGatherKept with the
// identity selection.
int LaunchReadEntries(const void* pool, Dtype kv_dtype, const int32_t* table, int32_t block_size,
                      int64_t count, int32_t num_kv_heads, int32_t head_dim, int64_t n,
                      float* workspace, void* stream);

}  // namespace funnel::cuda
