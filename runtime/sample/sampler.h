// Picks the next token from vocab logits according to SamplingParams.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "runtime/sample/sampling_params.h"

namespace funnel {

// Pipeline: penalties -> (argmax if temperature == 0) -> temperature -> top-k -> top-p -> min-p
// -> renormalize -> one draw from a std::mt19937_64. Deterministic for a given seed and inputs,
// independent of the standard library implementation. Ties in ranking go to the lower id.
// Not thread-safe; one Sampler per sequence.
class Sampler {
 public:
  // `params` must have passed Validate(). `default_seed` is used when params.seed is unset (the
  // caller draws it).
  Sampler(const SamplingParams& params, uint64_t default_seed);

  // Picks the next token. `logits` are the raw vocab logits (finite or -inf); they are not
  // modified. `prompt` and `generated` are the ids so far, used for the penalties; ids outside
  // [0, logits.size()) are ignored. Returns -1 only if `logits` is empty. If every logit is
  // -inf, returns 0.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> prompt,
                 std::span<const int32_t> generated);

  // Log-softmax, at the last chosen token, of the processed distribution: after penalties and
  // temperature (temperature 1 when greedy), before top-k/top-p/min-p truncation. Computed on
  // demand in O(vocab); 0 before the first Sample.
  float last_logprob() const;

 private:
  void ApplyPenalties(std::span<const int32_t> prompt, std::span<const int32_t> generated);
  void CountTokens(std::span<const int32_t> ids);
  void ResetCounts();
  // Samples from the temperature-scaled logits_, whose maximum is `max_logit`.
  int32_t SampleScaled(float max_logit);
  // Leaves in candidates_ the top-k ids (all ids when top-k is off), with weights_[id] =
  // exp(logits_[id] - max_logit) set for each; returns the sum of those weights.
  double SelectTopK(float max_logit);
  // Reorders candidates_ so that its first N entries are the N most likely, N being the
  // smallest count holding top_p of `total_weight`; returns N. Expected O(candidates).
  size_t TopPPrefixLength(double total_weight);
  void ApplyMinP();
  int32_t Draw();

  SamplingParams params_;
  std::mt19937_64 rng_;
  int32_t chosen_ = -1;        // Last result of Sample.
  float max_logit_ = 0.0f;     // Maximum of logits_.
  std::vector<float> logits_;  // Processed logits of the last Sample call.
  // Scratch buffers reused across calls.
  std::vector<float> weights_;
  std::vector<int32_t> candidates_;
  std::vector<double> bucket_mass_;  // top-p mass per bucket.
  std::vector<int32_t> counts_;      // Per-token counts; all zero between calls.
  std::vector<int32_t> touched_;     // Ids with a non-zero count in counts_.
};

}  // namespace funnel
