// Log-probabilities reported with generated tokens (GenerateRequest::top_logprobs).
//
// The distribution is the processed one Sampler::last_logprob() describes: raw logits, then the
// repetition / presence / frequency penalties, then temperature (1 when greedy); before top-k,
// top-p and min-p truncation. Computed only when a request asks for logprobs (O(vocab)).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/engine/request.h"
#include "runtime/sample/sampling_params.h"

namespace funnel {

struct TokenLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;  // the `top_n` most likely, most likely first (ties: lower id)
};

// `prompt` and `generated` are the ids before `chosen` was sampled (as passed to Sampler::Sample).
// `scratch` is reused between calls.
TokenLogprobs ComputeLogprobs(std::span<const float> logits, const SamplingParams& params,
                              std::span<const int32_t> prompt, std::span<const int32_t> generated,
                              int32_t chosen, int32_t top_n, std::vector<float>& scratch);

}  // namespace funnel
