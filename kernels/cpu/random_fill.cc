#include "kernels/cpu/random_fill.h"

namespace funnel {

void FillUniform(float* out, int64_t n, uint64_t seed, float bound) {
  FillUniformAt(out, n, seed, 0, bound);
}

void FillUniformAt(float* out, int64_t n, uint64_t seed, uint64_t first, float bound) {
  for (int64_t i = 0; i < n; ++i) out[i] = UniformAt(seed, first + static_cast<uint64_t>(i), bound);
}

}  // namespace funnel
