// ComputeLayerBudgets: the PyramidKV schedule (pyramidkv-reference.md section 1, both the
// official integer arithmetic and DESIGN.md's exact largest-remainder rounding) and the uniform
// budgets of snapkv / h2o / streamingllm.
#include "runtime/kv/layer_budget.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

namespace funnel {
namespace {

KvPolicy Pyramid(int64_t budget, int32_t window = 8,
                 BudgetRounding rounding = BudgetRounding::kOfficial, double beta = 20.0) {
  KvPolicy p;
  p.method = KvMethod::kPyramidKv;
  p.budget = budget;
  p.window = window;
  p.rounding = rounding;
  p.beta = beta;
  return p;
}

KvPolicy Method(KvMethod m, int64_t budget, int32_t window = 8) {
  KvPolicy p;
  p.method = m;
  p.budget = budget;
  p.window = window;
  return p;
}

std::vector<int64_t> Stored(const LayerBudgets& b, int32_t layers) {
  std::vector<int64_t> out;
  for (int32_t l = 0; l < layers; ++l) out.push_back(b.stored(l));
  return out;
}

int64_t Sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

double MeanStored(const LayerBudgets& b, int32_t layers) {
  return static_cast<double>(Sum(Stored(b, layers))) / layers;
}

// The reference code's integer arithmetic, written out from section 1.1 (N >= 2k only).
std::vector<int64_t> OfficialSelected(int32_t layers, int64_t budget, int64_t window, int64_t n) {
  const int64_t k = budget - window;
  int64_t min_num = k / 20;
  int64_t max_num = 2 * k - min_num;
  if (max_num >= n - window) {
    max_num = n - window;
    min_num = 2 * k - max_num;
  }
  const int64_t steps = (max_num - min_num) / (layers - 1);
  std::vector<int64_t> b;
  for (int32_t l = 0; l < layers; ++l) b.push_back(max_num - l * steps);
  return b;
}

// The real-valued schedule the exact rounding starts from.
std::vector<double> RealSchedule(int32_t layers, int64_t budget, int64_t window, int64_t n, double beta) {
  const double k = static_cast<double>(budget - window);
  double min_r = k / beta, max_r = 2 * k - min_r;
  if (max_r >= static_cast<double>(n - window)) {
    max_r = static_cast<double>(n - window);
    min_r = 2 * k - max_r;
  }
  std::vector<double> r;
  for (int32_t l = 0; l < layers; ++l) r.push_back(max_r - l * (max_r - min_r) / (layers - 1));
  return r;
}

// ---------------------------------------------------------------------------------------------
// Official rounding: the worked examples of section 1.4.

TEST(LayerBudgetTest, Official32LayersB128) {
  const LayerBudgets b = ComputeLayerBudgets(Pyramid(128), 32, 8000);
  ASSERT_TRUE(b.compress);
  EXPECT_EQ(b.budget, 128);
  EXPECT_EQ(b.window, 8);
  EXPECT_EQ(b.prompt_tokens, 8000);
  ASSERT_EQ(b.selected.size(), 32u);
  for (int32_t l = 0; l < 32; ++l) {
    EXPECT_EQ(b.selected[l], 234 - 7 * l) << l;
    EXPECT_EQ(b.stored(l), 242 - 7 * l) << l;
  }
  EXPECT_EQ(b.stored(0), 242);
  EXPECT_EQ(b.stored(1), 235);
  EXPECT_EQ(b.stored(30), 32);
  EXPECT_EQ(b.stored(31), 25);
  EXPECT_EQ(Sum(b.selected), 4016);        // target 3840, +176 = 16 * (228 mod 31)
  EXPECT_EQ(b.total_stored(), 4016 + 32 * 8);
  EXPECT_DOUBLE_EQ(MeanStored(b, 32), 133.5);
}

TEST(LayerBudgetTest, Official5And8Layers) {
  const LayerBudgets five = ComputeLayerBudgets(Pyramid(128), 5, 8000);
  ASSERT_TRUE(five.compress);
  EXPECT_EQ(Stored(five, 5), (std::vector<int64_t>{242, 185, 128, 71, 14}));
  EXPECT_EQ(five.selected, (std::vector<int64_t>{234, 177, 120, 63, 6}));
  EXPECT_EQ(five.total_stored(), 640);

  const LayerBudgets eight = ComputeLayerBudgets(Pyramid(128), 8, 8000);
  ASSERT_TRUE(eight.compress);
  EXPECT_EQ(Stored(eight, 8), (std::vector<int64_t>{242, 210, 178, 146, 114, 82, 50, 18}));
  EXPECT_EQ(Sum(eight.selected), 1040 - 64);  // stored 1040 against 1024
  EXPECT_EQ(eight.total_stored(), 1040);
}

TEST(LayerBudgetTest, OfficialOtherBudgetsTable) {
  struct Row {
    int64_t budget, layer0, layer31, steps;
    double mean;
  };
  const Row rows[] = {{64, 118, 25, 3, 71.5},       {96, 180, 25, 5, 102.5},
                      {128, 242, 25, 7, 133.5},     {256, 492, 27, 15, 259.5},
                      {512, 991, 61, 30, 526.0},    {1024, 1990, 68, 62, 1029.0},
                      {2048, 3986, 111, 125, 2048.5}};
  for (const Row& r : rows) {
    SCOPED_TRACE(r.budget);
    const LayerBudgets b = ComputeLayerBudgets(Pyramid(r.budget), 32, 8000);
    ASSERT_TRUE(b.compress);
    EXPECT_EQ(b.stored(0), r.layer0);
    EXPECT_EQ(b.stored(31), r.layer31);
    for (int32_t l = 1; l < 32; ++l) EXPECT_EQ(b.stored(l - 1) - b.stored(l), r.steps) << l;
    EXPECT_DOUBLE_EQ(MeanStored(b, 32), r.mean);
    EXPECT_GE(b.stored(31) - 8, (r.budget - 8) / 20);  // the top layer gets at least min_num
  }
}

TEST(LayerBudgetTest, Official80Layers) {
  const LayerBudgets b64 = ComputeLayerBudgets(Pyramid(64), 80, 8000);
  EXPECT_DOUBLE_EQ(MeanStored(b64, 80), 78.5);
  const LayerBudgets b128 = ComputeLayerBudgets(Pyramid(128), 80, 8000);
  EXPECT_EQ(b128.stored(0), 242);
  EXPECT_EQ(b128.stored(1), 240);  // steps = 228 // 79 = 2
  EXPECT_EQ(b128.stored(79), 84);
  EXPECT_DOUBLE_EQ(MeanStored(b128, 80), 163.0);  // +27%
  const LayerBudgets b2048 = ComputeLayerBudgets(Pyramid(2048), 80, 8000);
  const double over = MeanStored(b2048, 80) / 2048.0 - 1.0;
  EXPECT_GT(over, 0.0005);
  EXPECT_LT(over, 0.0015);  // about +0.1%
}

TEST(LayerBudgetTest, OfficialStepsFloorToZeroDoublesTheTotal) {
  // k = 8, min 0, max 16: (16 - 0) // 79 = 0, so every layer gets max_num.
  const LayerBudgets b = ComputeLayerBudgets(Pyramid(16), 80, 8000);
  ASSERT_TRUE(b.compress);
  for (int32_t l = 0; l < 80; ++l) EXPECT_EQ(b.selected[l], 16) << l;
}

TEST(LayerBudgetTest, OfficialShortPromptEdgeCases) {
  const KvPolicy p = Pyramid(128);
  for (int64_t n : {1, 8, 9, 64, 127}) {
    const LayerBudgets b = ComputeLayerBudgets(p, 32, n);
    EXPECT_FALSE(b.compress) << n;
    EXPECT_EQ(b.budget, n);
    EXPECT_EQ(b.prompt_tokens, n);
    for (int32_t l = 0; l < 32; ++l) EXPECT_EQ(b.stored(l), n) << n;
    EXPECT_EQ(b.total_stored(), 32 * n);
  }
  for (int64_t n : {128, 129, 200, 238, 239}) {  // uniform SnapKV regime
    const LayerBudgets b = ComputeLayerBudgets(p, 32, n);
    ASSERT_TRUE(b.compress) << n;
    EXPECT_EQ(b.budget, 128);
    for (int32_t l = 0; l < 32; ++l) {
      EXPECT_EQ(b.selected[l], 120) << n;
      EXPECT_EQ(b.stored(l), 128) << n;
    }
  }
  // N = 240: max clipped to 232, min 8, steps 7 -> 232 ... 15.
  LayerBudgets b = ComputeLayerBudgets(p, 32, 240);
  ASSERT_TRUE(b.compress);
  EXPECT_EQ(b.selected.front(), 232);
  EXPECT_EQ(b.selected.back(), 15);
  for (int32_t l = 0; l < 32; ++l) EXPECT_EQ(b.selected[l], 232 - 7 * l);
  b = ComputeLayerBudgets(p, 32, 241);
  EXPECT_EQ(b.selected.front(), 233);
  EXPECT_EQ(b.selected.back(), 16);
  for (int32_t l = 0; l < 32; ++l) EXPECT_EQ(b.selected[l], 233 - 7 * l);
  for (int64_t n : {242, 243, 1000, 100000}) {
    b = ComputeLayerBudgets(p, 32, n);
    EXPECT_EQ(b.selected.front(), 234) << n;
    EXPECT_EQ(b.selected.back(), 17) << n;
  }
}

TEST(LayerBudgetTest, OfficialMatchesTheFormulaEverywhere) {
  for (int32_t layers : {2, 3, 5, 8, 16, 22, 32, 40, 80}) {
    for (int64_t budget : {16, 24, 64, 100, 128, 333, 1024}) {
      for (int64_t window : {1, 8, 32}) {
        if (budget <= window) continue;
        const int64_t k = budget - window;
        for (int64_t n : {2 * k, 2 * k + 1, 2 * k + window - 1, 2 * k + window + 5, 5000 + budget}) {
          if (n < budget) continue;
          const LayerBudgets b = ComputeLayerBudgets(Pyramid(budget, static_cast<int32_t>(window)), layers, n);
          ASSERT_TRUE(b.compress);
          EXPECT_EQ(b.selected, OfficialSelected(layers, budget, window, n))
              << layers << " " << budget << " " << window << " " << n;
          for (int64_t s : b.selected) EXPECT_LE(s, n - window);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Exact rounding (the default): totals preserved.

void ExpectExactSchedule(int32_t layers, int64_t budget, int64_t window, int64_t n, double beta = 20.0) {
  SCOPED_TRACE(::testing::Message() << "L=" << layers << " B=" << budget << " W=" << window
                                    << " N=" << n << " beta=" << beta);
  const LayerBudgets b =
      ComputeLayerBudgets(Pyramid(budget, static_cast<int32_t>(window), BudgetRounding::kExact, beta),
                          layers, n);
  const int64_t k = budget - window;
  if (n < budget) {
    EXPECT_FALSE(b.compress);
    return;
  }
  ASSERT_TRUE(b.compress);
  ASSERT_EQ(b.selected.size(), static_cast<size_t>(layers));
  EXPECT_EQ(b.window, window);
  EXPECT_EQ(b.budget, budget);
  EXPECT_EQ(Sum(b.selected), int64_t{layers} * k);
  EXPECT_EQ(b.total_stored(), int64_t{layers} * budget);
  for (int32_t l = 0; l < layers; ++l) {
    EXPECT_GE(b.selected[l], 0) << l;
    EXPECT_LE(b.selected[l], n - window) << l;
    if (l > 0) {
      EXPECT_LE(b.selected[l], b.selected[l - 1]) << l;
    }
    EXPECT_LE(b.selected[l], b.selected[0]) << l;
  }
  if (n < 2 * k || layers == 1) {
    for (int64_t s : b.selected) EXPECT_EQ(s, k);
    return;
  }
  // Each count is the real-valued schedule rounded down or up.
  const std::vector<double> real = RealSchedule(layers, budget, window, n, beta);
  for (int32_t l = 0; l < layers; ++l) {
    EXPECT_GE(static_cast<double>(b.selected[l]), std::floor(real[l] + 1e-6) - 0.0) << l << " " << real[l];
    EXPECT_LE(static_cast<double>(b.selected[l]), std::ceil(real[l] - 1e-6)) << l << " " << real[l];
  }
}

TEST(LayerBudgetTest, ExactPreservesTheTotal) {
  for (int32_t layers : {1, 2, 3, 5, 7, 8, 12, 16, 22, 32, 40, 48, 64, 80, 81, 126}) {
    for (int64_t budget : {9, 16, 17, 24, 64, 96, 100, 128, 256, 333, 512, 1024, 2048}) {
      for (int64_t window : {1, 4, 8, 32, 64}) {
        if (budget <= window) continue;
        const int64_t k = budget - window;
        for (int64_t n : {budget - 1, budget, budget + 1, 2 * k - 1, 2 * k, 2 * k + 1,
                          2 * k + window - 1, 2 * k + window, 3 * budget + 7, int64_t{8000},
                          int64_t{131072}}) {
          if (n < 1) continue;
          ExpectExactSchedule(layers, budget, window, n);
        }
      }
    }
  }
}

TEST(LayerBudgetTest, ExactWithOtherBetas) {
  for (double beta : {1.0, 2.0, 3.7, 7.0, 20.0, 100.0, 1e6}) {
    for (int32_t layers : {2, 5, 32, 80}) {
      for (int64_t n : {300, 4000}) ExpectExactSchedule(layers, 128, 8, n, beta);
    }
  }
  // beta 1: min = max = k, so the pyramid is flat.
  const LayerBudgets flat = ComputeLayerBudgets(Pyramid(128, 8, BudgetRounding::kExact, 1.0), 32, 8000);
  for (int64_t s : flat.selected) EXPECT_EQ(s, 120);
}

TEST(LayerBudgetTest, ExactKnownSchedules) {
  // 5 layers, B = 128: the division is exact, so exact and official agree.
  const LayerBudgets five = ComputeLayerBudgets(Pyramid(128, 8, BudgetRounding::kExact), 5, 8000);
  EXPECT_EQ(five.selected, (std::vector<int64_t>{234, 177, 120, 63, 6}));
  // 32 layers, B = 128: 234 at the bottom, 6 at the top, mean exactly 128 stored.
  const LayerBudgets b = ComputeLayerBudgets(Pyramid(128, 8, BudgetRounding::kExact), 32, 8000);
  EXPECT_EQ(b.selected.front(), 234);
  EXPECT_EQ(b.selected.back(), 6);
  EXPECT_DOUBLE_EQ(MeanStored(b, 32), 128.0);
  // 80 layers, B = 128: no +27% overshoot.
  const LayerBudgets deep = ComputeLayerBudgets(Pyramid(128, 8, BudgetRounding::kExact), 80, 8000);
  EXPECT_DOUBLE_EQ(MeanStored(deep, 80), 128.0);
  EXPECT_EQ(deep.selected.front(), 234);
  EXPECT_EQ(deep.selected.back(), 6);
  // The default policy rounds exactly.
  KvPolicy def;
  def.method = KvMethod::kPyramidKv;
  def.budget = 128;
  EXPECT_EQ(ComputeLayerBudgets(def, 32, 8000).selected, b.selected);
}

TEST(LayerBudgetTest, ExactShortPrompts) {
  const KvPolicy p = Pyramid(128, 8, BudgetRounding::kExact);
  EXPECT_FALSE(ComputeLayerBudgets(p, 32, 127).compress);
  const LayerBudgets at_b = ComputeLayerBudgets(p, 32, 128);  // N == B compresses, keeps all N
  ASSERT_TRUE(at_b.compress);
  for (int32_t l = 0; l < 32; ++l) EXPECT_EQ(at_b.stored(l), 128);
  for (int64_t n : {239, 240, 241, 242}) {
    const LayerBudgets b = ComputeLayerBudgets(p, 32, n);
    ASSERT_TRUE(b.compress);
    EXPECT_EQ(Sum(b.selected), 32 * 120) << n;
    EXPECT_LE(b.selected.front(), n - 8);
  }
  EXPECT_EQ(ComputeLayerBudgets(p, 32, 240).selected.front(), 232);
  EXPECT_EQ(ComputeLayerBudgets(p, 32, 241).selected.front(), 233);
  EXPECT_EQ(ComputeLayerBudgets(p, 32, 242).selected.front(), 234);
}

TEST(LayerBudgetTest, OneLayerModelGetsKWithoutDividingByZero) {
  for (BudgetRounding r : {BudgetRounding::kExact, BudgetRounding::kOfficial}) {
    for (int64_t n : {127, 128, 200, 240, 241, 8000}) {
      const LayerBudgets b = ComputeLayerBudgets(Pyramid(128, 8, r), 1, n);
      ASSERT_EQ(b.selected.size(), 1u);
      if (n < 128) {
        EXPECT_FALSE(b.compress);
        EXPECT_EQ(b.stored(0), n);
      } else {
        ASSERT_TRUE(b.compress);
        EXPECT_EQ(b.selected[0], 120) << n;
        EXPECT_EQ(b.stored(0), 128) << n;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Ratios and the other methods.

TEST(LayerBudgetTest, RatioBudgets) {
  KvPolicy p;
  p.method = KvMethod::kPyramidKv;
  p.ratio = 0.25;
  LayerBudgets b = ComputeLayerBudgets(p, 32, 1000);
  ASSERT_TRUE(b.compress);
  EXPECT_EQ(b.budget, 250);
  EXPECT_EQ(b.window, 8);
  EXPECT_EQ(Sum(b.selected), 32 * 242);
  b = ComputeLayerBudgets(p, 32, 1001);  // 250.25
  EXPECT_EQ(b.budget, 250);
  b = ComputeLayerBudgets(p, 32, 1003);  // 250.75
  EXPECT_EQ(b.budget, 251);
  EXPECT_EQ(Sum(b.selected), 32 * 243);

  for (KvMethod m : {KvMethod::kSnapKv, KvMethod::kH2o, KvMethod::kPyramidKv}) {
    KvPolicy r;
    r.method = m;
    r.ratio = 0.3;
    for (int64_t n : {40, 77, 100, 513, 4096}) {
      const LayerBudgets rb = ComputeLayerBudgets(r, 5, n);
      const int64_t expect_b = std::llround(0.3 * static_cast<double>(n));
      EXPECT_EQ(rb.budget, expect_b) << n;
      ASSERT_TRUE(rb.compress) << n;
      // Whatever the split, the average layer keeps B entries (exact rounding) and at most N.
      EXPECT_EQ(rb.total_stored(), 5 * expect_b) << KvMethodName(m) << " " << n;
      for (int32_t l = 0; l < 5; ++l) EXPECT_LE(rb.stored(l), n);
    }
    // Ratio 1: B = N, compressing keeps everything.
    r.ratio = 1.0;
    const LayerBudgets all = ComputeLayerBudgets(r, 5, 300);
    for (int32_t l = 0; l < 5; ++l) EXPECT_EQ(all.stored(l), 300);
  }
}

TEST(LayerBudgetTest, TinyRatioStillKeepsSomething) {
  // round(0.01 * 10) = 0: a layer must never end up empty (kvpress issue #265 in spirit).
  for (KvMethod m : {KvMethod::kSnapKv, KvMethod::kH2o, KvMethod::kPyramidKv, KvMethod::kStreamingLlm}) {
    KvPolicy r;
    r.method = m;
    r.ratio = 0.01;
    for (int64_t n : {1, 10, 49}) {
      const LayerBudgets b = ComputeLayerBudgets(r, 5, n);
      for (int32_t l = 0; l < 5; ++l) {
        EXPECT_GE(b.stored(l), 1) << KvMethodName(m) << " n=" << n;
        EXPECT_LE(b.stored(l), n);
      }
    }
  }
  // A ratio budget at or under the window: the window shrinks to B (B includes the window).
  KvPolicy r;
  r.method = KvMethod::kSnapKv;
  r.ratio = 0.05;
  const LayerBudgets b = ComputeLayerBudgets(r, 5, 100);  // B = 5 < W = 8
  ASSERT_TRUE(b.compress);
  for (int32_t l = 0; l < 5; ++l) EXPECT_EQ(b.stored(l), 5);
  EXPECT_LE(b.window, 5);
}

TEST(LayerBudgetTest, StreamingLlmKeepsFourSinksAndTheRecentRest) {
  for (int64_t budget : {5, 8, 64, 128, 1024}) {
    for (int64_t n : {budget - 1, budget, budget + 1, 3 * budget, int64_t{8000}}) {
      for (int32_t window : {1, 8, 32}) {  // the configured window is ignored
        const LayerBudgets b = ComputeLayerBudgets(Method(KvMethod::kStreamingLlm, budget, window), 32, n);
        if (n < budget) {
          EXPECT_FALSE(b.compress);
          continue;
        }
        ASSERT_TRUE(b.compress);
        EXPECT_EQ(b.budget, budget);
        EXPECT_EQ(b.window, budget - 4);
        for (int32_t l = 0; l < 32; ++l) {
          EXPECT_EQ(b.selected[l], 4);
          EXPECT_EQ(b.stored(l), budget);
        }
      }
    }
  }
}

TEST(LayerBudgetTest, SnapKvAndH2oAreUniform) {
  for (KvMethod m : {KvMethod::kSnapKv, KvMethod::kH2o}) {
    for (BudgetRounding r : {BudgetRounding::kExact, BudgetRounding::kOfficial}) {
      for (int64_t n : {127, 128, 200, 240, 1000, 8000}) {
        KvPolicy p = Method(m, 128);
        p.rounding = r;
        const LayerBudgets b = ComputeLayerBudgets(p, 32, n);
        if (n < 128) {
          EXPECT_FALSE(b.compress);
          for (int32_t l = 0; l < 32; ++l) EXPECT_EQ(b.stored(l), n);
          continue;
        }
        ASSERT_TRUE(b.compress);
        EXPECT_EQ(b.window, 8);
        for (int32_t l = 0; l < 32; ++l) {
          EXPECT_EQ(b.selected[l], 120);
          EXPECT_EQ(b.stored(l), 128);
        }
      }
    }
    const LayerBudgets w32 = ComputeLayerBudgets(Method(m, 1024, 32), 80, 50000);
    for (int64_t s : w32.selected) EXPECT_EQ(s, 992);
  }
}

TEST(LayerBudgetTest, FullNeverCompresses) {
  for (int64_t n : {1, 128, 8000}) {
    const LayerBudgets b = ComputeLayerBudgets(KvPolicy{}, 32, n);
    EXPECT_FALSE(b.compress);
    EXPECT_EQ(b.budget, n);
    EXPECT_EQ(b.prompt_tokens, n);
    EXPECT_EQ(b.selected.size(), 32u);
    for (int32_t l = 0; l < 32; ++l) EXPECT_EQ(b.stored(l), n);
    EXPECT_EQ(b.total_stored(), 32 * n);
  }
}

}  // namespace
}  // namespace funnel
