// Row-wise and element-wise ops of the Llama forward pass on the GPU (fp32; conversions to and
// from the 16-bit storage formats of dtype.h).
// CPU twins: kernels/cpu/norm_rope_act.h. Pointers are device pointers; `stream` is a
// cudaStream_t (nullptr = default stream). Each returns the launch's CUDA error code.
#pragma once

#include <cstdint>

#include "kernels/cuda/dtype.h"

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

// out[i] = in[i] stored as `to` (raw bits; fp32: a copy), round to nearest even. CPU twins:
// Fp32ToBf16 and Fp32ToFp16 (convert.h); NaNs stay NaNs, not necessarily with the same payload.
int LaunchConvert(const float* in, void* out, int64_t n, Dtype to, void* stream);

// x[i] = x[i] stored as `to` and read back, in place (fp32: nothing to do).
int LaunchRoundTrip(float* x, int64_t n, Dtype to, void* stream);

// out[t, :] = table[ids[t], :] for a table [vocab, dim] stored as `table_dtype`, widened to fp32.
int LaunchEmbeddingGatherTyped(const void* table, Dtype table_dtype, const int32_t* ids, float* out,
                               int64_t tokens, int64_t dim, void* stream);

// out[i] = UniformAt(seed, i, bound) (kernels/cpu/random_fill.h) for i in [0, n): bit-identical
// to the CPU twin FillUniform.
int LaunchFillUniform(float* out, int64_t n, uint64_t seed, float bound, void* stream);

}  // namespace funnel::cuda
