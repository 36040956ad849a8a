#include "kernels/cpu/matmul.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/cpu/convert.h"
#include "kernels/cpu/thread_pool.h"

namespace funnel {
namespace {

const char* TypeName(WeightType t) {
  switch (t) {
    case WeightType::kF32:
      return "F32";
    case WeightType::kF16:
      return "F16";
    case WeightType::kBF16:
      return "BF16";
    case WeightType::kQ8_0:
      return "Q8_0";
  }
  return "?";
}

// A weight matrix encoded from random floats, plus its exact decoded values (what the kernels
// multiply with), decoded here from the raw bytes.
struct EncodedMatrix {
  WeightType type;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;
  std::vector<double> values;  // [rows, cols]

  WeightMatrix View() const { return WeightMatrix{type, bytes.data(), rows, cols}; }
};

EncodedMatrix Encode(WeightType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  EncodedMatrix m{type, rows, cols, {}, {}};
  const int64_t row_bytes = RowBytes(type, cols);
  m.bytes.resize(static_cast<size_t>(rows * row_bytes));
  m.values.resize(static_cast<size_t>(rows * cols));
  std::vector<float> src(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : src) v = u(rng);
    uint8_t* row = m.bytes.data() + r * row_bytes;
    double* out = m.values.data() + r * cols;
    switch (type) {
      case WeightType::kF32:
        std::memcpy(row, src.data(), static_cast<size_t>(cols) * 4);
        for (int64_t c = 0; c < cols; ++c) out[c] = src[c];
        break;
      case WeightType::kF16:
      case WeightType::kBF16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = type == WeightType::kF16 ? Fp32ToFp16(src[c]) : Fp32ToBf16(src[c]);
          std::memcpy(row + 2 * c, &h, 2);
          out[c] = type == WeightType::kF16 ? Fp16ToFp32(h) : Bf16ToFp32(h);
          EXPECT_NEAR(out[c], src[c], type == WeightType::kF16 ? 1e-3 : 1e-2);
        }
        break;
      case WeightType::kQ8_0:
        QuantizeRowQ8_0(src.data(), row, cols);
        for (int64_t b = 0; b < cols / 32; ++b) {
          const uint8_t* block = row + b * 34;
          const double scale = Fp16ToFp32(static_cast<uint16_t>(block[0] | (block[1] << 8)));
          for (int j = 0; j < 32; ++j) {
            out[b * 32 + j] = scale * static_cast<int8_t>(block[2 + j]);
            EXPECT_NEAR(out[b * 32 + j], src[b * 32 + j], 0.01);
          }
        }
        break;
    }
  }
  return m;
}

struct Expected {
  std::vector<double> y;    // [n_tokens, rows]
  std::vector<double> tol;  // per element
};

Expected Naive(const EncodedMatrix& m, const std::vector<float>& x, int64_t n_tokens) {
  Expected e;
  e.y.resize(static_cast<size_t>(n_tokens * m.rows));
  e.tol.resize(e.y.size());
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t r = 0; r < m.rows; ++r) {
      double acc = 0.0, mag = 0.0;
      for (int64_t c = 0; c < m.cols; ++c) {
        const double p = m.values[r * m.cols + c] * x[t * m.cols + c];
        acc += p;
        mag += std::fabs(p);
      }
      e.y[t * m.rows + r] = acc;
      e.tol[t * m.rows + r] = 1e-5 * mag + 1e-6;
    }
  }
  return e;
}

std::vector<float> RandomVector(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& f : v) f = u(rng);
  return v;
}

class MatMulTest : public ::testing::Test {
 protected:
  static constexpr int kMaxThreads = 3;
  MatMulTest() {
    for (int n = 1; n <= kMaxThreads; ++n) pools_.push_back(std::make_unique<ThreadPool>(n));
  }

  // Runs MatMul (with every pool) and MatMulReference; checks all against the naive result and
  // that nothing past y[n_tokens * rows) is written.
  void Check(const EncodedMatrix& m, int64_t n_tokens, std::mt19937& rng) {
    const std::vector<float> x = RandomVector(n_tokens * m.cols, rng);
    const Expected want = Naive(m, x, n_tokens);
    const WeightMatrix w = m.View();
    constexpr float kGuard = -777.0f;
    for (auto& pool : pools_) {
      const std::string where =
          absl::StrFormat("%s rows=%d cols=%d n_tokens=%d threads=%d", TypeName(m.type), m.rows,
                          m.cols, n_tokens, pool->num_threads());
      MatMulWorkspace workspace(pool->num_threads());
      std::vector<float> y(static_cast<size_t>(n_tokens * m.rows) + 8,
                           std::numeric_limits<float>::quiet_NaN());
      for (size_t i = y.size() - 8; i < y.size(); ++i) y[i] = kGuard;
      MatMul(w, x.data(), n_tokens, y.data(), *pool, workspace);
      for (size_t i = 0; i < want.y.size(); ++i) {
        ASSERT_NEAR(y[i], want.y[i], want.tol[i]) << where << " index " << i;
      }
      for (size_t i = y.size() - 8; i < y.size(); ++i) ASSERT_EQ(y[i], kGuard) << where;
      // The same workspace again (buffers already sized) gives the same result.
      std::vector<float> y2(want.y.size());
      MatMul(w, x.data(), n_tokens, y2.data(), *pool, workspace);
      for (size_t i = 0; i < want.y.size(); ++i) ASSERT_EQ(y2[i], y[i]) << where << " rerun";
    }
    std::vector<float> ref(want.y.size());
    MatMulReference(w, x.data(), n_tokens, ref.data());
    for (size_t i = 0; i < want.y.size(); ++i) {
      ASSERT_NEAR(ref[i], want.y[i], want.tol[i]) << TypeName(m.type) << " reference " << i;
    }
  }

  std::vector<std::unique_ptr<ThreadPool>> pools_;
};

constexpr int64_t kTokenCounts[] = {1, 2, 3, 4, 5, 17, 64};
constexpr int64_t kRowCounts[] = {1, 3, 16, 17, 67};

// F32/F16/BF16: cols % 8 == 0 take the AVX2 dot kernels; 12 and 36 the generic fallback.
TEST_F(MatMulTest, FloatTypesAllShapes) {
  std::mt19937 rng(42);
  for (WeightType type : {WeightType::kF32, WeightType::kF16, WeightType::kBF16}) {
    for (int64_t cols : {8, 12, 32, 36, 40, 96, 264}) {
      for (int64_t rows : kRowCounts) {
        const EncodedMatrix m = Encode(type, rows, cols, rng);
        for (int64_t n_tokens : kTokenCounts) {
          Check(m, n_tokens, rng);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST_F(MatMulTest, Q8_0AllShapes) {
  std::mt19937 rng(43);
  for (int64_t cols : {32, 96, 288}) {
    for (int64_t rows : kRowCounts) {
      const EncodedMatrix m = Encode(WeightType::kQ8_0, rows, cols, rng);
      for (int64_t n_tokens : kTokenCounts) {
        Check(m, n_tokens, rng);
        if (HasFatalFailure()) return;
      }
    }
  }
}

// Several sgemm panels and dot tasks spread over the threads.
TEST_F(MatMulTest, ManyPanels) {
  std::mt19937 rng(44);
  for (WeightType type :
       {WeightType::kF32, WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0}) {
    const EncodedMatrix m = Encode(type, 200, 256, rng);
    for (int64_t n_tokens : {1, 4, 33}) {
      Check(m, n_tokens, rng);
      if (HasFatalFailure()) return;
    }
  }
}

// Exact small case: integers in every type are represented exactly, so the result is exact.
TEST_F(MatMulTest, ExactSmallIntegers) {
  const int64_t rows = 5, cols = 64;
  std::vector<float> w(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(2 * cols));
  for (int64_t i = 0; i < rows * cols; ++i) w[i] = static_cast<float>(i % 7 - 3);
  for (int64_t i = 0; i < 2 * cols; ++i) x[i] = static_cast<float>(i % 5 - 2);
  for (WeightType type :
       {WeightType::kF32, WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0}) {
    std::vector<uint8_t> bytes(static_cast<size_t>(rows * RowBytes(type, cols)));
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* row = bytes.data() + r * RowBytes(type, cols);
      const float* src = w.data() + r * cols;
      if (type == WeightType::kF32) {
        std::memcpy(row, src, static_cast<size_t>(cols) * 4);
      } else if (type == WeightType::kQ8_0) {
        QuantizeRowQ8_0(src, row, cols);
      } else {
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = type == WeightType::kF16 ? Fp32ToFp16(src[c]) : Fp32ToBf16(src[c]);
          std::memcpy(row + 2 * c, &h, 2);
        }
      }
    }
    const WeightMatrix m{type, bytes.data(), rows, cols};
    for (auto& pool : pools_) {
      MatMulWorkspace ws(pool->num_threads());
      std::vector<float> y(static_cast<size_t>(2 * rows));
      MatMul(m, x.data(), 2, y.data(), *pool, ws);
      for (int64_t t = 0; t < 2; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          // Q8_0 rows here have amax 3, scale 3/127 (inexact in fp16), so allow rounding there.
          double want = 0.0;
          for (int64_t c = 0; c < cols; ++c) want += double{w[r * cols + c]} * x[t * cols + c];
          if (type == WeightType::kQ8_0) {
            EXPECT_NEAR(y[t * rows + r], want, 0.05) << TypeName(type);
          } else {
            EXPECT_EQ(y[t * rows + r], want) << TypeName(type) << " t=" << t << " r=" << r;
          }
        }
      }
    }
  }
}

TEST_F(MatMulTest, ZeroTokensWritesNothing) {
  std::mt19937 rng(45);
  const EncodedMatrix m = Encode(WeightType::kF32, 4, 8, rng);
  std::vector<float> y(4, 3.0f);
  MatMulWorkspace ws(1);
  MatMul(m.View(), nullptr, 0, y.data(), *pools_[0], ws);
  for (float v : y) EXPECT_EQ(v, 3.0f);
}

}  // namespace
}  // namespace funnel
