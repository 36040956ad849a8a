#include "kernels/cpu/kv_compress.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/cpu/norm_rope_act.h"

namespace funnel {
namespace {

constexpr int64_t kQueryTile = 64;

// For query rows [r0, r0 + m) (absolute positions pos0 + i, each seeing keys [0, pos0 + i]) of
// query head `head`: adds each row's softmax over its visible keys into scores[0, prefix).
void AccumulateAttention(const ScoreArgs& a, int64_t head, const float* q_rows, int64_t m,
                         int64_t pos0, int64_t prefix, float* scores, std::vector<float>& tile) {
  const int64_t d = a.head_dim;
  const int64_t stride = a.num_heads * d;
  const int64_t width = std::min(a.n, pos0 + m);
  tile.resize(static_cast<size_t>(m * width));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(width),
              static_cast<int>(d), a.scale, q_rows + head * d, static_cast<int>(stride), a.keys,
              static_cast<int>(d), 0.0f, tile.data(), static_cast<int>(width));
  for (int64_t i = 0; i < m; ++i) {
    float* row = tile.data() + i * width;
    const int64_t visible = pos0 + i + 1;
    Softmax(row, visible);
    const int64_t cols = std::min(visible, prefix);
    for (int64_t j = 0; j < cols; ++j) scores[j] += row[j];
  }
}

}  // namespace

void WindowScores(const ScoreArgs& a, int64_t kv_head, int64_t w, std::vector<float>& scores) {
  const int64_t group = a.num_heads / a.num_kv_heads;
  const int64_t prefix = a.n - w;
  scores.assign(static_cast<size_t>(group * prefix), 0.0f);
  std::vector<float> tile;
  for (int64_t h = 0; h < group; ++h) {
    AccumulateAttention(a, kv_head * group + h, a.q, w, a.n - w, prefix, scores.data() + h * prefix,
                        tile);
  }
}

void H2oScores(const ScoreArgs& a, int64_t kv_head, int64_t w, std::vector<float>& scores) {
  const int64_t group = a.num_heads / a.num_kv_heads;
  const int64_t prefix = a.n - w;
  const int64_t stride = a.num_heads * a.head_dim;
  scores.assign(static_cast<size_t>(group * prefix), 0.0f);
  std::vector<float> tile;
  for (int64_t h = 0; h < group; ++h) {
    for (int64_t r0 = 0; r0 < a.n; r0 += kQueryTile) {
      const int64_t m = std::min(kQueryTile, a.n - r0);
      AccumulateAttention(a, kv_head * group + h, a.q + r0 * stride, m, r0, prefix,
                          scores.data() + h * prefix, tile);
    }
  }
}

void Pool1d(const float* in, int64_t n, int32_t kernel, PoolingKind kind, float* out) {
  const int64_t half = kernel / 2;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t lo = std::max<int64_t>(0, i - half), hi = std::min<int64_t>(n - 1, i + half);
    if (kind == PoolingKind::kMax) {
      float m = in[lo];
      for (int64_t j = lo + 1; j <= hi; ++j) m = std::fmax(m, in[j]);
      out[i] = m;
    } else {
      float s = 0.0f;
      for (int64_t j = lo; j <= hi; ++j) s += in[j];
      out[i] = s / static_cast<float>(kernel);
    }
  }
}

void AverageRows(const float* rows, int64_t group, int64_t n, float* out) {
  std::fill(out, out + n, 0.0f);
  for (int64_t h = 0; h < group; ++h) {
    for (int64_t i = 0; i < n; ++i) out[i] += rows[h * n + i];
  }
  const float inv = 1.0f / static_cast<float>(group);
  for (int64_t i = 0; i < n; ++i) out[i] *= inv;
}

std::vector<int32_t> TopKIndices(const float* scores, int64_t n, int64_t k) {
  k = std::clamp<int64_t>(k, 0, n);
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  };
  std::nth_element(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace funnel
