// Brute-force reference of which prompt entries one KV head keeps at the end of prefill
// (pyramidkv-reference.md sections 2-3, DESIGN.md sections 4-5), for tests.
//
// Written straight from the spec with naive loops in double precision. It deliberately shares
// no code (and no types) with runtime/exec/kv_selection.* or kernels/cpu/kv_compress.*:
//  - window methods (snapkv, pyramidkv): window query i (0-based within the last w rows) sits at
//    position n - w + i and sees keys [0, n - w + i]; softmax over all those keys; the score of
//    prefix key j is the sum over the w window rows; each query head's scores are pooled along
//    the sequence (stride 1, padding kernel / 2; max ignores the padding, avg counts it as zeros
//    and divides by the kernel); then averaged over the query heads of the KV head's group;
//  - h2o: the same, but summed over all n queries (query p sees keys [0, p]) and never pooled;
//  - streamingllm: the first `selected` entries (sinks) plus the window, no scores;
//  - full: everything;
//  top-`selected` over the prefix [0, n - w), ties to the lower index, plus the window [n - w, n),
//  ascending.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace funnel::testing {

struct RefSelectionArgs {
  std::string method;     // "full", "pyramidkv", "snapkv", "h2o", "streamingllm"
  bool max_pool = true;   // else avg pooling
  int kernel = 7;
  const float* q = nullptr;     // [n][num_heads][head_dim]
  const float* keys = nullptr;  // [n][head_dim], the KV head's keys
  int64_t n = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t kv_head = 0;
  int64_t window = 0;
  int64_t selected = 0;
};

struct RefSelection {
  std::vector<int32_t> kept;   // ascending
  std::vector<double> scores;  // final ranking score of each prefix key (empty without scores)
};

// Softmax probabilities of query row `pos` (query head `head`) over keys [0, pos].
inline std::vector<double> RefAttentionRow(const RefSelectionArgs& a, int64_t head, int64_t pos) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.head_dim));
  std::vector<double> logits(static_cast<size_t>(pos + 1));
  for (int64_t j = 0; j <= pos; ++j) {
    double dot = 0.0;
    for (int64_t t = 0; t < a.head_dim; ++t) {
      dot += static_cast<double>(a.q[(pos * a.num_heads + head) * a.head_dim + t]) *
             static_cast<double>(a.keys[j * a.head_dim + t]);
    }
    logits[static_cast<size_t>(j)] = dot * scale;
  }
  double mx = logits[0];
  for (double v : logits) mx = std::max(mx, v);
  double total = 0.0;
  for (double& v : logits) {
    v = std::exp(v - mx);
    total += v;
  }
  for (double& v : logits) v /= total;
  return logits;
}

inline std::vector<double> RefPool(const std::vector<double>& s, int kernel, bool max_pool) {
  const int64_t len = static_cast<int64_t>(s.size());
  const int64_t half = kernel / 2;
  std::vector<double> out(s.size());
  for (int64_t i = 0; i < len; ++i) {
    double m = -INFINITY, sum = 0.0;
    for (int64_t j = i - half; j <= i + half; ++j) {
      if (j < 0 || j >= len) continue;  // padding: ignored by max, zero for avg
      m = std::max(m, s[static_cast<size_t>(j)]);
      sum += s[static_cast<size_t>(j)];
    }
    out[static_cast<size_t>(i)] = max_pool ? m : sum / static_cast<double>(kernel);
  }
  return out;
}

inline RefSelection RefSelectKept(const RefSelectionArgs& a) {
  RefSelection r;
  const int64_t prefix = a.n - a.window;
  if (a.method == "full") {
    for (int64_t i = 0; i < a.n; ++i) r.kept.push_back(static_cast<int32_t>(i));
    return r;
  }
  std::vector<bool> keep(static_cast<size_t>(a.n), false);
  for (int64_t i = prefix; i < a.n; ++i) keep[static_cast<size_t>(i)] = true;
  if (a.method == "streamingllm") {
    for (int64_t i = 0; i < a.selected; ++i) keep[static_cast<size_t>(i)] = true;
  } else {
    const bool h2o = a.method == "h2o";
    const int64_t group = a.num_heads / a.num_kv_heads;
    r.scores.assign(static_cast<size_t>(prefix), 0.0);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = a.kv_head * group + g;  // query head h uses KV head h / group
      std::vector<double> s(static_cast<size_t>(prefix), 0.0);
      for (int64_t pos = h2o ? 0 : prefix; pos < a.n; ++pos) {
        const std::vector<double> p = RefAttentionRow(a, head, pos);
        for (int64_t j = 0; j < prefix && j <= pos; ++j) s[static_cast<size_t>(j)] += p[static_cast<size_t>(j)];
      }
      if (!h2o) s = RefPool(s, a.kernel, a.max_pool);
      for (int64_t j = 0; j < prefix; ++j) r.scores[static_cast<size_t>(j)] += s[static_cast<size_t>(j)];
    }
    for (double& v : r.scores) v /= static_cast<double>(group);
    // Top-`selected`, ties to the lower index: repeatedly take the best remaining entry.
    std::vector<bool> taken(static_cast<size_t>(prefix), false);
    for (int64_t round = 0; round < std::min(a.selected, prefix); ++round) {
      int64_t best = -1;
      for (int64_t j = 0; j < prefix; ++j) {
        if (taken[static_cast<size_t>(j)]) continue;
        if (best < 0 || r.scores[static_cast<size_t>(j)] > r.scores[static_cast<size_t>(best)]) best = j;
      }
      taken[static_cast<size_t>(best)] = true;
      keep[static_cast<size_t>(best)] = true;
    }
  }
  for (int64_t i = 0; i < a.n; ++i) {
    if (keep[static_cast<size_t>(i)]) r.kept.push_back(static_cast<int32_t>(i));
  }
  return r;
}

// The boundary score: the `selected`-th largest prefix score (ties counted), or NaN if none.
inline double RefBoundaryScore(const RefSelection& r, int64_t selected) {
  if (selected <= 0 || r.scores.empty()) return NAN;
  std::vector<double> s = r.scores;
  std::sort(s.begin(), s.end(), [](double x, double y) { return x > y; });
  return s[static_cast<size_t>(std::min<int64_t>(selected, static_cast<int64_t>(s.size())) - 1)];
}

}  // namespace funnel::testing
