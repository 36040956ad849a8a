#include "kernels/cpu/norm_rope_act.h"

#include <cmath>
#include <vector>

namespace funnel {

void RmsNorm(const float* x, const float* weight, float* out, int64_t n_rows, int64_t dim,
             float eps) {
  for (int64_t t = 0; t < n_rows; ++t) {
    const float* xt = x + t * dim;
    float* ot = out + t * dim;
    float ss = 0.0f;
    for (int64_t i = 0; i < dim; ++i) ss += xt[i] * xt[i];
    const float scale = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) ot[i] = xt[i] * scale * weight[i];
  }
}

void ApplyRope(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
               int64_t head_dim, int64_t rot_dim, float theta, RopeStyle style) {
  const int64_t half = rot_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(theta, -2.0f * static_cast<float>(i) / static_cast<float>(rot_dim));
  }
  ApplyRopeWithFrequencies(x, positions, n_tokens, n_heads, head_dim, rot_dim, inv_freq.data(),
                           style);
}

void ApplyRopeWithFrequencies(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                              int64_t head_dim, int64_t rot_dim, const float* inv_freq,
                              RopeStyle style) {
  const int64_t half = rot_dim / 2;
  std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_t[i] = std::cos(angle);
      sin_t[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = style == RopeStyle::kAdjacentPairs ? 2 * i : i;
        const int64_t b = style == RopeStyle::kAdjacentPairs ? 2 * i + 1 : i + half;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * cos_t[i] - x1 * sin_t[i];
        v[b] = x0 * sin_t[i] + x1 * cos_t[i];
      }
    }
  }
}

void SwiGlu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::fmax(mx, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace funnel
