// Generate(): the golden greedy run end to end, sampling determinism, stops.
#include "runtime/exec/generate.h"

#include <gtest/gtest.h>

#include "tests/testing/golden.h"

namespace funnel {
namespace {

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = ModelWeights::Open(::funnel::testing::Stories260KPath());
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = std::move(*w);
    auto t = Tokenizer::FromGguf(weights_->gguf());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
    RunnerOptions o;
    o.kv_cache_bytes = 16 << 20;
    auto r = CpuModelRunner::Create(*weights_, o);
    ASSERT_TRUE(r.ok());
    runner_ = std::move(*r);
  }

  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<CpuModelRunner> runner_;
};

TEST_F(GenerateTest, GreedyMatchesGoldenSequence) {
  auto golden = ::funnel::testing::LoadStories260KGolden();
  std::vector<int32_t> prompt = tokenizer_->Encode("Once upon a time");
  ASSERT_EQ(prompt, golden.prompt_ids);
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = 44;
  int64_t observed = 0;
  auto r = Generate(*runner_, *tokenizer_, prompt, p, 0, KvPolicy{},
                    [&](int64_t pos, std::span<const float>) { EXPECT_EQ(pos, observed++); });
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), r->output_ids.begin(), r->output_ids.end());
  EXPECT_EQ(all, golden.full_sequence);
  EXPECT_EQ(observed, 48);
  EXPECT_EQ(r->finish_reason, "length");
  EXPECT_EQ(r->text,
            ", there was a little girl named Lily. She loved to play outside in the park. One day, "
            "she saw a big, red ball. She wanted to");
  EXPECT_EQ(runner_->pool().num_free(), runner_->pool().num_blocks());
}

TEST_F(GenerateTest, SameSeedSameOutputAndDifferentSeedsDiffer) {
  std::vector<int32_t> prompt = tokenizer_->Encode("Once upon a time");
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  p.max_tokens = 40;
  p.ignore_eos = true;
  p.seed = 133742;
  auto a = Generate(*runner_, *tokenizer_, prompt, p, 0);
  auto b = Generate(*runner_, *tokenizer_, prompt, p, 0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->output_ids, b->output_ids);
  int differing = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    p.seed = seed;
    auto c = Generate(*runner_, *tokenizer_, prompt, p, 0);
    ASSERT_TRUE(c.ok());
    differing += c->output_ids != a->output_ids;
  }
  EXPECT_GE(differing, 3);
}

TEST_F(GenerateTest, StopStringEndsGenerationAndIsCut) {
  std::vector<int32_t> prompt = tokenizer_->Encode("Once upon a time");
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = 44;
  p.stop = {"Lily"};
  auto r = Generate(*runner_, *tokenizer_, prompt, p, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish_reason, "stop");
  EXPECT_EQ(r->text, ", there was a little girl named ");
}

// Greedy stories260K produces no EOS for hundreds of tokens, so the test declares "," (id 432,
// the first greedy token after the prompt's "time") the end-of-sequence token.
TEST_F(GenerateTest, EosStopsUnlessIgnored) {
  const GgufFile& g = weights_->gguf();
  Vocabulary v;
  auto tokens = g.GetStringArray("tokenizer.ggml.tokens");
  auto scores = g.GetFloatArray("tokenizer.ggml.scores");
  auto types = g.GetIntArray("tokenizer.ggml.token_type");
  ASSERT_TRUE(tokens.ok() && scores.ok() && types.ok());
  v.tokens = *tokens;
  v.scores = *scores;
  for (size_t i = 0; i < types->size(); ++i) v.types.push_back(static_cast<TokenType>((*types)[i]));
  v.eos_id = 432;
  auto tok = Tokenizer::FromVocab(v);
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<int32_t> prompt = (*tok)->Encode("Once upon a time");
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = 20;
  auto r = Generate(*runner_, **tok, prompt, p, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish_reason, "stop");
  EXPECT_EQ(r->output_ids, std::vector<int32_t>{432});
  EXPECT_EQ(r->text, "");  // the end-of-sequence token is not text
  p.ignore_eos = true;
  auto longer = Generate(*runner_, **tok, prompt, p, 0);
  ASSERT_TRUE(longer.ok());
  EXPECT_EQ(longer->finish_reason, "length");
  EXPECT_EQ(longer->output_ids.size(), 20u);
}

TEST_F(GenerateTest, ZeroMaxTokensOnlyPrefills) {
  std::vector<int32_t> prompt = tokenizer_->Encode("Once upon a time");
  SamplingParams p;
  p.max_tokens = 0;
  auto r = Generate(*runner_, *tokenizer_, prompt, p, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->output_ids.empty());
  EXPECT_EQ(r->finish_reason, "length");
}

TEST_F(GenerateTest, RejectsPromptsLongerThanTheContext) {
  std::vector<int32_t> prompt(weights_->config().context_length + 1, 5);
  SamplingParams p;
  auto r = Generate(*runner_, *tokenizer_, prompt, p, 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner_->pool().num_free(), runner_->pool().num_blocks());
}

}  // namespace
}  // namespace funnel
