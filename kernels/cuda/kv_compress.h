// KV compression at the end of prefill on the GPU (fp32), one layer at a time.
// CPU twins: kernels/cpu/kv_compress.h (WindowScores, H2oScores, Pool1d, AverageRows,
// TopKIndices).
// Keys/values of the prompt are contiguous per KV head: [num_kv_heads][n][head_dim].
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace funnel::cuda {

// scores[h][j] for query head h and prefix key j < n - w: the fp32 softmax of window query i
// (position n - w + i, seeing keys [0, n - w + i]) summed over the w window rows.
// q_window: [w, num_heads, head_dim]. scores: [num_heads][n - w] (overwritten).
int LaunchWindowScores(const float* q_window, const float* keys, int64_t n, int64_t w,
                       int32_t num_heads, int32_t num_kv_heads, int32_t head_dim, float scale,
                       float* scores, void* stream);

// H2O: scores[h][j] for prefix key j < n - w: the fp32 causal softmax of every prompt query i
// (position i, seeing keys [0, i]) summed over i (column sums). q_all: [n, num_heads, head_dim].
// One block per (query, head), O(n^2 head_dim) work: meant for prompts of a few thousand tokens.
int LaunchH2oScores(const float* q_all, const float* keys, int64_t n, int64_t w, int32_t num_heads,
                    int32_t num_kv_heads, int32_t head_dim, float scale, float* scores,
                    void* stream);

// out[kv][j] = mean over the group's query heads of pool(scores[h])[j]; pooling stride 1,
// padding kernel/2 (max ignores padding, avg counts it as zeros). kernel 1 = no pooling.
int LaunchPoolAndAverage(const float* scores, int64_t prefix, int32_t num_heads,
                         int32_t num_kv_heads, int32_t kernel, bool max_pool, float* out,
                         void* stream);

// Per KV head: the k largest of scores[kv][0, prefix) (ties: lower index), ascending, then the
// window entries prefix .. prefix + w - 1. kept: [num_kv_heads][k + w]. One block per KV head
// radix-selects the k-th largest score and compacts in index order (no sort). The workspace
// arguments are kept for future multi-block variants; TopKWorkspaceBytes is 0 now.
size_t TopKWorkspaceBytes(int64_t prefix, int32_t num_kv_heads, int64_t k);
int LaunchTopKWithWindow(const float* scores, int64_t prefix, int32_t num_kv_heads, int64_t k,
                         int64_t w, int32_t* kept, void* workspace, size_t workspace_bytes,
                         void* stream);

// Writes the kept rows of keys/values into pool blocks: entry e of KV head h goes to
// table[e / block_size], slot e % block_size (the CPU pool layout), rounded to the pool's
// format (kv_dtype).
int LaunchGatherKept(const float* keys, const float* values, int64_t n, const int32_t* kept,
                     int64_t count, int32_t num_kv_heads, int32_t head_dim, const int32_t* table,
                     int32_t block_size, void* pool, Dtype kv_dtype, void* stream);

}  // namespace funnel::cuda
