// Matrix products on the GPU through cuBLAS, fp32 accumulation. CPU twin: kernels/cpu/matmul.h
// (MatMul / MatMulReference): y[t, r] = sum_c w[r, c] * x[t, c], all row-major.
#pragma once

#include <cstdint>

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
  // w and x in bf16 (raw uint16 bits), y fp32, fp32 accumulation.
  int MatMulBf16(const uint16_t* w, const uint16_t* x, int64_t rows, int64_t cols, int64_t tokens,
                 float* y);
  // Same, y += w x.
  int MatMulBf16Accumulate(const uint16_t* w, const uint16_t* x, int64_t rows, int64_t cols,
                           int64_t tokens, float* y);

 private:
  Blas() = default;
  void* handle_ = nullptr;
};

}  // namespace funnel::cuda
