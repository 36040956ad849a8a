#include "runtime/sample/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/sample/sampling_params.h"

namespace funnel {
namespace {

using ::testing::HasSubstr;

constexpr int kDraws = 200000;

// ---------------------------------------------------------------------------------------------
// Validate

void ExpectInvalid(const SamplingParams& params, const std::string& field) {
  const absl::Status status = params.Validate();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_THAT(std::string(status.message()), HasSubstr(field));
}

TEST(SamplingParamsTest, DefaultsAndEdgesAreValid) {
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_k = -1;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.repetition_penalty = 0.5f;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  p.max_tokens = 0;
  p.stop = std::vector<std::string>(kMaxStopStrings, std::string(kMaxStopStringBytes, 'x'));
  EXPECT_TRUE(p.Validate().ok()) << p.Validate();
}

TEST(SamplingParamsTest, RejectsEachBadField) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto with = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    return p;
  };
  ExpectInvalid(with([](SamplingParams& p) { p.temperature = -0.1f; }), "temperature");
  ExpectInvalid(with([&](SamplingParams& p) { p.temperature = nan; }), "temperature");
  ExpectInvalid(with([&](SamplingParams& p) { p.temperature = inf; }), "temperature");
  ExpectInvalid(with([](SamplingParams& p) { p.top_k = -2; }), "top_k");
  ExpectInvalid(with([](SamplingParams& p) { p.top_p = 0.0f; }), "top_p");
  ExpectInvalid(with([](SamplingParams& p) { p.top_p = 1.01f; }), "top_p");
  ExpectInvalid(with([&](SamplingParams& p) { p.top_p = nan; }), "top_p");
  ExpectInvalid(with([](SamplingParams& p) { p.min_p = 1.5f; }), "min_p");
  ExpectInvalid(with([](SamplingParams& p) { p.min_p = -0.1f; }), "min_p");
  ExpectInvalid(with([&](SamplingParams& p) { p.min_p = nan; }), "min_p");
  ExpectInvalid(with([](SamplingParams& p) { p.repetition_penalty = 0.0f; }), "repetition_penalty");
  ExpectInvalid(with([](SamplingParams& p) { p.repetition_penalty = -1.0f; }),
                "repetition_penalty");
  ExpectInvalid(with([&](SamplingParams& p) { p.repetition_penalty = nan; }), "repetition_penalty");
  ExpectInvalid(with([](SamplingParams& p) { p.presence_penalty = 2.5f; }), "presence_penalty");
  ExpectInvalid(with([&](SamplingParams& p) { p.presence_penalty = nan; }), "presence_penalty");
  ExpectInvalid(with([](SamplingParams& p) { p.frequency_penalty = -2.5f; }), "frequency_penalty");
  ExpectInvalid(with([&](SamplingParams& p) { p.frequency_penalty = nan; }), "frequency_penalty");
  ExpectInvalid(with([](SamplingParams& p) { p.max_tokens = -1; }), "max_tokens");
  ExpectInvalid(with([](SamplingParams& p) { p.stop.assign(kMaxStopStrings + 1, "x"); }), "stop");
  ExpectInvalid(with([](SamplingParams& p) { p.stop = {"ok", ""}; }), "stop[1]");
  ExpectInvalid(
      with([](SamplingParams& p) { p.stop = {std::string(kMaxStopStringBytes + 1, 'x')}; }),
      "stop[0]");
}

// ---------------------------------------------------------------------------------------------
// Brute-force references, written independently of the sampler.

std::vector<float> RandomLogits(int n, uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::vector<float> logits(n);
  for (float& l : logits) {
    l = static_cast<float>(lo +
                           (hi - lo) * (static_cast<double>(rng() >> 11) / 9007199254740992.0));
  }
  return logits;
}

// Expected probability of drawing each token, with penalties off.
std::vector<double> ExpectedDistribution(const std::vector<float>& logits,
                                         const SamplingParams& p) {
  const int n = static_cast<int>(logits.size());
  std::vector<double> scaled(n);
  for (int i = 0; i < n; ++i) scaled[i] = static_cast<double>(logits[i] / p.temperature);
  // Rank: descending logit, ties to the lower id.
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return scaled[a] > scaled[b]; });
  std::vector<double> w(n, 0.0);
  const int k = (p.top_k > 0 && p.top_k < n) ? p.top_k : n;
  for (int r = 0; r < k; ++r) w[order[r]] = std::exp(scaled[order[r]] - scaled[order[0]]);
  if (p.top_p < 1.0f) {
    double total = 0.0;
    for (int i = 0; i < n; ++i) total += w[i];
    double cumulative = 0.0;
    bool reached = false;
    for (int r = 0; r < n; ++r) {
      if (reached) {
        w[order[r]] = 0.0;
        continue;
      }
      cumulative += w[order[r]] / total;
      if (cumulative >= p.top_p) reached = true;
    }
  }
  double max_w = 0.0;
  for (int i = 0; i < n; ++i) max_w = std::max(max_w, w[i]);
  for (int i = 0; i < n; ++i) {
    if (w[i] < p.min_p * max_w) w[i] = 0.0;
  }
  double total = 0.0;
  for (int i = 0; i < n; ++i) total += w[i];
  for (int i = 0; i < n; ++i) w[i] /= total;
  return w;
}

std::vector<double> LogSoftmax(const std::vector<double>& logits) {
  double max = logits[0];
  for (double l : logits) max = std::max(max, l);
  double sum = 0.0;
  for (double l : logits) sum += std::exp(l - max);
  std::vector<double> out;
  for (double l : logits) out.push_back(l - max - std::log(sum));
  return out;
}

std::vector<int> DrawCounts(const SamplingParams& params, const std::vector<float>& logits,
                            int draws, uint64_t seed) {
  Sampler sampler(params, seed);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) {
    const int32_t id = sampler.Sample(logits, {}, {});
    EXPECT_GE(id, 0);
    EXPECT_LT(id, static_cast<int32_t>(logits.size()));
    if (id >= 0 && id < static_cast<int32_t>(logits.size())) ++counts[id];
  }
  return counts;
}

// Empirical frequencies match `expected` within 0.01; tokens with probability 0 are never drawn.
void ExpectMatchesDistribution(const SamplingParams& params, const std::vector<float>& logits,
                               uint64_t seed) {
  const std::vector<double> expected = ExpectedDistribution(logits, params);
  const std::vector<int> counts = DrawCounts(params, logits, kDraws, seed);
  double max_diff = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (expected[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " outside the set";
    }
    max_diff = std::max(max_diff, std::abs(expected[i] - static_cast<double>(counts[i]) / kDraws));
  }
  EXPECT_LT(max_diff, 0.01);
}

// ---------------------------------------------------------------------------------------------
// Greedy

TEST(SamplerTest, GreedyIsArgmaxWithTiesToLowestId) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler sampler(p, 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f}, {}, {}), 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{5.0f, 5.0f}, {}, {}), 0);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-1.0f, -2.0f, -0.5f}, {}, {}), 2);
  const float ninf = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(sampler.Sample(std::vector<float>{ninf, -3.0f, ninf}, {}, {}), 1);
  // Every vocab position, with random logits.
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const std::vector<float> logits = RandomLogits(1000, seed, -5, 5);
    int best = 0;
    for (int i = 1; i < 1000; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    EXPECT_EQ(sampler.Sample(logits, {}, {}), best);
  }
}

TEST(SamplerTest, GreedyLogprobIsLogSoftmaxAtArgmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler sampler(p, 1);
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.0f};
  EXPECT_EQ(sampler.Sample(logits, {}, {}), 1);
  const std::vector<double> lp = LogSoftmax({0.5, 2.0, -1.0, 1.0});
  EXPECT_NEAR(sampler.last_logprob(), lp[1], 1e-5);
}

TEST(SamplerTest, DoesNotModifyLogits) {
  SamplingParams p;
  p.temperature = 0.5f;
  p.top_k = 3;
  p.top_p = 0.7f;
  p.repetition_penalty = 1.5f;
  p.presence_penalty = 1.0f;
  const std::vector<float> logits = RandomLogits(64, 3, -3, 3);
  const std::vector<float> copy = logits;
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> generated = {4, 4};
  Sampler sampler(p, 9);
  for (int i = 0; i < 10; ++i) sampler.Sample(logits, prompt, generated);
  EXPECT_EQ(logits, copy);
}

// ---------------------------------------------------------------------------------------------
// Distributions

TEST(SamplerTest, TemperatureOneMatchesSoftmax) {
  SamplingParams p;
  ExpectMatchesDistribution(p, RandomLogits(32, 11, -2, 2), 100);
}

TEST(SamplerTest, LowAndHighTemperatureMatchScaledSoftmax) {
  SamplingParams p;
  p.temperature = 0.6f;
  ExpectMatchesDistribution(p, RandomLogits(32, 12, -2, 2), 101);
  p.temperature = 1.7f;
  ExpectMatchesDistribution(p, RandomLogits(32, 13, -2, 2), 102);
}

TEST(SamplerTest, TopKMatchesTruncatedSoftmax) {
  SamplingParams p;
  p.top_k = 5;
  ExpectMatchesDistribution(p, RandomLogits(40, 14, -2, 2), 103);
  p.top_k = 1;
  ExpectMatchesDistribution(p, RandomLogits(40, 15, -2, 2), 104);
  p.top_k = 40;  // == vocab: no truncation.
  ExpectMatchesDistribution(p, RandomLogits(40, 16, -2, 2), 105);
  p.top_k = 1000;  // > vocab.
  ExpectMatchesDistribution(p, RandomLogits(40, 16, -2, 2), 106);
}

TEST(SamplerTest, TopKTiesGoToLowerIds) {
  SamplingParams p;
  p.top_k = 3;
  const std::vector<float> logits = {0.0f, 1.0f, 1.0f, 0.5f, 1.0f, 1.0f, 1.0f};
  const std::vector<int> counts = DrawCounts(p, logits, 30000, 7);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
  EXPECT_GT(counts[4], 0);
  EXPECT_EQ(counts[0] + counts[3] + counts[5] + counts[6], 0);
}

TEST(SamplerTest, TopPMatchesNucleus) {
  SamplingParams p;
  p.top_p = 0.8f;
  ExpectMatchesDistribution(p, RandomLogits(40, 17, -3, 3), 107);
  p.top_p = 0.3f;
  p.temperature = 0.8f;
  ExpectMatchesDistribution(p, RandomLogits(40, 18, -3, 3), 108);
  p.top_p = 1e-6f;  // Only the top token.
  ExpectMatchesDistribution(p, RandomLogits(40, 19, -3, 3), 109);
}

TEST(SamplerTest, MinPMatchesThreshold) {
  SamplingParams p;
  p.min_p = 0.2f;
  ExpectMatchesDistribution(p, RandomLogits(40, 20, -3, 3), 110);
  p.min_p = 1.0f;  // Only the top token.
  ExpectMatchesDistribution(p, RandomLogits(40, 21, -3, 3), 111);
}

TEST(SamplerTest, CombinedTruncationMatchesReference) {
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_k = 20;
  p.top_p = 0.9f;
  p.min_p = 0.05f;
  ExpectMatchesDistribution(p, RandomLogits(64, 22, -3, 3), 112);
  p.temperature = 1.3f;
  p.top_k = 12;
  p.top_p = 0.6f;
  p.min_p = 0.3f;
  ExpectMatchesDistribution(p, RandomLogits(64, 23, -3, 3), 113);
}

// Large vocab: top-p spreads over many buckets. Checks that nothing outside the reference set is
// drawn and the mass by rank decile.
void ExpectLargeVocabMatches(const SamplingParams& p, const std::vector<float>& logits) {
  constexpr int kLargeDraws = 40000;
  const std::vector<double> expected = ExpectedDistribution(logits, p);
  const std::vector<int> counts = DrawCounts(p, logits, kLargeDraws, 5);
  std::vector<int> kept;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (expected[i] > 0.0) {
      kept.push_back(static_cast<int>(i));
    } else {
      EXPECT_EQ(counts[i], 0) << "token " << i << " outside the set";
    }
  }
  std::sort(kept.begin(), kept.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  const size_t buckets = 10;
  for (size_t b = 0; b < buckets; ++b) {
    double want = 0.0;
    double got = 0.0;
    for (size_t r = b * kept.size() / buckets; r < (b + 1) * kept.size() / buckets; ++r) {
      want += expected[kept[r]];
      got += static_cast<double>(counts[kept[r]]) / kLargeDraws;
    }
    EXPECT_NEAR(got, want, 0.01) << "bucket " << b;
  }
}

TEST(SamplerTest, LargeVocabTopP) {
  SamplingParams p;
  p.top_p = 0.9f;
  const std::vector<float> logits = RandomLogits(2048, 24, -1, 1);
  ExpectLargeVocabMatches(p, logits);
  p.top_k = 1500;
  p.top_p = 0.75f;
  p.temperature = 0.7f;
  ExpectLargeVocabMatches(p, logits);
  // Peaked: the cut falls among the first few hundred ranks.
  p = SamplingParams{};
  p.top_p = 0.5f;
  ExpectLargeVocabMatches(p, RandomLogits(2048, 26, -8, 8));
}

TEST(SamplerTest, LargeVocabTopPCutInsideTiesKeepsLowerIds) {
  // 500 tokens at logit 1 hold 500e / (500e + 1548) = 0.467 of the mass; top_p 0.5 then takes
  // the ~95 lowest ids among the tokens at logit 0.
  std::vector<float> logits(2048, 0.0f);
  std::mt19937_64 rng(27);
  for (int placed = 0; placed < 500;) {
    float& logit = logits[rng() % logits.size()];
    if (logit == 0.0f) {
      logit = 1.0f;
      ++placed;
    }
  }
  SamplingParams p;
  p.top_p = 0.5f;
  ExpectLargeVocabMatches(p, logits);
}

TEST(SamplerTest, LogprobIsBeforeTruncation) {
  SamplingParams p;
  p.temperature = 0.5f;
  p.top_k = 2;
  const std::vector<float> logits = {1.0f, 0.2f, 0.8f, -0.4f};
  const std::vector<double> lp = LogSoftmax({2.0, 0.4, 1.6, -0.8});
  Sampler sampler(p, 3);
  for (int i = 0; i < 100; ++i) {
    const int32_t id = sampler.Sample(logits, {}, {});
    ASSERT_TRUE(id == 0 || id == 2);
    EXPECT_NEAR(sampler.last_logprob(), lp[id], 1e-5);
  }
}

// ---------------------------------------------------------------------------------------------
// Seeds

std::vector<int32_t> Sequence(const SamplingParams& p, uint64_t default_seed) {
  const std::vector<float> logits = RandomLogits(100, 25, -1, 1);
  Sampler sampler(p, default_seed);
  std::vector<int32_t> out;
  for (int i = 0; i < 500; ++i) out.push_back(sampler.Sample(logits, {}, {}));
  return out;
}

TEST(SamplerTest, SameSeedSameSequenceDifferentSeedsDiffer) {
  SamplingParams p;
  p.top_p = 0.95f;
  EXPECT_EQ(Sequence(p, 1), Sequence(p, 1));
  EXPECT_NE(Sequence(p, 1), Sequence(p, 2));
  p.seed = 42;  // Overrides the default seed.
  EXPECT_EQ(Sequence(p, 1), Sequence(p, 2));
  SamplingParams q = p;
  q.seed = 43;
  EXPECT_NE(Sequence(p, 1), Sequence(q, 1));
}

// ---------------------------------------------------------------------------------------------
// Penalties

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 1.3f;
  Sampler sampler(p, 1);
  // Token 0 (2.0 -> 1.538) falls below token 2 (1.6, unpenalized).
  const std::vector<float> logits = {2.0f, -1.0f, 1.6f};
  EXPECT_EQ(sampler.Sample(logits, std::vector<int32_t>{0}, {}), 2);
  EXPECT_NEAR(sampler.last_logprob(), LogSoftmax({2.0 / 1.3, -1.0, 1.6})[2], 1e-5);
  // Penalized in generated too; applied once even when repeated in prompt and generated.
  EXPECT_EQ(sampler.Sample(logits, std::vector<int32_t>{0, 1, 0}, std::vector<int32_t>{1, 0}), 2);
  EXPECT_NEAR(sampler.last_logprob(), LogSoftmax({2.0 / 1.3, -1.0 * 1.3, 1.6})[2], 1e-5);
  // Penalty below 1 boosts.
  p.repetition_penalty = 0.5f;
  Sampler boost(p, 1);
  EXPECT_EQ(boost.Sample(std::vector<float>{1.0f, 1.5f}, {}, std::vector<int32_t>{0}), 0);
  EXPECT_NEAR(boost.last_logprob(), LogSoftmax({2.0, 1.5})[0], 1e-5);
}

TEST(SamplerTest, PresenceAndFrequencyCountGeneratedOnly) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sampler sampler(p, 1);
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f};
  // Token 0 generated 3 times: 3 - 0.5 - 0.75 = 1.75; token 1 once: 2 - 0.5 - 0.25 = 1.25;
  // token 2 only in the prompt: unchanged.
  const std::vector<int32_t> prompt = {2, 2, 2};
  const std::vector<int32_t> generated = {0, 1, 0, 0};
  EXPECT_EQ(sampler.Sample(logits, prompt, generated), 0);
  EXPECT_NEAR(sampler.last_logprob(), LogSoftmax({1.75, 1.25, 1.0})[0], 1e-5);
  // Negative penalties boost.
  p.presence_penalty = -1.0f;
  p.frequency_penalty = -0.6f;
  Sampler boost(p, 1);
  EXPECT_EQ(boost.Sample(logits, {}, std::vector<int32_t>{2, 2}), 2);  // 1 + 1.2 + 1 = 3.2
  EXPECT_NEAR(boost.last_logprob(), LogSoftmax({3.0, 2.0, 3.2})[2], 1e-5);
}

TEST(SamplerTest, AllPenaltiesTogetherMatchHandComputedDistribution) {
  SamplingParams p;
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 1.0f, 0.0f};
  const std::vector<int32_t> prompt = {0, 1, -7, 99};  // Out-of-range ids are ignored.
  const std::vector<int32_t> generated = {1, 3, 3};
  // Repetition on {0, 1, 3}; then presence/frequency on {1: 1, 3: 2}.
  const std::vector<double> expected_logits = {
      2.0 / 1.3, -1.0 * 1.3 - 0.5 - 0.25, 0.5, 1.0 / 1.3 - 0.5 - 0.5, 0.0,
  };
  const std::vector<double> lp = LogSoftmax(expected_logits);
  Sampler sampler(p, 77);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < kDraws; ++i) {
    const int32_t id = sampler.Sample(logits, prompt, generated);
    ASSERT_GE(id, 0);
    ASSERT_LT(id, 5);
    ++counts[id];
    if (i < 1000) {
      EXPECT_NEAR(sampler.last_logprob(), lp[id], 1e-5) << id;
    }
  }
  for (size_t i = 0; i < logits.size(); ++i) {
    EXPECT_NEAR(static_cast<double>(counts[i]) / kDraws, std::exp(lp[i]), 0.01) << i;
  }
}

TEST(SamplerTest, VocabSizeMayChangeBetweenCalls) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 2.0f;
  Sampler sampler(p, 1);
  const std::vector<int32_t> generated = {1, 1, 5};
  EXPECT_EQ(sampler.Sample(std::vector<float>{0.0f, 1.0f, 0.5f}, {}, generated), 2);
  EXPECT_EQ(sampler.Sample(std::vector<float>{0.0f, 1.0f, 0.5f, 0.0f, 0.0f, 9.0f}, {}, generated),
            5);  // 9 - 2 = 7.
  EXPECT_EQ(sampler.Sample(std::vector<float>{0.0f, 1.0f}, {}, generated), 0);
}

TEST(SamplerTest, EmptyLogitsReturnMinusOne) {
  Sampler sampler(SamplingParams{}, 1);
  EXPECT_EQ(sampler.Sample({}, {}, {}), -1);
}

}  // namespace
}  // namespace funnel
