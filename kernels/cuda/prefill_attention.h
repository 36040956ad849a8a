// Paged causal prefill attention on the GPU (fp32 arithmetic; the pool stored as fp32, bf16 or
// fp16), tiled flash-attention style: online softmax
// over K/V tiles staged in shared memory, no [q_len, kv_len] score matrix in memory.
// Pool layout as on the CPU (kernels/cpu/paged_attention.h, PagedKvGeometry).
// CPU twin: PagedAttentionKvHead with n_q = q_len, once per (sequence, KV head).
#pragma once

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace funnel::cuda {

// Sequence s owns query rows [q_indptr[s], q_indptr[s + 1]) of q and out (q_len = their count)
// and KV entries [0, kv_lens[s]) through row s of block_tables; its new tokens are the last
// q_len entries, so query row i (0-based within s) sees entries [0, kv_lens[s] - q_len + i].
// Works for plain prefill (kv_len = q_len), session suffixes and compressed caches alike.
// Contract: kv_lens[s] >= q_len(s) >= 0; a row that would see no entry gets zeros.
struct PagedPrefillParams {
  const float* q = nullptr;  // [total_q, num_heads, head_dim], RoPE and no scale applied
  float* out = nullptr;      // [total_q, num_heads, head_dim]
  int32_t num_seqs = 0;      // <= 65535
  int32_t num_heads = 0;     // a multiple of num_kv_heads
  int32_t num_kv_heads = 0;  // num_heads / num_kv_heads <= kMaxPrefillGroup
  int32_t head_dim = 0;      // 1..256 (fast paths: <= 32, 64, 128, 256)
  const void* pool = nullptr;
  Dtype kv_dtype = Dtype::kF32;           // the pool's storage format
  int32_t block_size = 16;                // >= 1
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0;         // row stride of block_tables (0: all rows share one)
  const int32_t* q_indptr = nullptr;      // [num_seqs + 1], non-decreasing, q_indptr[0] >= 0
  const int32_t* kv_lens = nullptr;       // [num_seqs]
  int32_t max_q_len = 0;                  // >= max over q_len(s), >= 1
  float scale = 1.0f;
};

inline constexpr int32_t kMaxPrefillGroup = 16;

// Returns a CUDA error code (0 = success); cudaErrorInvalidValue for unsupported shapes.
// Allocates nothing; asynchronous on `stream` (a cudaStream_t).
int LaunchPagedPrefillAttention(const PagedPrefillParams& params, void* stream);

}  // namespace funnel::cuda
