// CUDA argmax and top-k/top-p/temperature sampling vs their CPU twins (kernels/cpu/sampling.h),
// plus CPU-side checks of the twin's contract (these run without a GPU).
#include "kernels/cuda/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/sampling.h"
#include "tests/testing/gpu_test.h"

namespace funnel {
namespace {

using testing::DeviceVector;

// A draw within this relative distance of a boundary may flip between CPU and GPU (expf differs
// by a few ulp); such rows are not compared.
constexpr double kMinMargin = 1e-5;

// Rows of `vocab` logits: smooth, coarsely quantized (many ties), or with -inf entries.
std::vector<float> MakeLogits(int32_t rows, int32_t vocab, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(rows) * vocab);
  for (int32_t r = 0; r < rows; ++r) {
    for (int32_t i = 0; i < vocab; ++i) {
      float& x = logits[static_cast<size_t>(r) * vocab + i];
      x = n(rng);
      if (r % 3 == 1) x = std::round(x);  // ties, also at the k-th rank
      if (r % 3 == 2 && i % 5 == 0) x = -INFINITY;
    }
  }
  return logits;
}

TEST(SamplingReference, ArgmaxTakesTheLowestIdOfTheMaximum) {
  EXPECT_EQ(ArgmaxReference(std::vector<float>{1, 3, 2, 3}), 1);
  EXPECT_EQ(ArgmaxReference(std::vector<float>{-INFINITY, -INFINITY}), 0);
  EXPECT_EQ(ArgmaxReference(std::vector<float>{-1, -INFINITY, 5}), 2);
}

TEST(SamplingReference, FollowsTheContract) {
  const std::vector<float> logits = {0.0f, std::log(3.0f), -INFINITY, std::log(3.0f), 0.0f};
  // Greedy and top-k 1 pick the argmax.
  EXPECT_EQ(SampleRowReference(logits, 0.0f, 5, 1.0f, 0.9f).token, 1);
  EXPECT_EQ(SampleRowReference(logits, 1.0f, 1, 1.0f, 0.9f).token, 1);
  // Rank order 1, 3, 0, 4, 2 with weights 1, 1, 1/3, 1/3, 0 (total 8/3).
  EXPECT_EQ(SampleRowReference(logits, 1.0f, 5, 1.0f, 0.0f).token, 1);
  EXPECT_EQ(SampleRowReference(logits, 1.0f, 5, 1.0f, 0.4f).token, 3);   // 1.07 in [1, 2)
  EXPECT_EQ(SampleRowReference(logits, 1.0f, 5, 1.0f, 0.8f).token, 0);   // 2.13 in [2, 2.33)
  EXPECT_EQ(SampleRowReference(logits, 1.0f, 5, 1.0f, 0.95f).token, 4);  // 2.53 in [2.33, 2.67)
  // Top-k 2 keeps ids 1 and 3; top-p 0.5 keeps the rank prefix reaching 4/3: ids 1 and 3.
  EXPECT_EQ(SampleRowReference(logits, 1.0f, 2, 1.0f, 0.99f).token, 3);
  EXPECT_EQ(SampleRowReference(logits, 1.0f, 5, 0.5f, 0.99f).token, 3);
  EXPECT_EQ(SampleRowReference(logits, 1.0f, 5, 0.0f, 0.99f).token, 1);
  // A high temperature flattens: weights 1, 1, 3^-0.1... the last rank with weight > 0 wins.
  EXPECT_EQ(SampleRowReference(logits, 10.0f, 5, 1.0f, 0.999f).token, 4);
}

TEST(CudaSampling, ArgmaxMatchesCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  for (int32_t vocab : {1, 7, 257, 32003}) {
    const int32_t rows = 9;
    std::vector<float> logits = MakeLogits(rows, vocab, rng);
    if (vocab > 100) {
      logits[17] = logits[vocab - 1] = 100.0f;  // row 0: tie between 17 and the last id
      for (int32_t i = 0; i < vocab; ++i) logits[static_cast<size_t>(vocab) * 3 + i] = -INFINITY;
    }
    DeviceVector<float> dlogits(logits);
    DeviceVector<int32_t> dtokens(static_cast<size_t>(rows));
    ASSERT_EQ(cuda::LaunchArgmax(dlogits.get(), rows, vocab, dtokens.get(), nullptr), 0);
    const std::vector<int32_t> got = dtokens.ToHost();
    for (int32_t r = 0; r < rows; ++r) {
      const std::span<const float> row(logits.data() + static_cast<size_t>(r) * vocab,
                                       static_cast<size_t>(vocab));
      EXPECT_EQ(got[static_cast<size_t>(r)], ArgmaxReference(row))
          << "vocab " << vocab << " row " << r;
    }
    if (vocab > 100) {
      EXPECT_EQ(got[0], 17);
      EXPECT_EQ(got[3], 0);
    }
  }
}

TEST(CudaSampling, SampleMatchesCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  const std::vector<float> temperatures = {0.0f, 0.3f, 1.0f, 2.5f};
  const std::vector<int32_t> top_ks = {1, 2, 5, 40, 1000, 1024, 5000};
  const std::vector<float> top_ps = {1.0f, 0.9f, 0.5f, 0.01f};
  int64_t compared = 0, skipped = 0;
  for (int32_t vocab : {1, 7, 1000, 32003}) {
    const int32_t rows = 96;
    const std::vector<float> logits = MakeLogits(rows, vocab, rng);
    std::vector<float> temperature(rows), top_p(rows), uniform(rows);
    std::vector<int32_t> top_k(rows);
    for (int32_t r = 0; r < rows; ++r) {
      temperature[r] = temperatures[static_cast<size_t>(r) % temperatures.size()];
      top_k[r] = top_ks[static_cast<size_t>(r / 4) % top_ks.size()];
      top_p[r] = top_ps[static_cast<size_t>(r / 3) % top_ps.size()];
      uniform[r] = u(rng);
    }
    DeviceVector<float> dlogits(logits), dt(temperature), dp(top_p), du(uniform);
    DeviceVector<int32_t> dk(top_k), dtokens(static_cast<size_t>(rows));
    cuda::SampleParams p;
    p.logits = dlogits.get();
    p.rows = rows;
    p.vocab = vocab;
    p.temperature = dt.get();
    p.top_k = dk.get();
    p.top_p = dp.get();
    p.uniform = du.get();
    p.tokens = dtokens.get();
    ASSERT_EQ(cuda::LaunchSample(p, nullptr), 0);
    const std::vector<int32_t> got = dtokens.ToHost();
    for (int32_t r = 0; r < rows; ++r) {
      const std::span<const float> row(logits.data() + static_cast<size_t>(r) * vocab,
                                       static_cast<size_t>(vocab));
      const SampleChoice want =
          SampleRowReference(row, temperature[r], top_k[r], top_p[r], uniform[r]);
      if (want.margin < kMinMargin) {
        ++skipped;
        continue;
      }
      ++compared;
      EXPECT_EQ(got[static_cast<size_t>(r)], want.token)
          << "vocab " << vocab << " row " << r << ": t " << temperature[r] << ", top-k " << top_k[r]
          << ", top-p " << top_p[r] << ", u " << uniform[r];
    }
  }
  EXPECT_LE(skipped, compared / 20) << "too many draws near a boundary to be a real comparison";
}

TEST(CudaSampling, RejectsBadArguments) {
  FUNNEL_SKIP_WITHOUT_GPU();
  DeviceVector<float> f(4);
  DeviceVector<int32_t> i(4);
  EXPECT_NE(cuda::LaunchArgmax(f.get(), 1, 0, i.get(), nullptr), 0);
  EXPECT_NE(cuda::LaunchArgmax(nullptr, 1, 4, i.get(), nullptr), 0);
  EXPECT_EQ(cuda::LaunchArgmax(f.get(), 0, 4, i.get(), nullptr), 0);
  cuda::SampleParams p;
  p.logits = f.get();
  p.rows = 1;
  p.vocab = 4;
  p.temperature = f.get();
  p.top_k = i.get();
  p.top_p = f.get();
  p.uniform = nullptr;
  p.tokens = i.get();
  EXPECT_NE(cuda::LaunchSample(p, nullptr), 0);
}

}  // namespace
}  // namespace funnel
