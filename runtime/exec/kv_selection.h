// Which prompt entries one KV head of one layer keeps at the end of prefill.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kv/kv_policy.h"

namespace funnel {

struct SelectionInput {
  KvMethod method = KvMethod::kFull;
  KvPooling pooling = KvPooling::kMax;
  int32_t kernel = 7;
  // Query rows of the prompt's last `q_rows` positions [q_rows, num_heads, head_dim], RoPE
  // applied: at least the window for snapkv / pyramidkv (chunked prefills have only their last
  // chunk's rows), all n for h2o.
  const float* q = nullptr;
  int64_t q_rows = 0;
  const float* keys = nullptr;  // this KV head's keys [n, head_dim], RoPE applied
  int64_t n = 0;                // prompt length
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t window = 0;    // the last `window` entries are always kept
  int64_t selected = 0;  // prefix entries chosen in addition (LayerBudgets::selected[layer])
};

struct SelectionScratch {
  std::vector<float> scores, pooled, averaged;
};

// Kept entry indices for `kv_head`, ascending, `selected + window` of them:
//  - streamingllm: the first `selected` (sinks) and the window;
//  - snapkv / pyramidkv: window scores (last `window` queries, fp32 softmax over all visible keys,
//    summed over the window rows), pooled per query head, averaged over the group, top-k;
//  - h2o: causal attention column sums of all n queries, averaged over the group, top-k;
//  - full: everything.
// Top-k ties go to the lower index.
std::vector<int32_t> SelectKeptIndices(const SelectionInput& in, int64_t kv_head,
                                       SelectionScratch& scratch);

}  // namespace funnel
