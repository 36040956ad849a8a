#include "kernels/cpu/paged_attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/norm_rope_act.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FUNNEL_HAVE_AVX2 1
#endif

namespace funnel {
namespace {

// Queries at or above this count use the gather + sgemm path.
constexpr int64_t kMinGemmQueries = 16;
constexpr int64_t kQueryTile = 64;
// Largest GQA group (query heads per KV head) the direct path supports on the stack.
constexpr int64_t kMaxGroup = 64;

inline float Dot(const float* a, const float* b, int64_t n) {
#if FUNNEL_HAVE_AVX2
  if (n % 16 == 0) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    __m256 v = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
#endif
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// y += alpha * x over n floats.
inline void Axpy(float alpha, const float* x, float* y, int64_t n) {
#if FUNNEL_HAVE_AVX2
  if (n % 8 == 0) {
    const __m256 va = _mm256_set1_ps(alpha);
    for (int64_t i = 0; i < n; i += 8) {
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    }
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// x[i] = exp(x[i] - shift).
inline void ExpShifted(float* x, int64_t n, float shift) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i] - shift);
}

inline const float* BlockPtr(const PagedAttentionArgs& a, int64_t entry) {
  return a.pool + static_cast<int64_t>(a.block_table[entry / a.geometry.block_size]) *
                      a.geometry.BlockFloats();
}

// Few queries: one pass over the blocks with an online softmax (running max and sum per head),
// so every K and V slot is read once for the whole query group.
void AttendDirect(const PagedAttentionArgs& a, int64_t kv_head, AttentionScratch& scratch) {
  const PagedKvGeometry& g = a.geometry;
  const int64_t d = g.head_dim;
  const int64_t bs = g.block_size;
  const int64_t group = a.num_heads / g.num_kv_heads;
  const int64_t stride = a.num_heads * d;
  // scores: [group][bs] for the current block; values: [group][d] accumulators.
  scratch.scores.resize(static_cast<size_t>(group * bs));
  scratch.values.resize(static_cast<size_t>(group * d));
  std::vector<float>& acc = scratch.values;
  float running_max[kMaxGroup], running_sum[kMaxGroup];
  for (int64_t i = 0; i < a.n_q; ++i) {
    const int64_t visible = a.kv_len - a.n_q + i + 1;
    const float* q = a.q + i * stride + kv_head * group * d;
    std::fill(acc.begin(), acc.end(), 0.0f);
    std::fill(running_max, running_max + group, -INFINITY);
    std::fill(running_sum, running_sum + group, 0.0f);
    for (int64_t j0 = 0; j0 < visible; j0 += bs) {
      const int64_t n = std::min(bs, visible - j0);
      const float* block = a.pool + int64_t{a.block_table[j0 / bs]} * g.BlockFloats();
      const float* keys = block + g.KOffset(kv_head, 0);
      const float* values = block + g.VOffset(kv_head, 0);
      for (int64_t s = 0; s < n; ++s) {
        for (int64_t h = 0; h < group; ++h) {
          scratch.scores[h * bs + s] = Dot(q + h * d, keys + s * d, d) * a.scale;
        }
      }
      for (int64_t h = 0; h < group; ++h) {
        float* sc = scratch.scores.data() + h * bs;
        float block_max = sc[0];
        for (int64_t s = 1; s < n; ++s) block_max = std::fmax(block_max, sc[s]);
        float* o = acc.data() + h * d;
        if (block_max > running_max[h]) {
          const float correction = std::exp(running_max[h] - block_max);
          running_sum[h] *= correction;
          for (int64_t x = 0; x < d; ++x) o[x] *= correction;
          running_max[h] = block_max;
        }
        ExpShifted(sc, n, running_max[h]);
        for (int64_t s = 0; s < n; ++s) {
          running_sum[h] += sc[s];
          Axpy(sc[s], values + s * d, o, d);
        }
      }
    }
    float* out = a.out + i * stride + kv_head * group * d;
    for (int64_t h = 0; h < group; ++h) {
      const float inv = 1.0f / running_sum[h];
      for (int64_t x = 0; x < d; ++x) out[h * d + x] = acc[h * d + x] * inv;
    }
  }
}

// Many queries: gather the head's K/V contiguously, then sgemm per query tile.
void AttendGemm(const PagedAttentionArgs& a, int64_t kv_head, AttentionScratch& scratch) {
  const PagedKvGeometry& g = a.geometry;
  const int64_t d = g.head_dim;
  scratch.keys.resize(static_cast<size_t>(a.kv_len * d));
  scratch.values.resize(static_cast<size_t>(a.kv_len * d));
  for (int64_t j = 0; j < a.kv_len; j += g.block_size) {
    const int64_t n = std::min(g.block_size, a.kv_len - j);
    const float* block = BlockPtr(a, j);
    std::copy_n(block + g.KOffset(kv_head, 0), n * d, scratch.keys.data() + j * d);
    std::copy_n(block + g.VOffset(kv_head, 0), n * d, scratch.values.data() + j * d);
  }
  ContiguousAttentionKvHead(a, kv_head, scratch.keys.data(), scratch.values.data(), scratch);
}

}  // namespace

void PagedAttentionKvHead(const PagedAttentionArgs& args, int64_t kv_head,
                          AttentionScratch& scratch) {
  if (args.n_q >= kMinGemmQueries || args.num_heads / args.geometry.num_kv_heads > kMaxGroup) {
    AttendGemm(args, kv_head, scratch);
  } else {
    AttendDirect(args, kv_head, scratch);
  }
}

void ContiguousAttentionKvHead(const PagedAttentionArgs& a, int64_t kv_head, const float* keys,
                               const float* values, AttentionScratch& scratch) {
  const int64_t d = a.geometry.head_dim;
  const int64_t group = a.num_heads / a.geometry.num_kv_heads;
  const int64_t stride = a.num_heads * d;
  const int64_t past = a.kv_len - a.n_q;
  scratch.scores.resize(static_cast<size_t>(kQueryTile * a.kv_len));
  for (int64_t h = 0; h < group; ++h) {
    const int64_t head = kv_head * group + h;
    for (int64_t i0 = 0; i0 < a.n_q; i0 += kQueryTile) {
      const int64_t m = std::min(kQueryTile, a.n_q - i0);
      const int64_t width = past + i0 + m;  // entries visible to the tile's last query
      float* s = scratch.scores.data();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                  static_cast<int>(width), static_cast<int>(d), a.scale,
                  a.q + i0 * stride + head * d, static_cast<int>(stride), keys,
                  static_cast<int>(d), 0.0f, s, static_cast<int>(width));
      for (int64_t r = 0; r < m; ++r) {
        float* row = s + r * width;
        const int64_t visible = past + i0 + r + 1;
        Softmax(row, visible);
        std::fill(row + visible, row + width, 0.0f);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m),
                  static_cast<int>(d), static_cast<int>(width), 1.0f, s, static_cast<int>(width),
                  values, static_cast<int>(d), 0.0f, a.out + i0 * stride + head * d,
                  static_cast<int>(stride));
    }
  }
}

void PagedAttentionReference(const PagedAttentionArgs& a) {
  const PagedKvGeometry& g = a.geometry;
  const int64_t d = g.head_dim;
  const int64_t group = a.num_heads / g.num_kv_heads;
  for (int64_t i = 0; i < a.n_q; ++i) {
    const int64_t visible = a.kv_len - a.n_q + i + 1;
    for (int64_t head = 0; head < a.num_heads; ++head) {
      const int64_t kvh = head / group;
      const float* q = a.q + (i * a.num_heads + head) * d;
      std::vector<double> w(static_cast<size_t>(visible));
      double mx = -INFINITY;
      for (int64_t j = 0; j < visible; ++j) {
        const float* k = BlockPtr(a, j) + g.KOffset(kvh, j % g.block_size);
        double dot = 0.0;
        for (int64_t x = 0; x < d; ++x) dot += double{q[x]} * double{k[x]};
        w[j] = dot * a.scale;
        mx = std::max(mx, w[j]);
      }
      double sum = 0.0;
      for (double& v : w) sum += (v = std::exp(v - mx));
      float* out = a.out + (i * a.num_heads + head) * d;
      for (int64_t x = 0; x < d; ++x) {
        double acc = 0.0;
        for (int64_t j = 0; j < visible; ++j) {
          acc += w[j] / sum * BlockPtr(a, j)[g.VOffset(kvh, j % g.block_size) + x];
        }
        out[x] = static_cast<float>(acc);
      }
    }
  }
}

}  // namespace funnel
