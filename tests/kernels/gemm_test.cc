// cuBLAS products vs the CPU twin (MatMulReference) for fp32, bf16 and fp16 inputs, odd shapes.
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

// y = w x, or y += w x (the residual adds of the CUDA runner, and the bias broadcast: cols = 1
// with x = ones), for fp32 and both 16-bit input formats (the reference sees the rounded inputs).
TEST(CudaGemm, MatchesCpuForEveryInputFormat) {
  FUNNEL_SKIP_WITHOUT_GPU();
  cuda::Blas* raw = nullptr;
  ASSERT_EQ(cuda::Blas::Create(nullptr, &raw), 0);
  std::unique_ptr<cuda::Blas> blas(raw);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  struct Shape {
    int64_t rows, cols, tokens;
  };
  for (Shape s : {Shape{1, 1, 1}, Shape{1, 8, 1}, Shape{67, 1, 5}, Shape{67, 40, 3},
                  Shape{512, 300, 17}, Shape{512, 2048, 17}, Shape{4096, 128, 64}}) {
    for (cuda::Dtype type : testing::kAllDtypes) {
      for (bool accumulate : {false, true}) {
        std::vector<float> w(s.rows * s.cols), x(s.tokens * s.cols), y0(s.tokens * s.rows, 0.0f);
        for (float& v : w) v = u(rng);
        for (float& v : x) v = u(rng);
        if (accumulate) {
          for (float& v : y0) v = 10.0f * u(rng);
        }
        testing::DeviceTyped dw(w, type), dx(x, type);  // w and x now hold the rounded values
        std::vector<float> ref(y0.size());
        MatMulReference(WeightMatrix{WeightType::kF32, w.data(), s.rows, s.cols}, x.data(),
                        s.tokens, ref.data());
        for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
        DeviceVector<float> dy(y0);
        int status = 0;
        if (type == cuda::Dtype::kF32) {
          const auto* wf = static_cast<const float*>(dw.get());
          const auto* xf = static_cast<const float*>(dx.get());
          status = accumulate
                       ? blas->MatMulF32Accumulate(wf, xf, s.rows, s.cols, s.tokens, dy.get())
                       : blas->MatMulF32(wf, xf, s.rows, s.cols, s.tokens, dy.get());
        } else {
          const auto* wh = static_cast<const uint16_t*>(dw.get());
          const auto* xh = static_cast<const uint16_t*>(dx.get());
          status = accumulate
                       ? blas->MatMul16Accumulate(type, wh, xh, s.rows, s.cols, s.tokens, dy.get())
                       : blas->MatMul16(type, wh, xh, s.rows, s.cols, s.tokens, dy.get());
        }
        ASSERT_EQ(status, 0);
        ASSERT_EQ(cuda::Synchronize(), 0);
        ExpectWithinProductError(dy.ToHost(), ref, w, x, y0, s.rows, s.cols, s.tokens,
                                 testing::DtypeName(type));
      }
    }
  }
  DeviceVector<uint16_t> h(8);
  DeviceVector<float> y(1);
  EXPECT_NE(blas->MatMul16(cuda::Dtype::kF32, h.get(), h.get(), 1, 8, 1, y.get()), 0);
}

}  // namespace
}  // namespace funnel
