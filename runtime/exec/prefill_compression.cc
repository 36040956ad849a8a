#include "runtime/exec/prefill_compression.h"

#include "absl/strings/str_format.h"

namespace funnel {

int64_t CompressionStepMinTokens(KvMethod method, const LayerBudgets& budgets) {
  if (!budgets.compress) return 1;
  switch (method) {
    case KvMethod::kSnapKv:
    case KvMethod::kPyramidKv:
      return budgets.window;
    case KvMethod::kH2o:
      return budgets.prompt_tokens;
    case KvMethod::kStreamingLlm:
    case KvMethod::kFull:
      return 1;
  }
  return budgets.prompt_tokens;
}

absl::StatusOr<LayerBudgets> StepCompressionBudgets(const StepSequence& seq, int32_t num_layers) {
  if (seq.policy == nullptr || !seq.policy->compresses()) return LayerBudgets{};
  const SequenceKv& kv = *seq.kv;
  const int64_t cached = kv.num_positions();
  for (int32_t l = 0; l < kv.num_layers(); ++l) {
    if (kv.layer_length(l) != cached) {
      return absl::InvalidArgumentError(
          absl::StrFormat("cannot compress: layer %d holds %d entries for %d positions (only an "
                          "uncompressed prompt "
                          "prefix can be compressed)",
                          l, kv.layer_length(l), cached));
    }
  }
  const int64_t n = cached + static_cast<int64_t>(seq.tokens.size());
  LayerBudgets budgets = ComputeLayerBudgets(*seq.policy, num_layers, n);
  const int64_t need = CompressionStepMinTokens(seq.policy->method, budgets);
  if (static_cast<int64_t>(seq.tokens.size()) < need) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot compress: %s needs the prompt's last %d tokens in the compressing step, got %d",
        KvMethodName(seq.policy->method), need, seq.tokens.size()));
  }
  return budgets;
}

}  // namespace funnel
