// Matrix products with weight matrices stored as F32, F16, BF16 or Q8_0 rows.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/thread_pool.h"

namespace funnel {

// A row-major weight matrix [rows, cols]; row r starts at data + r * RowBytes(type, cols).
// Not owning: points into the model file mapping or a converted copy.
struct WeightMatrix {
  WeightType type = WeightType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;

  const uint8_t* Row(int64_t r) const {
    return static_cast<const uint8_t*>(data) + r * RowBytes(type, cols);
  }
};

// Per-thread scratch buffers for MatMul, owned by the caller and reused across calls.
class MatMulWorkspace {
 public:
  explicit MatMulWorkspace(int num_threads) : buffers_(num_threads) {}
  float* Get(int thread_index, int64_t floats);

 private:
  std::vector<std::vector<float>> buffers_;
};

// y[t, r] = sum_c w[r, c] * x[t, c] for t < n_tokens.
// x: [n_tokens, w.cols] contiguous; y: [n_tokens, w.rows] contiguous (overwritten).
// Small n_tokens (decode) use fused convert-and-dot kernels that read each weight once; larger
// ones convert row panels to fp32 and call OpenBLAS sgemm (single-threaded per panel).
void MatMul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatMulWorkspace& workspace);

// Plain-loop reference of MatMul (double accumulation), for tests.
void MatMulReference(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y);

}  // namespace funnel
