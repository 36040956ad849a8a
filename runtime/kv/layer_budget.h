// Per-layer KV budgets for a prompt under a KvPolicy (pyramidkv-reference.md section 1).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kv/kv_policy.h"

namespace funnel {

// What each layer keeps of an N-token prompt at the end of prefill.
//   compress == false: every layer stores all N entries.
//   compress == true:  layer l stores selected[l] prefix tokens chosen by the method (by score,
//                      or StreamingLLM's sinks) plus the last `window` prompt tokens.
struct LayerBudgets {
  bool compress = false;
  int64_t prompt_tokens = 0;
  int64_t budget = 0;   // effective B (also when given as a ratio); N when not compressing
  int64_t window = 0;
  std::vector<int64_t> selected;

  int64_t stored(int32_t layer) const {
    return compress ? selected[static_cast<size_t>(layer)] + window : prompt_tokens;
  }
  int64_t total_stored() const;
};

// Budget arithmetic (the policy must be valid):
//  - full: no compression. snapkv, h2o: N < B: none; else B - W selected on every layer.
//  - streamingllm: N < B: none; else 4 sinks + the last B - 4 tokens (window = B - 4).
//  - pyramidkv: k = B - W; N < B: none; N < 2k: uniform k; else the linear pyramid from
//    max = 2k - k/beta (layer 0) down to min = k/beta (top), clipped so max <= N - W.
//    kExact rounds the real-valued schedule with largest remainders so the counts sum to L*k;
//    kOfficial reproduces the reference's floors (steps = (max - min) // (L - 1)).
//  A 1-layer model gets k. A ratio that rounds to B = 0 keeps B = 1 (never an empty layer).
LayerBudgets ComputeLayerBudgets(const KvPolicy& policy, int32_t num_layers, int64_t prompt_tokens);

}  // namespace funnel
