#include "runtime/exec/step_kv_plan.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "runtime/exec/prefill_compression.h"
#include "runtime/util/status_macros.h"

namespace funnel {

absl::Status ValidateStepBatch(std::span<const StepSequence> batch, const ModelConfig& config,
                               int32_t block_size) {
  for (size_t s = 0; s < batch.size(); ++s) {
    const StepSequence& seq = batch[s];
    if (seq.kv == nullptr || seq.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("batch entry %d has no tokens", s));
    }
    if (seq.kv->num_layers() != config.num_layers || seq.kv->block_size() != block_size) {
      return absl::InvalidArgumentError("sequence cache does not match this model");
    }
    if (seq.policy != nullptr) {
      if (absl::Status st = seq.policy->Validate(); !st.ok()) return st;
    }
    for (int32_t id : seq.tokens) {
      if (id < 0 || id >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "token id %d is outside the vocabulary [0, %d)", id, config.vocab_size));
      }
    }
  }
  return absl::OkStatus();
}

bool StepKvPlan::any_compressing() const {
  return std::any_of(budgets.begin(), budgets.end(),
                     [](const LayerBudgets& b) { return b.compress; });
}

int64_t StepKvPlan::StoredAfterStep(std::span<const StepSequence> batch, size_t s,
                                    int32_t layer) const {
  if (compressing(s)) return budgets[s].stored(layer);
  return batch[s].kv->layer_length(layer) + static_cast<int64_t>(batch[s].tokens.size());
}

absl::StatusOr<StepKvPlan> PlanStep(std::span<const StepSequence> batch, int32_t num_layers) {
  StepKvPlan plan;
  plan.num_layers = num_layers;
  plan.budgets.assign(batch.size(), LayerBudgets{});
  for (size_t s = 0; s < batch.size(); ++s) {
    ASSIGN_OR_RETURN(plan.budgets[s], StepCompressionBudgets(batch[s], num_layers));
  }
  return plan;
}

absl::Status ReserveStepKv(std::span<const StepSequence> batch, StepKvPlan& plan, BlockPool& pool,
                           const CopyBlockFn& copy_block) {
  const int32_t layers = plan.num_layers;
  int64_t needed = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    for (int32_t l = 0; l < layers; ++l) {
      needed += batch[s].kv->BlocksNeeded(l, plan.StoredAfterStep(batch, s, l));
      needed += batch[s].kv->NeedsCopyOnWrite(pool, l) ? 1 : 0;
    }
  }
  if (needed > pool.num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("KV cache full: step needs %d blocks, %d of %d free", needed,
                        pool.num_free(), pool.num_blocks()));
  }
  plan.base_lengths.assign(batch.size() * static_cast<size_t>(layers), 0);
  for (size_t s = 0; s < batch.size(); ++s) {
    SequenceKv& kv = *batch[s].kv;
    for (int32_t l = 0; l < layers; ++l) {
      plan.base_lengths[s * static_cast<size_t>(layers) + static_cast<size_t>(l)] =
          kv.layer_length(l);
      if (kv.NeedsCopyOnWrite(pool, l)) {
        const int64_t last = static_cast<int64_t>(kv.block_table(l).size()) - 1;
        const BlockId copy = *pool.Allocate();  // counted in `needed`
        if (absl::Status st = copy_block(kv.block_table(l)[static_cast<size_t>(last)], copy);
            !st.ok()) {
          pool.Unref(copy);
          return st;
        }
        kv.ReplaceBlock(pool, l, last, copy);
      }
      RETURN_IF_ERROR(kv.Grow(pool, l, plan.StoredAfterStep(batch, s, l)));
    }
  }
  return absl::OkStatus();
}

}  // namespace funnel
