// KvPolicy: validation rules, the effective budget of a ratio, and the name parsers.
#include "runtime/kv/kv_policy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace funnel {
namespace {

KvPolicy Policy(KvMethod method, int64_t budget, double ratio = 0.0, int32_t window = 8) {
  KvPolicy p;
  p.method = method;
  p.budget = budget;
  p.ratio = ratio;
  p.window = window;
  return p;
}

constexpr KvMethod kCompressing[] = {KvMethod::kPyramidKv, KvMethod::kSnapKv,
                                     KvMethod::kStreamingLlm, KvMethod::kH2o};

TEST(KvPolicyTest, DefaultsMatchThePapersLongBenchSettings) {
  KvPolicy p;
  EXPECT_EQ(p.method, KvMethod::kFull);
  EXPECT_EQ(p.budget, 0);
  EXPECT_EQ(p.ratio, 0.0);
  EXPECT_EQ(p.window, 8);
  EXPECT_EQ(p.pooling, KvPooling::kMax);
  EXPECT_EQ(p.kernel, 7);
  EXPECT_EQ(p.beta, 20.0);
  EXPECT_EQ(p.rounding, BudgetRounding::kExact);
  EXPECT_TRUE(p.Validate().ok());
  EXPECT_FALSE(p.compresses());
}

TEST(KvPolicyTest, FullTakesNoBudgetOrRatio) {
  EXPECT_TRUE(Policy(KvMethod::kFull, 0).Validate().ok());
  EXPECT_EQ(Policy(KvMethod::kFull, 128).Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Policy(KvMethod::kFull, 0, 0.5).Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Policy(KvMethod::kFull, 128, 0.5).Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvPolicyTest, CompressingMethodsNeedExactlyOneOfBudgetAndRatio) {
  for (KvMethod m : kCompressing) {
    SCOPED_TRACE(KvMethodName(m));
    EXPECT_TRUE(Policy(m, 128).Validate().ok());
    EXPECT_TRUE(Policy(m, 0, 0.25).Validate().ok());
    EXPECT_TRUE(Policy(m, 0, 1.0).Validate().ok());
    EXPECT_EQ(Policy(m, 0).Validate().code(), absl::StatusCode::kInvalidArgument);          // neither
    EXPECT_EQ(Policy(m, 128, 0.5).Validate().code(), absl::StatusCode::kInvalidArgument);   // both
    EXPECT_FALSE(Policy(m, -5).Validate().ok());
    EXPECT_FALSE(Policy(m, -5, 0.5).Validate().ok());
    EXPECT_FALSE(Policy(m, 0, 1.5).Validate().ok());
    EXPECT_FALSE(Policy(m, 0, -0.5).Validate().ok());
    EXPECT_FALSE(Policy(m, 128, -0.5).Validate().ok());
    EXPECT_FALSE(Policy(m, 0, std::nan("")).Validate().ok());
    EXPECT_FALSE(Policy(m, 0, std::numeric_limits<double>::infinity()).Validate().ok());
    EXPECT_TRUE(Policy(m, 128).compresses());
  }
}

TEST(KvPolicyTest, BudgetMustExceedTheWindow) {
  for (KvMethod m : {KvMethod::kPyramidKv, KvMethod::kSnapKv, KvMethod::kH2o}) {
    SCOPED_TRACE(KvMethodName(m));
    EXPECT_EQ(Policy(m, 8, 0.0, 8).Validate().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Policy(m, 4, 0.0, 8).Validate().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Policy(m, 32, 0.0, 32).Validate().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Policy(m, 9, 0.0, 8).Validate().ok());
    EXPECT_TRUE(Policy(m, 2, 0.0, 1).Validate().ok());
  }
}

TEST(KvPolicyTest, StreamingLlmIgnoresTheWindowButNeedsMoreThanItsSinks) {
  // Its window is B - 4, so a budget below the configured window is fine.
  EXPECT_TRUE(Policy(KvMethod::kStreamingLlm, 5, 0.0, 8).Validate().ok());
  EXPECT_TRUE(Policy(KvMethod::kStreamingLlm, 8, 0.0, 8).Validate().ok());
  EXPECT_FALSE(Policy(KvMethod::kStreamingLlm, 4, 0.0, 8).Validate().ok());
  EXPECT_FALSE(Policy(KvMethod::kStreamingLlm, 1, 0.0, 8).Validate().ok());
}

TEST(KvPolicyTest, WindowKernelAndBeta) {
  for (KvMethod m : kCompressing) {
    SCOPED_TRACE(KvMethodName(m));
    KvPolicy p = Policy(m, 128);
    p.window = 0;
    EXPECT_FALSE(p.Validate().ok());
    p.window = -3;
    EXPECT_FALSE(p.Validate().ok());
    p.window = 1;
    EXPECT_TRUE(p.Validate().ok());

    p = Policy(m, 128);
    for (int32_t k : {1, 3, 5, 7, 9, 31}) {
      p.kernel = k;
      EXPECT_TRUE(p.Validate().ok()) << k;
    }
    for (int32_t k : {0, 2, 4, 6, 8, -1, -7}) {
      p.kernel = k;
      EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument) << k;
    }

    p = Policy(m, 128);
    p.beta = 1.0;
    EXPECT_TRUE(p.Validate().ok());
    p.beta = 1000.0;
    EXPECT_TRUE(p.Validate().ok());
    for (double b : {0.999, 0.0, -20.0, std::nan("")}) {
      p.beta = b;
      EXPECT_FALSE(p.Validate().ok()) << b;
    }

    p = Policy(m, 128);
    p.pooling = KvPooling::kAvg;
    p.rounding = BudgetRounding::kOfficial;
    EXPECT_TRUE(p.Validate().ok());
  }
}

TEST(KvPolicyTest, EffectiveBudgetResolvesARatio) {
  EXPECT_EQ(Policy(KvMethod::kSnapKv, 128).EffectiveBudget(10), 128);
  EXPECT_EQ(Policy(KvMethod::kSnapKv, 128).EffectiveBudget(100000), 128);
  EXPECT_EQ(Policy(KvMethod::kSnapKv, 0, 0.25).EffectiveBudget(1000), 250);
  EXPECT_EQ(Policy(KvMethod::kSnapKv, 0, 0.1).EffectiveBudget(333), 33);    // 33.3
  EXPECT_EQ(Policy(KvMethod::kSnapKv, 0, 0.1).EffectiveBudget(337), 34);    // 33.7
  EXPECT_EQ(Policy(KvMethod::kSnapKv, 0, 0.3).EffectiveBudget(8000), 2400);
  EXPECT_EQ(Policy(KvMethod::kSnapKv, 0, 1.0).EffectiveBudget(4321), 4321);
  EXPECT_EQ(Policy(KvMethod::kPyramidKv, 0, 0.5).EffectiveBudget(7), 4);   // 3.5 rounds up
  for (int64_t n = 1; n < 2000; n += 37) {
    for (double r : {0.05, 0.125, 0.3, 0.77, 1.0}) {
      EXPECT_EQ(Policy(KvMethod::kH2o, 0, r).EffectiveBudget(n),
                static_cast<int64_t>(std::llround(r * static_cast<double>(n))))
          << r << " " << n;
    }
  }
}

TEST(KvPolicyTest, NamesRoundTrip) {
  for (KvMethod m : {KvMethod::kFull, KvMethod::kPyramidKv, KvMethod::kSnapKv,
                     KvMethod::kStreamingLlm, KvMethod::kH2o}) {
    absl::StatusOr<KvMethod> back = ParseKvMethod(KvMethodName(m));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, m);
  }
  EXPECT_STREQ(KvMethodName(KvMethod::kFull), "full");
  EXPECT_STREQ(KvMethodName(KvMethod::kPyramidKv), "pyramidkv");
  EXPECT_STREQ(KvMethodName(KvMethod::kSnapKv), "snapkv");
  EXPECT_STREQ(KvMethodName(KvMethod::kStreamingLlm), "streamingllm");
  EXPECT_STREQ(KvMethodName(KvMethod::kH2o), "h2o");
  for (const char* bad : {"", "pyramid", "snap", "fullkv", "h2o ", "streaming"}) {
    EXPECT_EQ(ParseKvMethod(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }

  for (KvPooling p : {KvPooling::kMax, KvPooling::kAvg}) {
    absl::StatusOr<KvPooling> back = ParseKvPooling(KvPoolingName(p));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, p);
  }
  EXPECT_EQ(*ParseKvPooling("maxpool"), KvPooling::kMax);
  EXPECT_EQ(*ParseKvPooling("avgpool"), KvPooling::kAvg);
  EXPECT_FALSE(ParseKvPooling("mean").ok());
  EXPECT_FALSE(ParseKvPooling("").ok());

  for (BudgetRounding r : {BudgetRounding::kExact, BudgetRounding::kOfficial}) {
    absl::StatusOr<BudgetRounding> back = ParseBudgetRounding(BudgetRoundingName(r));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, r);
  }
  EXPECT_STREQ(BudgetRoundingName(BudgetRounding::kExact), "exact");
  EXPECT_STREQ(BudgetRoundingName(BudgetRounding::kOfficial), "official");
  EXPECT_FALSE(ParseBudgetRounding("paper").ok());
}

}  // namespace
}  // namespace funnel
