// FillUniform: deterministic per (seed, index), inside [-bound, bound), and uniform enough for
// random weights (moments and a 16-bin histogram against a brute-force expectation).
#include "kernels/cpu/random_fill.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace funnel {
namespace {

TEST(RandomFill, DeterministicPerSeedAndIndex) {
  std::vector<float> a(1000), b(1000), c(1000);
  FillUniform(a.data(), 1000, 7, 0.5f);
  FillUniform(b.data(), 1000, 7, 0.5f);
  FillUniform(c.data(), 1000, 8, 0.5f);
  EXPECT_EQ(a, b);
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == c[i];
  EXPECT_LT(same, 5);  // another seed is another stream
  // Value i does not depend on n: a prefix fill equals the prefix of a longer fill.
  std::vector<float> prefix(10);
  FillUniform(prefix.data(), 10, 7, 0.5f);
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), a.begin()));
  EXPECT_EQ(UniformAt(7, 999, 0.5f), a[999]);
}

TEST(RandomFill, UniformInRange) {
  const int64_t n = 1 << 20;
  const float bound = 0.25f;
  std::vector<float> v(static_cast<size_t>(n));
  FillUniform(v.data(), n, 3, bound);
  double sum = 0.0, sq = 0.0;
  std::vector<int64_t> bins(16, 0);
  for (float x : v) {
    ASSERT_GE(x, -bound);
    ASSERT_LT(x, bound);
    sum += x;
    sq += double{x} * x;
    ++bins[static_cast<size_t>((x + bound) / (2 * bound) * 16)];
  }
  EXPECT_NEAR(sum / n, 0.0, 1e-3);                 // sd of the mean ~ 1.4e-4
  EXPECT_NEAR(sq / n, bound * bound / 3.0, 2e-4);  // 0.0208
  for (int64_t count : bins) EXPECT_NEAR(count, n / 16.0, 5.0 * std::sqrt(n / 16.0));
}

}  // namespace
}  // namespace funnel
