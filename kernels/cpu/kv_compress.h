// Scoring and selection of KV entries at the end of prefill (pyramidkv-reference.md section 2).
// One KV head at a time; keys are contiguous [n, head_dim] (RoPE applied), queries are rows of
// [*, num_heads, head_dim] with the group of query heads sharing the KV head adjacent.
#pragma once

#include <cstdint>
#include <vector>

namespace funnel {

enum class PoolingKind { kMax, kAvg };

struct ScoreArgs {
  const float* q = nullptr;  // row 0 = the first query row to use; row stride num_heads*head_dim
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  const float* keys = nullptr;  // [n, head_dim] of this KV head
  int64_t n = 0;                // prompt length
  float scale = 1.0f;
};

// Observation-window scores: for each query head h of the group of `kv_head`, the softmax (fp32,
// over all keys each window query can see: window query i sits at position n - w + i and sees
// keys [0, n - w + i]) summed over the last w query rows, for the prefix keys [0, n - w).
// args.q points at the first of the w window rows. scores: [group][n - w].
void WindowScores(const ScoreArgs& args, int64_t kv_head, int64_t w, std::vector<float>& scores);

// H2O: column sums over all n queries of causal softmax attention, for prefix keys [0, n - w).
// args.q points at query row 0. scores: [group][n - w].
void H2oScores(const ScoreArgs& args, int64_t kv_head, int64_t w, std::vector<float>& scores);

// 1-D pooling along the sequence, stride 1, padding kernel/2 (max ignores the padding; avg
// counts it as zeros, like torch's avg_pool1d). out has n values.
void Pool1d(const float* in, int64_t n, int32_t kernel, PoolingKind kind, float* out);

// Averages `group` rows of `n` scores into out[n].
void AverageRows(const float* rows, int64_t group, int64_t n, float* out);

// Indices of the k largest scores (ties: lower index first), sorted ascending.
std::vector<int32_t> TopKIndices(const float* scores, int64_t n, int64_t k);

}  // namespace funnel
