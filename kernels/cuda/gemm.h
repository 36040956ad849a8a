// Matrix products on the GPU through cuBLAS, fp32 accumulation. CPU twin: kernels/cpu/matmul.h
// (MatMul / MatMulReference): y[t, r] = sum_c w[r, c] * x[t, c], all row-major.
#pragma once

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace funnel::cuda {

// Owns a cuBLAS handle bound to one stream. Not thread-safe: one per engine thread.
class Blas {
 public:
  // Returns a cuBLAS status (0 = success) and sets *out on success.
  static int Create(void* stream, Blas** out);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // w: [rows, cols] fp32, x: [tokens, cols] fp32, y: [tokens, rows] fp32.
  int MatMulF32(const float* w, const float* x, int64_t rows, int64_t cols, int64_t tokens,
                float* y);
  // Same shapes, y += w x (fp32): residual adds fused into the product.
  int MatMulF32Accumulate(const float* w, const float* x, int64_t rows, int64_t cols,
                          int64_t tokens, float* y);
  // w and x both in the 16-bit format `type` (kBf16 or kF16; raw uint16 bits), y fp32, fp32
  // accumulation. CUBLAS_STATUS_INVALID_VALUE for kF32.
  int MatMul16(Dtype type, const uint16_t* w, const uint16_t* x, int64_t rows, int64_t cols,
               int64_t tokens, float* y);
  // Same, y += w x.
  int MatMul16Accumulate(Dtype type, const uint16_t* w, const uint16_t* x, int64_t rows,
                         int64_t cols, int64_t tokens, float* y);

 private:
  Blas() = default;
  void* handle_ = nullptr;
};

}  // namespace funnel::cuda
