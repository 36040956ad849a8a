// CUDA compression kernels vs the CPU twins: window scores, H2O column sums, pooling + group
// average, top-k with the window (ties to the lower index), gather of kept rows into pool blocks.
#include "kernels/cuda/kv_compress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "kernels/cpu/kv_compress.h"
#include "kernels/cpu/paged_attention.h"
#include "tests/testing/gpu_test.h"

namespace funnel {
namespace {

using testing::DeviceVector;
using testing::ToleranceRatio;

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

struct Shape {
  int64_t n, w;
  int32_t heads, kv_heads, d;
};

const std::vector<Shape> kShapes = {
    {37, 8, 4, 4, 8},    {61, 1, 8, 2, 16},     {130, 32, 32, 8, 128},
    {1000, 8, 8, 1, 64}, {4099, 8, 32, 8, 128}, {9, 9, 4, 2, 12},
};

// The prompt's queries [n, heads, d] and per-KV-head keys [kv][n][d].
struct Inputs {
  std::vector<float> q, keys;
};

Inputs MakeInputs(const Shape& s, uint32_t seed) {
  return {Random(static_cast<size_t>(s.n) * s.heads * s.d, seed),
          Random(static_cast<size_t>(s.kv_heads) * s.n * s.d, seed + 1)};
}

// CPU: scores [heads][prefix] via the twin, one KV head at a time.
std::vector<float> CpuWindowScores(const Shape& s, const Inputs& in) {
  const int64_t prefix = s.n - s.w, group = s.heads / s.kv_heads;
  std::vector<float> all(static_cast<size_t>(s.heads) * prefix);
  for (int32_t kv = 0; kv < s.kv_heads; ++kv) {
    ScoreArgs a{in.q.data() + prefix * s.heads * s.d,
                s.heads,
                s.kv_heads,
                s.d,
                in.keys.data() + static_cast<size_t>(kv) * s.n * s.d,
                s.n,
                1.0f / std::sqrt(static_cast<float>(s.d))};
    std::vector<float> sc;
    WindowScores(a, kv, s.w, sc);
    std::copy(sc.begin(), sc.end(), all.begin() + kv * group * prefix);
  }
  return all;
}

TEST(CudaKvCompress, WindowScoresMatchCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    Inputs in = MakeInputs(s, 3);
    const int64_t prefix = s.n - s.w;
    std::vector<float> ref = CpuWindowScores(s, in);
    DeviceVector<float> dq(in.q), dk(in.keys), dscores(std::max<size_t>(1, ref.size()));
    ASSERT_EQ(cuda::LaunchWindowScores(
                  dq.get() + prefix * s.heads * s.d, dk.get(), s.n, s.w, s.heads, s.kv_heads, s.d,
                  1.0f / std::sqrt(static_cast<float>(s.d)), dscores.get(), nullptr),
              0);
    ASSERT_EQ(cuda::Synchronize(), 0);
    auto got = dscores.ToHost();
    got.resize(ref.size());
    EXPECT_LE(ToleranceRatio(got, ref, 1e-6, 1e-4), 1.0) << "n " << s.n << " w " << s.w;
  }
}

// H2O column sums of all n queries: CPU twin H2oScores, one KV head at a time.
TEST(CudaKvCompress, H2oScoresMatchCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    Inputs in = MakeInputs(s, 4);
    const int64_t prefix = s.n - s.w, group = s.heads / s.kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.d));
    std::vector<float> ref(static_cast<size_t>(s.heads) * prefix);
    for (int32_t kv = 0; kv < s.kv_heads; ++kv) {
      ScoreArgs a{in.q.data(),
                  s.heads,
                  s.kv_heads,
                  s.d,
                  in.keys.data() + static_cast<size_t>(kv) * s.n * s.d,
                  s.n,
                  scale};
      std::vector<float> sc;
      H2oScores(a, kv, s.w, sc);
      std::copy(sc.begin(), sc.end(), ref.begin() + kv * group * prefix);
    }
    DeviceVector<float> dq(in.q), dk(in.keys), dscores(std::max<size_t>(1, ref.size()));
    ASSERT_EQ(cuda::LaunchH2oScores(dq.get(), dk.get(), s.n, s.w, s.heads, s.kv_heads, s.d, scale,
                                    dscores.get(), nullptr),
              0);
    ASSERT_EQ(cuda::Synchronize(), 0);
    auto got = dscores.ToHost();
    got.resize(ref.size());
    // Sums of up to n probabilities in another order (atomics): relative error grows with n.
    EXPECT_LE(ToleranceRatio(got, ref, 1e-5, 5e-4), 1.0) << "n " << s.n << " w " << s.w;
  }
  DeviceVector<float> dummy(std::vector<float>(8, 0.0f));
  EXPECT_NE(
      cuda::LaunchH2oScores(dummy.get(), dummy.get(), 4, 5, 1, 1, 2, 1.0f, dummy.get(), nullptr),
      0);  // window longer than the prompt
}

TEST(CudaKvCompress, PoolAverageTopKAndGatherMatchCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  for (const Shape& s : kShapes) {
    for (int32_t kernel : {1, 3, 7}) {
      for (bool max_pool : {true, false}) {
        const int64_t prefix = s.n - s.w, group = s.heads / s.kv_heads;
        // Quantized scores make ties common: the tie rule must agree.
        std::vector<float> scores = Random(static_cast<size_t>(s.heads) * prefix, 9 + kernel);
        for (float& x : scores) x = std::round(x * 8.0f) / 8.0f;
        std::vector<float> ref_avg(static_cast<size_t>(s.kv_heads) * prefix);
        for (int32_t kv = 0; kv < s.kv_heads; ++kv) {
          std::vector<float> pooled(static_cast<size_t>(group) * prefix);
          for (int64_t g = 0; g < group; ++g) {
            Pool1d(scores.data() + (kv * group + g) * prefix, prefix, kernel,
                   max_pool ? PoolingKind::kMax : PoolingKind::kAvg, pooled.data() + g * prefix);
          }
          AverageRows(pooled.data(), group, prefix, ref_avg.data() + kv * prefix);
        }
        DeviceVector<float> dscores(scores), davg(std::max<size_t>(1, ref_avg.size()));
        ASSERT_EQ(cuda::LaunchPoolAndAverage(dscores.get(), prefix, s.heads, s.kv_heads, kernel,
                                             max_pool, davg.get(), nullptr),
                  0);
        auto avg = davg.ToHost();
        avg.resize(ref_avg.size());
        ASSERT_LE(ToleranceRatio(avg, ref_avg, 1e-6, 1e-5), 1.0);

        // Top-k on the CPU's averaged scores (identical inputs on both sides).
        for (int64_t k : {int64_t{0}, std::min<int64_t>(1, prefix), prefix / 3, prefix}) {
          DeviceVector<float> dref(ref_avg);
          const size_t ws_bytes = cuda::TopKWorkspaceBytes(prefix, s.kv_heads, k);
          DeviceVector<char> ws(ws_bytes);
          DeviceVector<int32_t> dkept(static_cast<size_t>(s.kv_heads) * (k + s.w));
          ASSERT_EQ(cuda::LaunchTopKWithWindow(dref.get(), prefix, s.kv_heads, k, s.w, dkept.get(),
                                               ws.get(), ws_bytes, nullptr),
                    0);
          auto kept = dkept.ToHost();
          for (int32_t kv = 0; kv < s.kv_heads; ++kv) {
            std::vector<int32_t> expect = TopKIndices(ref_avg.data() + kv * prefix, prefix, k);
            for (int64_t i = prefix; i < s.n; ++i) expect.push_back(static_cast<int32_t>(i));
            std::vector<int32_t> got(kept.begin() + kv * (k + s.w),
                                     kept.begin() + (kv + 1) * (k + s.w));
            ASSERT_EQ(got, expect) << "n " << s.n << " kv " << kv << " k " << k;
          }
        }
      }
    }
  }
  // k above the prefix is an error, not a silent clamp (the output stride is k + w).
  {
    DeviceVector<float> dscores(std::vector<float>(10, 0.0f));
    DeviceVector<int32_t> dkept(64);
    EXPECT_NE(
        cuda::LaunchTopKWithWindow(dscores.get(), 5, 2, 6, 1, dkept.get(), nullptr, 0, nullptr), 0);
  }
  // Gather: kept rows land in the pool exactly as the CPU layout puts them.
  const Shape s = kShapes[2];
  Inputs in = MakeInputs(s, 21);
  std::vector<float> values = Random(in.keys.size(), 22);
  const int64_t count = 40;
  const int32_t bs = 16, blocks = 4;
  std::vector<int32_t> kept(static_cast<size_t>(s.kv_heads) * count);
  for (auto& x : kept) x = static_cast<int32_t>(rng() % s.n);
  std::vector<int32_t> table = {3, 0, 2};
  PagedKvGeometry g{bs, s.kv_heads, s.d};
  DeviceVector<float> dk(in.keys), dv(values);
  DeviceVector<int32_t> dkept(kept), dtable(table);
  for (cuda::Dtype type : testing::kAllDtypes) {  // rounded to the pool's format
    std::vector<float> pool(static_cast<size_t>(blocks) * g.BlockFloats(), 0.0f);
    testing::DeviceTyped dpool(pool, type);
    ASSERT_EQ(cuda::LaunchGatherKept(dk.get(), dv.get(), s.n, dkept.get(), count, s.kv_heads, s.d,
                                     dtable.get(), bs, dpool.get(), type, nullptr),
              0);
    std::vector<float> keys = in.keys, vals = values;
    testing::RoundInPlace(keys, type);
    testing::RoundInPlace(vals, type);
    for (int32_t kv = 0; kv < s.kv_heads; ++kv) {
      for (int64_t e = 0; e < count; ++e) {
        float* block = pool.data() + table[e / bs] * g.BlockFloats();
        const int64_t src = kept[kv * count + e];
        std::copy_n(keys.data() + (kv * s.n + src) * s.d, s.d, block + g.KOffset(kv, e % bs));
        std::copy_n(vals.data() + (kv * s.n + src) * s.d, s.d, block + g.VOffset(kv, e % bs));
      }
    }
    EXPECT_EQ(dpool.ToHost(), pool) << testing::DtypeName(type);
  }
}

}  // namespace
}  // namespace funnel
