// Per-request sampling parameters and their validation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace funnel {

inline constexpr int kMaxStopStrings = 16;
inline constexpr int kMaxStopStringBytes = 256;

struct SamplingParams {
  // 0 = greedy (argmax, ties -> lowest id); otherwise logits are divided by it.
  float temperature = 1.0f;
  // Keep only the k most likely tokens; 0 or -1 = disabled.
  int32_t top_k = 0;
  // Keep the smallest most-likely set whose mass reaches top_p; in (0, 1], 1 = disabled.
  float top_p = 1.0f;
  // Drop tokens whose probability is below min_p * (max probability); in [0, 1], 0 = disabled.
  float min_p = 0.0f;
  // > 0; 1 = off. HF/vLLM semantics over prompt + generated tokens:
  // logit > 0 ? logit / p : logit * p.
  float repetition_penalty = 1.0f;
  // [-2, 2]. OpenAI semantics over generated tokens only: logit -= presence if count > 0.
  float presence_penalty = 0.0f;
  // [-2, 2]. OpenAI semantics over generated tokens only: logit -= frequency * count.
  float frequency_penalty = 0.0f;
  // Same seed -> same output. Unset: the caller supplies a seed to the Sampler.
  std::optional<uint64_t> seed;
  // >= 0; 0 = prefill only.
  int32_t max_tokens = 16;
  // At most kMaxStopStrings, each non-empty and at most kMaxStopStringBytes bytes.
  std::vector<std::string> stop;
  bool ignore_eos = false;

  // InvalidArgument naming the first bad field and its allowed range; NaN is rejected.
  absl::Status Validate() const;
};

}  // namespace funnel
