#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace funnel {
namespace {

constexpr int32_t kMaxTopK = 1024;  // cuda::kMaxSampleTopK

// The top_k ids in rank order: higher logit first, then lower id.
std::vector<int32_t> RankedTopK(std::span<const float> logits, int32_t top_k) {
  const auto vocab = static_cast<int32_t>(logits.size());
  const int32_t k = std::clamp(top_k, 1, std::min(vocab, kMaxTopK));
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  const auto more_likely = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), more_likely);
  ids.resize(static_cast<size_t>(k));
  return ids;
}

}  // namespace

int32_t ArgmaxReference(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best;
}

SampleChoice SampleRowReference(std::span<const float> logits, float temperature, int32_t top_k,
                                float top_p, float uniform) {
  SampleChoice choice;
  if (logits.empty()) return choice;
  choice.token = ArgmaxReference(logits);
  if (!(temperature > 0.0f) || logits[static_cast<size_t>(choice.token)] == -INFINITY) {
    return choice;
  }
  const std::vector<int32_t> ids = RankedTopK(logits, top_k);
  const float max_scaled = logits[static_cast<size_t>(ids[0])] / temperature;
  std::vector<float> w(ids.size());
  double total = 0.0;
  for (size_t j = 0; j < ids.size(); ++j) {
    w[j] = std::exp(logits[static_cast<size_t>(ids[j])] / temperature - max_scaled);
    total += w[j];
  }
  const double target = std::clamp(top_p, 0.0f, 1.0f) * total;
  size_t kept = 0;
  double mass = 0.0;
  while (kept < ids.size() && (kept == 0 || mass < target)) mass += w[kept++];
  if (top_p < 1.0f) {  // a cut within rounding of the target could keep one more or one less
    choice.margin =
        std::min(std::fabs(mass - target), std::fabs(mass - w[kept - 1] - target)) / total;
  }
  const double draw = std::clamp(uniform, 0.0f, 1.0f) * mass;
  double cumulative = 0.0;
  choice.token = ids[kept - 1];
  for (size_t j = 0; j < kept; ++j) {
    const double before = cumulative;
    cumulative += w[j];
    choice.margin = std::min(choice.margin, std::fabs(draw - cumulative) / mass);
    if (draw < cumulative) {
      choice.token = ids[j];
      choice.margin = std::min(choice.margin, std::fabs(draw - before) / mass);
      break;
    }
  }
  return choice;
}

}  // namespace funnel
