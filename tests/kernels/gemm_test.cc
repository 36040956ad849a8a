// cuBLAS products vs the CPU twin (MatMulReference) for fp32 and bf16 inputs, odd shapes.
#include "kernels/cuda/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/matmul.h"
#include "tests/testing/gpu_test.h"

namespace funnel {
namespace {

using testing::DeviceVector;

// |y - ref| <= 1e-5 sum_c |w[r, c] x[t, c]| + 1e-6 |y0| + 1e-6 per output: the error of an fp32
// sum in another order (the reference sums in double), growing with the terms' magnitudes.
void ExpectWithinProductError(const std::vector<float>& y, const std::vector<float>& ref,
                              const std::vector<float>& w, const std::vector<float>& x,
                              const std::vector<float>& y0, int64_t rows, int64_t cols,
                              int64_t tokens, const char* what) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double mag = 0;
      for (int64_t c = 0; c < cols; ++c) mag += std::fabs(w[r * cols + c] * x[t * cols + c]);
      const size_t i = static_cast<size_t>(t * rows + r);
      ASSERT_NEAR(y[i], ref[i], 1e-5 * mag + 1e-6 * std::fabs(y0[i]) + 1e-6)
          << what << " " << rows << "x" << cols << "x" << tokens;
    }
  }
}

TEST(CudaGemm, MatchesCpuForF32AndBf16) {
  FUNNEL_SKIP_WITHOUT_GPU();
  cuda::Blas* raw = nullptr;
  ASSERT_EQ(cuda::Blas::Create(nullptr, &raw), 0);
  std::unique_ptr<cuda::Blas> blas(raw);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  struct Shape {
    int64_t rows, cols, tokens;
  };
  for (Shape s : {Shape{1, 8, 1}, Shape{67, 40, 3}, Shape{512, 2048, 17}, Shape{4096, 128, 64}}) {
    for (bool bf16 : {false, true}) {
      std::vector<float> w(s.rows * s.cols), x(s.tokens * s.cols);
      for (float& v : w) v = u(rng);
      for (float& v : x) v = u(rng);
      std::vector<uint16_t> wb(w.size()), xb(x.size());
      if (bf16) {  // the reference sees exactly the bf16 values
        for (size_t i = 0; i < w.size(); ++i) w[i] = Bf16ToFp32(wb[i] = Fp32ToBf16(w[i]));
        for (size_t i = 0; i < x.size(); ++i) x[i] = Bf16ToFp32(xb[i] = Fp32ToBf16(x[i]));
      }
      std::vector<float> ref(s.tokens * s.rows);
      MatMulReference(WeightMatrix{WeightType::kF32, w.data(), s.rows, s.cols}, x.data(), s.tokens,
                      ref.data());
      DeviceVector<float> dy(ref.size());
      if (bf16) {
        DeviceVector<uint16_t> dw(wb), dx(xb);
        ASSERT_EQ(blas->MatMulBf16(dw.get(), dx.get(), s.rows, s.cols, s.tokens, dy.get()), 0);
      } else {
        DeviceVector<float> dw(w), dx(x);
        ASSERT_EQ(blas->MatMulF32(dw.get(), dx.get(), s.rows, s.cols, s.tokens, dy.get()), 0);
      }
      ASSERT_EQ(cuda::Synchronize(), 0);
      ExpectWithinProductError(dy.ToHost(), ref, w, x, std::vector<float>(ref.size(), 0.0f), s.rows,
                               s.cols, s.tokens, bf16 ? "bf16" : "f32");
    }
  }
}

// y += w x (fp32 and bf16): the residual adds of the CUDA runner, and the bias broadcast (cols = 1
// with x = ones).
TEST(CudaGemm, AccumulateAddsTheProductToY) {
  FUNNEL_SKIP_WITHOUT_GPU();
  cuda::Blas* raw = nullptr;
  ASSERT_EQ(cuda::Blas::Create(nullptr, &raw), 0);
  std::unique_ptr<cuda::Blas> blas(raw);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  struct Shape {
    int64_t rows, cols, tokens;
  };
  for (Shape s : {Shape{1, 1, 1}, Shape{67, 1, 5}, Shape{96, 40, 3}, Shape{512, 300, 17}}) {
    std::vector<float> w(s.rows * s.cols), x(s.tokens * s.cols), y0(s.tokens * s.rows);
    for (float& v : w) v = u(rng);
    for (float& v : x) v = u(rng);
    for (float& v : y0) v = 10.0f * u(rng);
    std::vector<float> ref(y0.size());
    MatMulReference(WeightMatrix{WeightType::kF32, w.data(), s.rows, s.cols}, x.data(), s.tokens,
                    ref.data());
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
    DeviceVector<float> dw(w), dx(x), dy(y0);
    ASSERT_EQ(blas->MatMulF32Accumulate(dw.get(), dx.get(), s.rows, s.cols, s.tokens, dy.get()), 0);
    ASSERT_EQ(cuda::Synchronize(), 0);
    ExpectWithinProductError(dy.ToHost(), ref, w, x, y0, s.rows, s.cols, s.tokens, "f32");
    // bf16 inputs (the reference sees the rounded values), fp32 y accumulated.
    std::vector<uint16_t> wb(w.size()), xb(x.size());
    for (size_t i = 0; i < w.size(); ++i) w[i] = Bf16ToFp32(wb[i] = Fp32ToBf16(w[i]));
    for (size_t i = 0; i < x.size(); ++i) x[i] = Bf16ToFp32(xb[i] = Fp32ToBf16(x[i]));
    MatMulReference(WeightMatrix{WeightType::kF32, w.data(), s.rows, s.cols}, x.data(), s.tokens,
                    ref.data());
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
    DeviceVector<uint16_t> dwb(wb), dxb(xb);
    DeviceVector<float> dyb(y0);
    ASSERT_EQ(blas->MatMulBf16Accumulate(dwb.get(), dxb.get(), s.rows, s.cols, s.tokens, dyb.get()),
              0);
    ASSERT_EQ(cuda::Synchronize(), 0);
    ExpectWithinProductError(dyb.ToHost(), ref, w, x, y0, s.rows, s.cols, s.tokens, "bf16");
  }
}

}  // namespace
}  // namespace funnel
