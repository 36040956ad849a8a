// Element-wise and row-wise ops of the Llama forward pass (fp32).
#pragma once

#include <cstdint>

namespace funnel {

// out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight, for t < n_rows. out may alias x.
void RmsNorm(const float* x, const float* weight, float* out, int64_t n_rows, int64_t dim,
             float eps);

enum class RopeStyle {
  kAdjacentPairs,  // GGUF llama: rotates (x[2i], x[2i+1])
  kHalfSplit,      // HF / NeoX: rotates (x[i], x[i + d/2])
};

// Rotates each head of x [n_tokens, n_heads, head_dim] in place by its token's position:
// pair i turns by angle pos * theta^(-2i / rot_dim), for the first rot_dim dims of each head.
void ApplyRope(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
               int64_t head_dim, int64_t rot_dim, float theta, RopeStyle style);

// ApplyRope with the per-pair inverse frequencies given (angle = pos * inv_freq[i]), for scaled
// RoPE variants. inv_freq: [rot_dim / 2].
void ApplyRopeWithFrequencies(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                              int64_t head_dim, int64_t rot_dim, const float* inv_freq,
                              RopeStyle style);

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)). out may alias gate or up.
void SwiGlu(const float* gate, const float* up, float* out, int64_t n);

// In-place softmax over n values (max-subtracted, fp32).
void Softmax(float* x, int64_t n);

}  // namespace funnel
