// When a runner step may end a compressed prefill, and with which per-layer budgets. Shared by
// every ModelRunner so that they accept and refuse the same steps.
//
// A prompt is compressed by the step that feeds its last tokens (StepSequence::policy set).
// Earlier steps of the same sequence, without a policy, wrote its first tokens uncompressed, so
// the cache then holds exactly num_positions entries in every layer (temporary full K/V). The
// compressing step scores all of the prompt's entries (cached and new) and keeps, per layer, the
// budget's entries. What that step must itself contain:
//  - snapkv / pyramidkv: at least the observation window (its queries score the keys);
//  - h2o: the whole prompt (it sums the attention of every prompt query);
//  - streamingllm: any number of tokens (it keeps positions, not scores).
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "runtime/exec/model_runner.h"
#include "runtime/kv/kv_policy.h"
#include "runtime/kv/layer_budget.h"

namespace funnel {

// Prompt tokens, counted from the end, that the compressing step of `budgets` must feed itself.
int64_t CompressionStepMinTokens(KvMethod method, const LayerBudgets& budgets);

// The budgets of the prompt that `seq` ends: compress == false when it has no policy or keeps
// everything. InvalidArgument when the policy cannot apply to this step (the cache is not an
// uncompressed prefix of the prompt, or the step lacks the tokens the method needs).
absl::StatusOr<LayerBudgets> StepCompressionBudgets(const StepSequence& seq, int32_t num_layers);

}  // namespace funnel
