// Row-wise and element-wise ops of the Llama forward pass on the GPU (fp32; bf16 weight helpers).
// CPU twins: kernels/cpu/norm_rope_act.h. Pointers are device pointers; `stream` is a
// cudaStream_t (nullptr = default stream). Each returns the launch's CUDA error code.
#pragma once

#include <cstdint>

namespace funnel::cuda {

// out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight. out may alias x.
int LaunchRmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
                  float eps, void* stream);

// Rotates each head of x [tokens, heads, head_dim] in place by its token's position; the first
// rot_dim dims of each head, adjacent pairs (GGUF) or half split (HF / NeoX).
int LaunchRope(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
               int64_t rot_dim, float theta, bool half_split, void* stream);

// LaunchRope with the per-pair inverse frequencies given (angle = pos * inv_freq[i]), for scaled
// RoPE variants; CPU twin ApplyRopeWithFrequencies. inv_freq: [rot_dim / 2] (device).
int LaunchRopeWithFrequencies(float* x, const int32_t* positions, int64_t tokens, int64_t heads,
                              int64_t head_dim, int64_t rot_dim, const float* inv_freq,
                              bool half_split, void* stream);

// out[i] = silu(gate[i]) * up[i].
int LaunchSwiGlu(const float* gate, const float* up, float* out, int64_t n, void* stream);

// out[t, :] = table[ids[t], :] for an fp32 table [vocab, dim].
int LaunchEmbeddingGather(const float* table, const int32_t* ids, float* out, int64_t tokens,
                          int64_t dim, void* stream);

// out[i] = the bf16 bits of in[i], round to nearest even (CPU twin: Fp32ToBf16, convert.h; NaNs
// become a NaN, not necessarily the same payload).
int LaunchF32ToBf16(const float* in, uint16_t* out, int64_t n, void* stream);

// out[t, :] = table[ids[t], :] for a bf16 table [vocab, dim] (raw bits), widened to fp32.
int LaunchEmbeddingGatherBf16(const uint16_t* table, const int32_t* ids, float* out, int64_t tokens,
                              int64_t dim, void* stream);

// out[i] = UniformAt(seed, i, bound) (kernels/cpu/random_fill.h) for i in [0, n): bit-identical
// to the CPU twin FillUniform.
int LaunchFillUniform(float* out, int64_t n, uint64_t seed, float bound, void* stream);

}  // namespace funnel::cuda
