// Single-sequence generation on any ModelRunner: prefill, then sample/decode until a stop.
// Used by `funnel run` and the golden tests; the server's engine batches many of these.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/exec/cpu_model_runner.h"  // RunnerOptions, for callers
#include "runtime/exec/model_runner.h"
#include "runtime/sample/sampling_params.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

struct GenerationTimings {
  double prefill_ms = 0.0;
  double decode_ms = 0.0;
  int64_t prefill_tokens = 0;
  int64_t decode_steps = 0;  // forward passes after prefill
};

// The sequence's cache right after prefill (before any generated token is appended).
struct KvStats {
  std::string method = "full";
  int64_t budget = 0;  // effective B; the prompt length when nothing is compressed
  int64_t window = 0;
  std::vector<int64_t> per_layer_tokens;
  int64_t kv_bytes = 0;       // pool blocks held, in bytes
  int64_t full_kv_bytes = 0;  // what an uncompressed cache of the prompt would hold
};

struct GenerationResult {
  std::vector<int32_t> output_ids;
  std::string text;
  std::string finish_reason;  // "stop" (EOS or stop string) or "length"
  GenerationTimings timings;
  KvStats kv;
};

// Receives the logits of every forward position (prompt positions included), in order.
using LogitsObserver = std::function<void(int64_t position, std::span<const float> logits)>;

// Runs `prompt` (ids exactly as given; at least one) and generates. Releases the sequence's KV
// blocks before returning. Text streams through `on_text` (UTF-8 complete, stop strings cut).
absl::StatusOr<GenerationResult> Generate(
    ModelRunner& runner, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
    const SamplingParams& params, uint64_t default_seed, const KvPolicy& policy = {},
    const LogitsObserver& observe_logits = nullptr,
    const std::function<void(std::string_view)>& on_text = nullptr);

}  // namespace funnel
