// Deterministic pseudo-random fills (counter-based: value i depends only on seed and i), so the
// GPU twin (kernels/cuda/elementwise.h LaunchFillUniform) produces bit-identical arrays. Used
// for random-weight models (benchmarks) and synthetic KV contents.
#pragma once

#include <cstdint>

namespace funnel {

// The i-th value of the stream `seed`: uniform in [-bound, bound), 24 random bits. constexpr so
// that CUDA code (built with --expt-relaxed-constexpr) calls this very function.
constexpr float UniformAt(uint64_t seed, uint64_t i, float bound) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 1;  // splitmix64 of (seed, i)
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1), exact
  return (2.0f * u - 1.0f) * bound;
}

// out[i] = UniformAt(seed, i, bound) for i in [0, n).
void FillUniform(float* out, int64_t n, uint64_t seed, float bound);
// out[i] = UniformAt(seed, first + i, bound) for i in [0, n): a slice of the stream.
void FillUniformAt(float* out, int64_t n, uint64_t seed, uint64_t first, float bound);

}  // namespace funnel
