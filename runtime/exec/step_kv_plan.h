// Host-side bookkeeping of one batched ModelRunner step, shared by every backend so that they
// accept, refuse and lay out the same steps: batch validation, the compression budgets of the
// prompts the step ends, and the KV reservation (copy-on-write and growth of every layer).
//
// Thread rules: engine thread only (ReserveStepKv mutates block tables and the pool).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/exec/model_runner.h"
#include "runtime/kv/block_pool.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/model/model_config.h"

namespace funnel {

// InvalidArgument for an entry without tokens, a cache of another model or block size, an
// invalid policy, or token ids outside the vocabulary.
absl::Status ValidateStepBatch(std::span<const StepSequence> batch, const ModelConfig& config,
                               int32_t block_size);

struct StepKvPlan {
  int32_t num_layers = 0;
  // [seq]: compress == true for the prompts this step ends and compresses
  // (prefill_compression.h); default (no compression) otherwise.
  std::vector<LayerBudgets> budgets;
  // [seq * num_layers]: entries each layer stored before the step (filled by ReserveStepKv).
  std::vector<int64_t> base_lengths;

  bool compressing(size_t s) const { return budgets[s].compress; }
  bool any_compressing() const;
  int64_t base_length(size_t s, int32_t layer) const {
    return base_lengths[s * static_cast<size_t>(num_layers) + static_cast<size_t>(layer)];
  }
  // Entries `layer` of batch[s] stores after the step: its budget when compressing, else all.
  int64_t StoredAfterStep(std::span<const StepSequence> batch, size_t s, int32_t layer) const;
};

// The budgets of every sequence of a validated batch; changes nothing. InvalidArgument when a
// policy cannot apply to its step (StepCompressionBudgets).
absl::StatusOr<StepKvPlan> PlanStep(std::span<const StepSequence> batch, int32_t num_layers);

// Copies the contents of pool block `from` into the fresh block `to` (backend storage).
using CopyBlockFn = std::function<absl::Status(BlockId from, BlockId to)>;

// All-or-nothing on blocks: ResourceExhausted (nothing changed) when the pool cannot supply every
// block the step needs (growth and copy-on-write, counted over all sequences and layers).
// Otherwise records plan.base_lengths, replaces each shared, partially filled last block by a
// private copy (copy_block) and grows every layer to StoredAfterStep. An error of copy_block is
// returned as is (a backend fault; the tables are then partly updated).
absl::Status ReserveStepKv(std::span<const StepSequence> batch, StepKvPlan& plan, BlockPool& pool,
                           const CopyBlockFn& copy_block);

}  // namespace funnel
