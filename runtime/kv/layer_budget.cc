#include "runtime/kv/layer_budget.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace funnel {
namespace {

constexpr int64_t kStreamingSinks = 4;

std::vector<int64_t> OfficialPyramid(int64_t k, double beta, int32_t layers, int64_t n, int64_t w) {
  int64_t min_num = static_cast<int64_t>(std::floor(static_cast<double>(k) / beta));
  int64_t max_num = 2 * k - min_num;
  if (max_num >= n - w) {
    max_num = n - w;
    min_num = 2 * k - max_num;
  }
  const int64_t steps = (max_num - min_num) / (layers - 1);
  std::vector<int64_t> b(static_cast<size_t>(layers));
  for (int32_t l = 0; l < layers; ++l) b[l] = max_num - l * steps;
  return b;
}

std::vector<int64_t> ExactPyramid(int64_t k, double beta, int32_t layers, int64_t n, int64_t w) {
  double min_r = static_cast<double>(k) / beta;
  double max_r = 2.0 * static_cast<double>(k) - min_r;
  if (max_r >= static_cast<double>(n - w)) {
    max_r = static_cast<double>(n - w);
    min_r = 2.0 * static_cast<double>(k) - max_r;
  }
  const double step = (max_r - min_r) / (layers - 1);
  std::vector<int64_t> b(static_cast<size_t>(layers));
  std::vector<double> remainder(static_cast<size_t>(layers));
  int64_t sum = 0;
  for (int32_t l = 0; l < layers; ++l) {
    const double real = max_r - l * step;
    b[l] = static_cast<int64_t>(std::floor(real + 1e-9));
    remainder[l] = real - static_cast<double>(b[l]);
    sum += b[l];
  }
  // Largest remainders get the missing units; ties go to lower layers.
  std::vector<int32_t> order(static_cast<size_t>(layers));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t c) { return remainder[a] > remainder[c]; });
  for (int64_t i = 0; sum < layers * k; ++i, ++sum) ++b[order[static_cast<size_t>(i % layers)]];
  for (auto& v : b) v = std::clamp<int64_t>(v, 0, n - w);
  return b;
}

}  // namespace

int64_t LayerBudgets::total_stored() const {
  int64_t t = 0;
  for (int32_t l = 0; l < static_cast<int32_t>(selected.size()); ++l) t += stored(l);
  return compress ? t : prompt_tokens * static_cast<int64_t>(selected.size());
}

LayerBudgets ComputeLayerBudgets(const KvPolicy& policy, int32_t num_layers, int64_t prompt_tokens) {
  LayerBudgets out;
  const int64_t n = prompt_tokens;
  out.prompt_tokens = n;
  out.budget = n;
  out.selected.assign(static_cast<size_t>(num_layers), 0);
  if (policy.method == KvMethod::kFull) return out;
  // A ratio can round to 0 (e.g. 0.01 of 10 tokens); never empty a layer: keep at least one.
  const int64_t b = std::max<int64_t>(1, policy.EffectiveBudget(n));
  if (n < b) return out;
  out.budget = b;
  out.compress = true;
  if (policy.method == KvMethod::kStreamingLlm) {
    const int64_t sinks = std::min(kStreamingSinks, b);
    out.window = b - sinks;
    std::fill(out.selected.begin(), out.selected.end(), sinks);
    return out;
  }
  const int64_t w = std::min<int64_t>(policy.window, b);
  const int64_t k = b - w;
  out.window = w;
  if (policy.method != KvMethod::kPyramidKv || n < 2 * k || num_layers == 1) {
    std::fill(out.selected.begin(), out.selected.end(), k);
    return out;
  }
  out.selected = policy.rounding == BudgetRounding::kOfficial
                     ? OfficialPyramid(k, policy.beta, num_layers, n, w)
                     : ExactPyramid(k, policy.beta, num_layers, n, w);
  return out;
}

}  // namespace funnel
