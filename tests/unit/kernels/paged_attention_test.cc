#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace funnel {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Case {
  int64_t block_size, num_heads, num_kv_heads, head_dim, n_q, past;
  float q_scale = 1.5f;

  std::string Name() const {
    return absl::StrFormat("bs=%d heads=%d/%d d=%d n_q=%d past=%d", block_size, num_heads,
                           num_kv_heads, head_dim, n_q, past);
  }
};

// One layer of paged KV for one sequence, with the K/V values also kept densely for the naive
// reference: k[(h * kv_len + j) * d + x].
struct Fixture {
  Case c;
  int64_t kv_len;
  std::vector<float> pool;  // every float not holding a stored entry is NaN
  std::vector<int32_t> block_table;
  std::vector<float> k, v, q;

  PagedAttentionArgs Args(float* out) const {
    PagedAttentionArgs a;
    a.q = q.data();
    a.out = out;
    a.n_q = c.n_q;
    a.num_heads = c.num_heads;
    a.pool = pool.data();
    a.geometry = PagedKvGeometry{c.block_size, c.num_kv_heads, c.head_dim};
    a.block_table = block_table.data();
    a.kv_len = kv_len;
    a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    return a;
  }
};

Fixture Build(const Case& c, std::mt19937& rng) {
  Fixture f{c, c.past + c.n_q, {}, {}, {}, {}, {}};
  const int64_t bs = c.block_size, d = c.head_dim, kvh = c.num_kv_heads;
  const int64_t used = (f.kv_len + bs - 1) / bs;
  const int64_t total = used + 5;  // spare blocks stay NaN
  // Shuffled ids: non-contiguous and non-monotonic.
  std::vector<int32_t> ids(static_cast<size_t>(total));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  f.block_table.assign(ids.begin(), ids.begin() + used);
  if (used >= 3 && std::is_sorted(f.block_table.begin(), f.block_table.end())) {
    std::swap(f.block_table[0], f.block_table[1]);
  }

  const int64_t block_floats = 2 * kvh * bs * d;
  f.pool.assign(static_cast<size_t>(total * block_floats), kNaN);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  f.k.resize(static_cast<size_t>(kvh * f.kv_len * d));
  f.v.resize(f.k.size());
  for (int64_t h = 0; h < kvh; ++h) {
    for (int64_t j = 0; j < f.kv_len; ++j) {
      float* block = f.pool.data() + f.block_table[j / bs] * block_floats;
      const int64_t slot = j % bs;
      // Layout from the header: K[h][s] at (h * bs + s) * d; V likewise after all of K.
      float* kp = block + (h * bs + slot) * d;
      float* vp = block + kvh * bs * d + (h * bs + slot) * d;
      for (int64_t x = 0; x < d; ++x) {
        kp[x] = f.k[(h * f.kv_len + j) * d + x] = u(rng);
        vp[x] = f.v[(h * f.kv_len + j) * d + x] = u(rng);
      }
    }
  }
  f.q.resize(static_cast<size_t>(c.n_q * c.num_heads * d));
  for (auto& x : f.q) x = u(rng) * c.q_scale;
  return f;
}

// Naive causal softmax attention in double. Returns outputs and per-element tolerances.
void Naive(const Fixture& f, double rel_tol, std::vector<double>* want, std::vector<double>* tol) {
  const Case& c = f.c;
  const int64_t d = c.head_dim, group = c.num_heads / c.num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  want->assign(static_cast<size_t>(c.n_q * c.num_heads * d), 0.0);
  tol->assign(want->size(), 0.0);
  std::vector<double> p;
  for (int64_t i = 0; i < c.n_q; ++i) {
    const int64_t visible = c.past + i + 1;
    for (int64_t head = 0; head < c.num_heads; ++head) {
      const int64_t h = head / group;
      const float* q = f.q.data() + (i * c.num_heads + head) * d;
      p.assign(static_cast<size_t>(visible), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < visible; ++j) {
        const float* k = f.k.data() + (h * f.kv_len + j) * d;
        double s = 0.0;
        for (int64_t x = 0; x < d; ++x) s += double{q[x]} * k[x];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      double sum = 0.0;
      for (auto& s : p) sum += (s = std::exp(s - mx));
      for (int64_t x = 0; x < d; ++x) {
        double acc = 0.0, mag = 0.0;
        for (int64_t j = 0; j < visible; ++j) {
          const double vj = f.v[(h * f.kv_len + j) * d + x];
          acc += p[j] / sum * vj;
          mag += p[j] / sum * std::fabs(vj);
        }
        const size_t o = static_cast<size_t>((i * c.num_heads + head) * d + x);
        (*want)[o] = acc;
        (*tol)[o] = rel_tol * mag + 1e-6;
      }
    }
  }
}

void CheckCase(const Case& c, std::mt19937& rng, AttentionScratch& scratch, double rel_tol = 1e-5) {
  const Fixture f = Build(c, rng);
  std::vector<double> want, tol;
  Naive(f, rel_tol, &want, &tol);
  std::vector<float> out(want.size(), kNaN);
  const PagedAttentionArgs args = f.Args(out.data());
  for (int64_t h = 0; h < c.num_kv_heads; ++h) PagedAttentionKvHead(args, h, scratch);
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(out[i], want[i], tol[i]) << c.Name() << " index " << i;
  }
  std::vector<float> ref(want.size(), kNaN);
  PagedAttentionReference(f.Args(ref.data()));
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(ref[i], want[i], tol[i]) << c.Name() << " reference, index " << i;
  }
}

struct HeadConfig {
  int64_t num_heads, num_kv_heads;
};
constexpr HeadConfig kHeadConfigs[] = {{4, 4}, {4, 2}, {4, 1}, {8, 2}};

// n_q < 16 takes the direct path, n_q >= 16 the gather + sgemm path (70 spans two query tiles).
TEST(PagedAttentionTest, MatchesNaiveAttentionAcrossShapes) {
  std::mt19937 rng(2024);
  AttentionScratch scratch;  // shared across all cases on purpose: reuse with changing sizes
  int cases = 0;
  for (int64_t block_size : {1, 3, 16}) {
    for (const HeadConfig& hc : kHeadConfigs) {
      for (int64_t head_dim : {8, 16, 64, 12}) {
        for (int64_t n_q : {1, 3, 15, 16, 17, 70}) {
          for (int64_t past : {0, 1, 37}) {
            CheckCase({block_size, hc.num_heads, hc.num_kv_heads, head_dim, n_q, past}, rng,
                      scratch);
            if (::testing::Test::HasFatalFailure()) return;
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 3 * 4 * 4 * 6 * 3);
}

TEST(PagedAttentionTest, LongContextBothPaths) {
  std::mt19937 rng(7);
  AttentionScratch scratch;
  for (int64_t n_q : {1, 4, 16, 130}) {
    CheckCase({16, 8, 2, 64, n_q, 300}, rng, scratch);
    if (HasFatalFailure()) return;
  }
}

// Sharp softmax (large logits): still stable, matches the double reference.
TEST(PagedAttentionTest, PeakedScores) {
  std::mt19937 rng(8);
  AttentionScratch scratch;
  for (int64_t n_q : {2, 20}) {
    Case c{3, 4, 2, 16, n_q, 10};
    c.q_scale = 40.0f;
    CheckCase(c, rng, scratch, 2e-4);
    if (HasFatalFailure()) return;
  }
}

// One KV head writes exactly the outputs of its query-head group, nothing else.
TEST(PagedAttentionTest, KvHeadWritesOnlyItsGroup) {
  std::mt19937 rng(9);
  for (int64_t n_q : {3, 20}) {
    const Case c{3, 8, 2, 16, n_q, 5};
    const Fixture f = Build(c, rng);
    std::vector<double> want, tol;
    Naive(f, 1e-5, &want, &tol);
    std::vector<float> out(want.size(), kNaN);
    AttentionScratch scratch;
    PagedAttentionKvHead(f.Args(out.data()), 1, scratch);
    const int64_t group = c.num_heads / c.num_kv_heads;
    for (int64_t i = 0; i < c.n_q; ++i) {
      for (int64_t head = 0; head < c.num_heads; ++head) {
        for (int64_t x = 0; x < c.head_dim; ++x) {
          const size_t o = static_cast<size_t>((i * c.num_heads + head) * c.head_dim + x);
          if (head / group == 1) {
            ASSERT_NEAR(out[o], want[o], tol[o]) << "n_q=" << n_q << " head=" << head;
          } else {
            ASSERT_TRUE(std::isnan(out[o])) << "n_q=" << n_q << " head " << head << " written";
          }
        }
      }
    }
  }
}

// With one visible entry the output is exactly that entry's V; with identical keys it is the
// plain mean of the visible values.
TEST(PagedAttentionTest, DegenerateDistributions) {
  std::mt19937 rng(10);
  for (int64_t n_q : {1, 16}) {
    Case c{3, 2, 1, 8, n_q, 0};
    Fixture f = Build(c, rng);
    // All keys equal -> uniform weights over the visible prefix.
    for (int64_t j = 0; j < f.kv_len; ++j) {
      float* kp = f.pool.data() + f.block_table[j / 3] * (2 * 3 * 8) + (j % 3) * 8;
      for (int64_t x = 0; x < 8; ++x) kp[x] = 0.25f;
    }
    std::vector<float> out(static_cast<size_t>(n_q * 2 * 8), kNaN);
    AttentionScratch scratch;
    PagedAttentionKvHead(f.Args(out.data()), 0, scratch);
    for (int64_t i = 0; i < n_q; ++i) {
      for (int64_t head = 0; head < 2; ++head) {
        for (int64_t x = 0; x < 8; ++x) {
          double mean = 0.0;
          for (int64_t j = 0; j <= i; ++j) mean += f.v[j * 8 + x];
          mean /= static_cast<double>(i + 1);
          ASSERT_NEAR(out[(i * 2 + head) * 8 + x], mean, 1e-5) << "n_q=" << n_q << " i=" << i;
          if (i == 0) {
            EXPECT_NEAR(out[(i * 2 + head) * 8 + x], f.v[x], 1e-6);
          }
        }
      }
    }
  }
}

TEST(PagedKvGeometryTest, OffsetsMatchDocumentedLayout) {
  const PagedKvGeometry g{5, 3, 12};
  EXPECT_EQ(g.BlockFloats(), 2 * 3 * 5 * 12);
  EXPECT_EQ(g.KOffset(0, 0), 0);
  EXPECT_EQ(g.KOffset(2, 4), (2 * 5 + 4) * 12);
  EXPECT_EQ(g.VOffset(0, 0), 3 * 5 * 12);
  EXPECT_EQ(g.VOffset(2, 4), 3 * 5 * 12 + (2 * 5 + 4) * 12);
  EXPECT_EQ(g.VOffset(2, 4) + 12, g.BlockFloats());
}

}  // namespace
}  // namespace funnel
