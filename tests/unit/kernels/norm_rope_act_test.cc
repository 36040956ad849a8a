#include "kernels/cpu/norm_rope_act.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace funnel {
namespace {

std::vector<float> RandomVector(int64_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& f : v) f = u(rng);
  return v;
}

// ---------------------------------------------------------------------------------------------
// RmsNorm

TEST(RmsNormTest, MatchesFormula) {
  std::mt19937 rng(1);
  for (int64_t dim : {1, 7, 64, 4096}) {
    for (float eps : {1e-5f, 1e-6f, 0.5f}) {
      const int64_t n_rows = 3;
      std::vector<float> x = RandomVector(n_rows * dim, rng, -3.0f, 3.0f);
      const std::vector<float> weight = RandomVector(dim, rng, -2.0f, 2.0f);
      std::vector<float> out(x.size(), std::numeric_limits<float>::quiet_NaN());
      RmsNorm(x.data(), weight.data(), out.data(), n_rows, dim, eps);
      std::vector<float> in_place = x;
      RmsNorm(in_place.data(), weight.data(), in_place.data(), n_rows, dim, eps);
      for (int64_t t = 0; t < n_rows; ++t) {
        double ss = 0.0;
        for (int64_t i = 0; i < dim; ++i) ss += double{x[t * dim + i]} * x[t * dim + i];
        const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
        for (int64_t i = 0; i < dim; ++i) {
          const double want = x[t * dim + i] * inv * weight[i];
          ASSERT_NEAR(out[t * dim + i], want, 1e-5 * std::fabs(want) + 1e-6)
              << "dim=" << dim << " t=" << t << " i=" << i;
          ASSERT_EQ(in_place[t * dim + i], out[t * dim + i]) << "aliasing dim=" << dim;
        }
      }
    }
  }
}

TEST(RmsNormTest, ZeroRowStaysZeroAndConstantRowNormalizes) {
  const int64_t dim = 16;
  std::vector<float> x(2 * dim, 0.0f);
  for (int64_t i = 0; i < dim; ++i) x[dim + i] = 5.0f;
  const std::vector<float> weight(dim, 2.0f);
  std::vector<float> out(x.size());
  RmsNorm(x.data(), weight.data(), out.data(), 2, dim, 1e-6f);
  for (int64_t i = 0; i < dim; ++i) {
    EXPECT_EQ(out[i], 0.0f);
    EXPECT_NEAR(out[dim + i], 2.0f, 1e-5f);  // 5 / rms(5) * 2
  }
}

// ---------------------------------------------------------------------------------------------
// RoPE

struct RopeCase {
  int64_t head_dim, rot_dim;
  float theta;
};

// Rotation of pair (a, b) of frequency index i by pos * theta^(-2i / rot_dim), in double.
void RefRope(std::vector<double>& v, const std::vector<int32_t>& pos, int64_t n_heads,
             const RopeCase& c, RopeStyle style) {
  const int64_t half = c.rot_dim / 2;
  for (size_t t = 0; t < pos.size(); ++t) {
    for (int64_t h = 0; h < n_heads; ++h) {
      double* x = v.data() + (static_cast<int64_t>(t) * n_heads + h) * c.head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = pos[t] * std::pow(static_cast<double>(c.theta),
                                               -2.0 * i / static_cast<double>(c.rot_dim));
        const int64_t a = style == RopeStyle::kAdjacentPairs ? 2 * i : i;
        const int64_t b = style == RopeStyle::kAdjacentPairs ? 2 * i + 1 : i + half;
        const double x0 = x[a], x1 = x[b];
        x[a] = x0 * std::cos(angle) - x1 * std::sin(angle);
        x[b] = x0 * std::sin(angle) + x1 * std::cos(angle);
      }
    }
  }
}

constexpr RopeCase kRopeCases[] = {
    {8, 8, 10000.0f},  {64, 64, 10000.0f},    {64, 32, 10000.0f}, {12, 12, 500000.0f},
    {12, 4, 10000.0f}, {128, 128, 500000.0f}, {16, 2, 10000.0f},
};

TEST(RopeTest, MatchesRotationFormulaBothStyles) {
  std::mt19937 rng(2);
  const std::vector<int32_t> positions = {0, 1, 2, 17, 100, 1000, 4095};
  const int64_t n_heads = 3;
  for (const RopeCase& c : kRopeCases) {
    for (RopeStyle style : {RopeStyle::kAdjacentPairs, RopeStyle::kHalfSplit}) {
      const int64_t n_tokens = static_cast<int64_t>(positions.size());
      const std::vector<float> x0 = RandomVector(n_tokens * n_heads * c.head_dim, rng);
      std::vector<float> x = x0;
      ApplyRope(x.data(), positions.data(), n_tokens, n_heads, c.head_dim, c.rot_dim, c.theta,
                style);
      std::vector<double> want(x0.begin(), x0.end());
      RefRope(want, positions, n_heads, c, style);
      for (int64_t t = 0; t < n_tokens; ++t) {
        // fp32 angles lose ~1e-7 relative: allow error growing with the position.
        const double tol = 2e-6 + 3e-7 * positions[t];
        for (int64_t h = 0; h < n_heads; ++h) {
          const int64_t base = (t * n_heads + h) * c.head_dim;
          double norm_in = 0.0, norm_out = 0.0;
          for (int64_t d = 0; d < c.head_dim; ++d) {
            ASSERT_NEAR(x[base + d], want[base + d], tol)
                << "head_dim=" << c.head_dim << " rot_dim=" << c.rot_dim
                << " style=" << static_cast<int>(style) << " pos=" << positions[t] << " d=" << d;
            if (d >= c.rot_dim) {
              ASSERT_EQ(x[base + d], x0[base + d]) << "tail touched";
            }
            if (positions[t] == 0) {
              ASSERT_EQ(x[base + d], x0[base + d]) << "position 0 must be the identity";
            }
            norm_in += double{x0[base + d]} * x0[base + d];
            norm_out += double{x[base + d]} * x[base + d];
          }
          ASSERT_NEAR(norm_out, norm_in, 1e-5 * norm_in) << "norm not preserved";
        }
      }
    }
  }
}

// Half-split on a vector permuted so that pair i lives at (i, i + rot/2) must equal the
// adjacent-pairs result under the same permutation.
TEST(RopeTest, HalfSplitIsAdjacentPairsUnderPermutation) {
  std::mt19937 rng(3);
  const std::vector<int32_t> positions = {3, 250};
  for (const RopeCase& c : kRopeCases) {
    const int64_t half = c.rot_dim / 2;
    const int64_t n_heads = 2, n = 2 * n_heads * c.head_dim;
    const std::vector<float> adj0 = RandomVector(n, rng);
    std::vector<float> split0 = adj0;
    for (int64_t v = 0; v < n; v += c.head_dim) {
      for (int64_t i = 0; i < half; ++i) {
        split0[v + i] = adj0[v + 2 * i];
        split0[v + half + i] = adj0[v + 2 * i + 1];
      }
    }
    std::vector<float> adj = adj0, split = split0;
    ApplyRope(adj.data(), positions.data(), 2, n_heads, c.head_dim, c.rot_dim, c.theta,
              RopeStyle::kAdjacentPairs);
    ApplyRope(split.data(), positions.data(), 2, n_heads, c.head_dim, c.rot_dim, c.theta,
              RopeStyle::kHalfSplit);
    for (int64_t v = 0; v < n; v += c.head_dim) {
      for (int64_t i = 0; i < half; ++i) {
        ASSERT_NEAR(split[v + i], adj[v + 2 * i], 1e-6f) << c.head_dim << " " << i;
        ASSERT_NEAR(split[v + half + i], adj[v + 2 * i + 1], 1e-6f) << c.head_dim << " " << i;
      }
      for (int64_t d = c.rot_dim; d < c.head_dim; ++d) ASSERT_EQ(split[v + d], adj[v + d]);
    }
  }
}

// Rotating by p then by q (two calls) equals rotating by p + q (relative-position property).
TEST(RopeTest, RotationsCompose) {
  std::mt19937 rng(4);
  const RopeCase c{32, 32, 10000.0f};
  for (RopeStyle style : {RopeStyle::kAdjacentPairs, RopeStyle::kHalfSplit}) {
    const std::vector<float> x0 = RandomVector(c.head_dim, rng);
    std::vector<float> twice = x0, once = x0;
    const int32_t p = 5, q = 9, pq = 14;
    ApplyRope(twice.data(), &p, 1, 1, c.head_dim, c.rot_dim, c.theta, style);
    ApplyRope(twice.data(), &q, 1, 1, c.head_dim, c.rot_dim, c.theta, style);
    ApplyRope(once.data(), &pq, 1, 1, c.head_dim, c.rot_dim, c.theta, style);
    for (int64_t d = 0; d < c.head_dim; ++d) EXPECT_NEAR(twice[d], once[d], 1e-5f) << d;
  }
}

// ---------------------------------------------------------------------------------------------
// SwiGlu

TEST(SwiGluTest, MatchesFormulaIncludingExtremes) {
  std::mt19937 rng(5);
  std::vector<float> gate = RandomVector(1000, rng, -10.0f, 10.0f);
  std::vector<float> up = RandomVector(1000, rng, -3.0f, 3.0f);
  const float extremes[] = {0.0f,   -0.0f,  1.0f,    -1.0f,  50.0f, -50.0f, 88.0f,
                            -88.0f, 100.0f, -100.0f, 1e-30f, 1e30f, -1e30f};
  for (size_t i = 0; i < std::size(extremes); ++i) gate[i] = extremes[i];
  const int64_t n = static_cast<int64_t>(gate.size());
  std::vector<float> out(gate.size());
  SwiGlu(gate.data(), up.data(), out.data(), n);
  std::vector<float> alias_gate = gate, alias_up = up;
  SwiGlu(alias_gate.data(), up.data(), alias_gate.data(), n);
  SwiGlu(gate.data(), alias_up.data(), alias_up.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double want = g / (1.0 + std::exp(-g)) * up[i];
    ASSERT_FALSE(std::isnan(out[i])) << "gate=" << g;
    ASSERT_NEAR(out[i], want, 1e-6 * std::fabs(want) + 1e-6) << "gate=" << g << " up=" << up[i];
    ASSERT_EQ(alias_gate[i], out[i]);
    ASSERT_EQ(alias_up[i], out[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax

void ExpectSoftmax(std::vector<float> x) {
  const std::vector<float> in = x;
  Softmax(x.data(), static_cast<int64_t>(x.size()));
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : in) mx = std::max(mx, double{v});
  double sum = 0.0;
  for (float v : in) sum += std::exp(v - mx);
  double total = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(in[i] - mx) / sum;
    ASSERT_FALSE(std::isnan(x[i])) << i;
    ASSERT_NEAR(x[i], want, 1e-6 * want + 1e-7) << "i=" << i << " in=" << in[i];
    ASSERT_GE(x[i], 0.0f);
    total += x[i];
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
}

TEST(SoftmaxTest, MatchesFormula) {
  std::mt19937 rng(6);
  for (int64_t n : {1, 2, 5, 100, 4097}) ExpectSoftmax(RandomVector(n, rng, -20.0f, 20.0f));
}

TEST(SoftmaxTest, LargeValuesDoNotOverflow) {
  ExpectSoftmax({1000.0f, 999.0f, 0.0f, -1000.0f});
  ExpectSoftmax({1e30f, 1e30f, 1e30f});
  ExpectSoftmax({-1e4f, -1e4f + 1.0f});
  ExpectSoftmax({3e38f, -3e38f});
  std::vector<float> one = {12345.0f};
  Softmax(one.data(), 1);
  EXPECT_EQ(one[0], 1.0f);
  std::vector<float> uniform(10, 500.0f);
  Softmax(uniform.data(), 10);
  for (float v : uniform) EXPECT_NEAR(v, 0.1f, 1e-7f);
}

TEST(SoftmaxTest, MaskedEntriesGetZero) {
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> x = {ninf, 1.0f, ninf, 1.0f};
  Softmax(x.data(), 4);
  EXPECT_EQ(x[0], 0.0f);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_NEAR(x[1], 0.5f, 1e-7f);
  EXPECT_NEAR(x[3], 0.5f, 1e-7f);
}

TEST(SoftmaxTest, EmptyIsNoOp) {
  float x = 7.0f;
  Softmax(&x, 0);
  EXPECT_EQ(x, 7.0f);
}

}  // namespace
}  // namespace funnel
