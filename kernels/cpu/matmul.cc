#include "kernels/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <cassert>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define FUNNEL_HAVE_AVX2 1
#endif

namespace funnel {
namespace {

// Token count at or below which the fused dot kernels run instead of sgemm.
constexpr int64_t kMaxDotTokens = 4;
// Rows per task in the fused path, and per sgemm panel in the GEMM path.
constexpr int64_t kDotRowsPerTask = 16;
constexpr int64_t kPanelRows = 64;

#if FUNNEL_HAVE_AVX2
inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 shuf = _mm_movehdup_ps(lo);
  __m128 sums = _mm_add_ps(lo, shuf);
  shuf = _mm_movehl_ps(shuf, sums);
  sums = _mm_add_ss(sums, shuf);
  return _mm_cvtss_f32(sums);
}

template <WeightType kType>
inline __m256 Load8(const uint8_t* row, int64_t c) {
  if constexpr (kType == WeightType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
  } else if constexpr (kType == WeightType::kF16) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + c)));
  } else {  // kBF16
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + c));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
  }
}

// 4 rows x 1 token: four independent FMA chains hide latency; x is loaded once per 4 rows.
template <WeightType kType>
void Dot4Rows(const WeightMatrix& w, int64_t r, const float* x, float* out) {
  const uint8_t* rows[4] = {w.Row(r), w.Row(r + 1), w.Row(r + 2), w.Row(r + 3)};
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  for (int64_t c = 0; c < w.cols; c += 8) {
    __m256 xv = _mm256_loadu_ps(x + c);
    acc0 = _mm256_fmadd_ps(Load8<kType>(rows[0], c), xv, acc0);
    acc1 = _mm256_fmadd_ps(Load8<kType>(rows[1], c), xv, acc1);
    acc2 = _mm256_fmadd_ps(Load8<kType>(rows[2], c), xv, acc2);
    acc3 = _mm256_fmadd_ps(Load8<kType>(rows[3], c), xv, acc3);
  }
  out[0] = HorizontalSum(acc0);
  out[1] = HorizontalSum(acc1);
  out[2] = HorizontalSum(acc2);
  out[3] = HorizontalSum(acc3);
}

template <WeightType kType>
float Dot1Row(const uint8_t* row, const float* x, int64_t cols) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    acc0 = _mm256_fmadd_ps(Load8<kType>(row, c), _mm256_loadu_ps(x + c), acc0);
    acc1 = _mm256_fmadd_ps(Load8<kType>(row, c + 8), _mm256_loadu_ps(x + c + 8), acc1);
  }
  for (; c < cols; c += 8) acc0 = _mm256_fmadd_ps(Load8<kType>(row, c), _mm256_loadu_ps(x + c), acc0);
  return HorizontalSum(_mm256_add_ps(acc0, acc1));
}

template <WeightType kType>
void DotRowsAvx2(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t n_tokens,
                 float* y) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xt = x + t * w.cols;
    float* yt = y + t * w.rows;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) Dot4Rows<kType>(w, r, xt, yt + r);
    for (; r < r1; ++r) yt[r] = Dot1Row<kType>(w.Row(r), xt, w.cols);
  }
}
#endif  // FUNNEL_HAVE_AVX2

void DotRowsGeneric(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x,
                    int64_t n_tokens, float* y, float* scratch) {
  for (int64_t r = r0; r < r1; ++r) {
    DequantizeRow(w.type, w.Row(r), scratch, w.cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * w.cols;
      float acc = 0.0f;
      for (int64_t c = 0; c < w.cols; ++c) acc += scratch[c] * xt[c];
      y[t * w.rows + r] = acc;
    }
  }
}

void DotRows(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t n_tokens,
             float* y, float* scratch) {
#if FUNNEL_HAVE_AVX2
  if (w.cols % 8 == 0) {
    switch (w.type) {
      case WeightType::kF32: return DotRowsAvx2<WeightType::kF32>(w, r0, r1, x, n_tokens, y);
      case WeightType::kF16: return DotRowsAvx2<WeightType::kF16>(w, r0, r1, x, n_tokens, y);
      case WeightType::kBF16: return DotRowsAvx2<WeightType::kBF16>(w, r0, r1, x, n_tokens, y);
      case WeightType::kQ8_0: break;
    }
  }
#endif
  DotRowsGeneric(w, r0, r1, x, n_tokens, y, scratch);
}

// y[:, r0:r1] = x @ w[r0:r1, :]^T through sgemm on an fp32 panel.
void GemmPanel(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t n_tokens,
               float* y, float* scratch) {
  const int64_t n = r1 - r0;
  const float* panel;
  if (w.type == WeightType::kF32) {
    panel = reinterpret_cast<const float*>(w.Row(r0));
  } else {
    for (int64_t r = r0; r < r1; ++r) DequantizeRow(w.type, w.Row(r), scratch + (r - r0) * w.cols, w.cols);
    panel = scratch;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n_tokens),
              static_cast<int>(n), static_cast<int>(w.cols), 1.0f, x, static_cast<int>(w.cols),
              panel, static_cast<int>(w.cols), 0.0f, y + r0, static_cast<int>(w.rows));
}

}  // namespace

float* MatMulWorkspace::Get(int thread_index, int64_t floats) {
  assert(thread_index >= 0 && static_cast<size_t>(thread_index) < buffers_.size());
  auto& buf = buffers_[static_cast<size_t>(thread_index)];
  if (static_cast<int64_t>(buf.size()) < floats) buf.resize(static_cast<size_t>(floats));
  return buf.data();
}

void MatMul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatMulWorkspace& workspace) {
  if (n_tokens <= 0) return;
  const bool dot = n_tokens <= kMaxDotTokens;
  const int64_t rows_per_task = dot ? kDotRowsPerTask : kPanelRows;
  const int64_t num_tasks = (w.rows + rows_per_task - 1) / rows_per_task;
  pool.ParallelFor(num_tasks, [&](int64_t task, int thread) {
    const int64_t r0 = task * rows_per_task;
    const int64_t r1 = std::min(w.rows, r0 + rows_per_task);
    float* scratch = workspace.Get(thread, (dot ? 1 : rows_per_task) * w.cols);
    if (dot) {
      DotRows(w, r0, r1, x, n_tokens, y, scratch);
    } else {
      GemmPanel(w, r0, r1, x, n_tokens, y, scratch);
    }
  });
}

void MatMulReference(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    DequantizeRow(w.type, w.Row(r), row.data(), w.cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) acc += double{row[c]} * double{x[t * w.cols + c]};
      y[t * w.rows + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace funnel
