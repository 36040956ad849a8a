#include "runtime/engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/container/flat_hash_map.h"

namespace funnel {
namespace {

// Same formulas as Sampler::ApplyPenalties (sampling_params.h semantics).
void ApplyPenalties(std::vector<float>& logits, const SamplingParams& params,
                    std::span<const int32_t> prompt, std::span<const int32_t> generated) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  const auto in_vocab = [vocab](int32_t id) { return id >= 0 && id < vocab; };
  if (params.repetition_penalty != 1.0f) {
    absl::flat_hash_map<int32_t, bool> seen;
    for (std::span<const int32_t> ids : {prompt, generated}) {
      for (int32_t id : ids) {
        if (in_vocab(id)) seen[id] = true;
      }
    }
    for (const auto& [id, unused] : seen) {
      float& logit = logits[static_cast<size_t>(id)];
      logit = logit > 0.0f ? logit / params.repetition_penalty : logit * params.repetition_penalty;
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    absl::flat_hash_map<int32_t, int32_t> counts;
    for (int32_t id : generated) {
      if (in_vocab(id)) ++counts[id];
    }
    for (const auto& [id, count] : counts) {
      logits[static_cast<size_t>(id)] -=
          static_cast<float>(count) * params.frequency_penalty + params.presence_penalty;
    }
  }
}

}  // namespace

TokenLogprobs ComputeLogprobs(std::span<const float> logits, const SamplingParams& params,
                              std::span<const int32_t> prompt, std::span<const int32_t> generated,
                              int32_t chosen, int32_t top_n, std::vector<float>& scratch) {
  TokenLogprobs out;
  out.chosen.token = chosen;
  if (logits.empty()) return out;
  scratch.assign(logits.begin(), logits.end());
  ApplyPenalties(scratch, params, prompt, generated);
  if (params.temperature > 0.0f) {
    for (float& l : scratch) l /= params.temperature;
  }
  const float max_logit = *std::max_element(scratch.begin(), scratch.end());
  double sum = 0.0;
  if (max_logit != -std::numeric_limits<float>::infinity()) {
    for (float l : scratch) sum += std::exp(static_cast<double>(l) - max_logit);
  }
  const double log_z = static_cast<double>(max_logit) + std::log(sum);
  const auto logprob = [&](int32_t id) {
    if (sum == 0.0) return -std::numeric_limits<float>::infinity();  // every logit is -inf
    return static_cast<float>(static_cast<double>(scratch[static_cast<size_t>(id)]) - log_z);
  };
  if (chosen >= 0 && chosen < static_cast<int32_t>(scratch.size())) out.chosen.logprob = logprob(chosen);
  const size_t n = std::min<size_t>(static_cast<size_t>(std::max(top_n, 0)), scratch.size());
  if (n == 0) return out;
  std::vector<int32_t> ids(scratch.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end(),
                    [&](int32_t a, int32_t b) {
                      const float la = scratch[static_cast<size_t>(a)];
                      const float lb = scratch[static_cast<size_t>(b)];
                      return la > lb || (la == lb && a < b);
                    });
  out.top.reserve(n);
  for (size_t i = 0; i < n; ++i) out.top.push_back({ids[i], logprob(ids[i])});
  return out;
}

}  // namespace funnel
