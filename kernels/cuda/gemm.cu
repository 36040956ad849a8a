#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/cuda/gemm.h"

namespace funnel::cuda {

// Row-major y[T, R] = x[T, C] w[R, C]^T is column-major y'[R, T] = w'^T x' with w' = [C, R].
int Blas::Create(void* stream, Blas** out) {
  cublasHandle_t h = nullptr;
  cublasStatus_t st = cublasCreate(&h);
  if (st != CUBLAS_STATUS_SUCCESS) return static_cast<int>(st);
  st = cublasSetStream(h, static_cast<cudaStream_t>(stream));
  if (st != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(h);
    return static_cast<int>(st);
  }
  cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);  // no TF32: fp32 results match the CPU twin
  auto* b = new Blas();
  b->handle_ = h;
  *out = b;
  return 0;
}

Blas::~Blas() {
  if (handle_ != nullptr) cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

namespace {

int Sgemm(void* handle, const float* w, const float* x, int64_t rows, int64_t cols, int64_t tokens,
          float beta, float* y) {
  const float alpha = 1.0f;
  return static_cast<int>(cublasSgemm(static_cast<cublasHandle_t>(handle), CUBLAS_OP_T, CUBLAS_OP_N,
                                      static_cast<int>(rows), static_cast<int>(tokens),
                                      static_cast<int>(cols), &alpha, w, static_cast<int>(cols), x,
                                      static_cast<int>(cols), &beta, y, static_cast<int>(rows)));
}

// 16-bit w and x (bf16 or fp16), fp32 y and accumulation.
int Gemm16(void* handle, Dtype type, const uint16_t* w, const uint16_t* x, int64_t rows,
           int64_t cols, int64_t tokens, float beta, float* y) {
  if (type != Dtype::kBf16 && type != Dtype::kF16) {
    return static_cast<int>(CUBLAS_STATUS_INVALID_VALUE);
  }
  const cudaDataType_t t = type == Dtype::kBf16 ? CUDA_R_16BF : CUDA_R_16F;
  const float alpha = 1.0f;
  return static_cast<int>(
      cublasGemmEx(static_cast<cublasHandle_t>(handle), CUBLAS_OP_T, CUBLAS_OP_N,
                   static_cast<int>(rows), static_cast<int>(tokens), static_cast<int>(cols), &alpha,
                   w, t, static_cast<int>(cols), x, t, static_cast<int>(cols), &beta, y, CUDA_R_32F,
                   static_cast<int>(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

int Blas::MatMulF32(const float* w, const float* x, int64_t rows, int64_t cols, int64_t tokens,
                    float* y) {
  return Sgemm(handle_, w, x, rows, cols, tokens, 0.0f, y);
}

int Blas::MatMulF32Accumulate(const float* w, const float* x, int64_t rows, int64_t cols,
                              int64_t tokens, float* y) {
  return Sgemm(handle_, w, x, rows, cols, tokens, 1.0f, y);
}

int Blas::MatMul16(Dtype type, const uint16_t* w, const uint16_t* x, int64_t rows, int64_t cols,
                   int64_t tokens, float* y) {
  return Gemm16(handle_, type, w, x, rows, cols, tokens, 0.0f, y);
}

int Blas::MatMul16Accumulate(Dtype type, const uint16_t* w, const uint16_t* x, int64_t rows,
                             int64_t cols, int64_t tokens, float* y) {
  return Gemm16(handle_, type, w, x, rows, cols, tokens, 1.0f, y);
}

}  // namespace funnel::cuda
