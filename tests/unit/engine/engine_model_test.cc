// The engine on the real CPU runner (stories260K): batching, chunked prefill and session forks
// must not change results compared with the single-sequence Generate().
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "runtime/engine/engine.h"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/exec/generate.h"
#include "spdlog/spdlog.h"
#include "tests/testing/golden.h"
#include "tests/unit/engine/engine_test_util.h"

namespace funnel {
namespace {

using ::funnel::testing::Collect;
using ::funnel::testing::Collected;
using ::funnel::testing::WaitFor;

const char* const kTexts[] = {
    "Once upon a time",
    "The little dog ran to the park. He saw a big red ball and wanted to play with it. His friend "
    "the cat "
    "came too, and they played all day in the warm sun until it was time to go home.",
    "Lily had a pretty doll",
    "Tom and Sue went to the beach with their mom. They made a big sand castle and found many "
    "shells. Then "
    "a wave came and took the castle away. Tom was sad, but Sue said they could build another one.",
    "One day, a bird",
    "There was a boy named Ben who loved to read books. Every night his dad read him a story about "
    "a brave "
    "knight and a friendly dragon who lived in a cave near the sea.",
    "The sun was hot and the flowers were",
    "Mia found a small box under her bed. She opened it and inside was a shiny key. She wondered "
    "what the "
    "key could open, so she looked all around the house.",
};

class EngineModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::warn); }

  void SetUp() override {
    auto w = ModelWeights::Open(::funnel::testing::Stories260KPath());
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = std::move(*w);
    auto t = Tokenizer::FromGguf(weights_->gguf());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
    RunnerOptions o;
    o.num_threads = 2;
    o.block_size = 16;
    o.kv_cache_bytes = int64_t{16} << 20;
    auto r = CpuModelRunner::Create(*weights_, o);
    ASSERT_TRUE(r.ok()) << r.status();
    runner_ = std::move(*r);
  }

  void TearDown() override {
    engine_.reset();
    if (runner_ != nullptr) {
      EXPECT_EQ(runner_->pool().num_used(), 0) << "blocks leaked";
    }
  }

  // Reference results are computed before the engine starts: the runner is single-threaded.
  std::vector<int32_t> Reference(const std::vector<int32_t>& prompt, const SamplingParams& p,
                                 const KvPolicy& policy = {}) {
    auto r = Generate(*runner_, *tokenizer_, prompt, p, 0, policy);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->output_ids : std::vector<int32_t>{};
  }

  void StartEngine(EngineConfig ec = {}) {
    auto e = Engine::Create(ec, runner_.get(), tokenizer_.get());
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }

  std::vector<int32_t> Continuation(const std::string& text) const {
    EncodeOptions o;
    o.add_bos = false;
    o.add_space_prefix = false;
    return tokenizer_->Encode(text, o);
  }

  void RunConcurrentAndCompare(const KvPolicy& policy, int64_t max_tokens_per_step) {
    SamplingParams p;
    p.temperature = 0.0f;
    p.max_tokens = 24;
    std::vector<std::vector<int32_t>> prompts, expected;
    for (const char* text : kTexts) {
      prompts.push_back(tokenizer_->Encode(text));
      expected.push_back(Reference(prompts.back(), p, policy));
    }
    EngineConfig ec;
    ec.default_kv_policy = policy;
    ec.max_tokens_per_step = max_tokens_per_step;
    StartEngine(ec);
    std::vector<std::shared_ptr<OutputStream>> streams;
    for (const auto& prompt : prompts) {
      GenerateRequest r;
      r.prompt = prompt;
      r.sampling = p;
      auto s = engine_->Submit(r);
      ASSERT_TRUE(s.ok()) << s.status();
      streams.push_back(*s);
    }
    for (size_t i = 0; i < streams.size(); ++i) {
      Collected c = Collect(*streams[i]);
      ASSERT_TRUE(c.final.status.ok()) << c.final.status;
      EXPECT_EQ(c.tokens, expected[i]) << "prompt " << i << " (" << prompts[i].size() << " tokens)";
      int64_t stored = 0;
      for (int64_t n : c.final.usage.kv_entries_per_layer) stored += n;
      const int64_t layers = runner_->config().num_layers;
      const int64_t n = static_cast<int64_t>(prompts[i].size());
      EXPECT_EQ(stored,
                policy.compresses() && n >= policy.budget ? layers * policy.budget : layers * n);
    }
  }

  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<CpuModelRunner> runner_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineModelTest, ConcurrentGreedyRequestsMatchSingleSequenceGenerate) {
  RunConcurrentAndCompare(KvPolicy{}, 2048);
}

TEST_F(EngineModelTest, ChunkedPrefillMatchesSingleSequenceGenerate) {
  RunConcurrentAndCompare(KvPolicy{}, 7);
}

TEST_F(EngineModelTest, ConcurrentPyramidKvRequestsMatchSingleSequenceGenerate) {
  // The long prompts (~40-50 tokens) are compressed to 20 entries per layer on average.
  RunConcurrentAndCompare(KvPolicy{.method = KvMethod::kPyramidKv, .budget = 20, .window = 4},
                          2048);
}

TEST_F(EngineModelTest, PyramidKvWithASmallStepBudget) {
  RunConcurrentAndCompare(KvPolicy{.method = KvMethod::kSnapKv, .budget = 16, .window = 4}, 12);
}

TEST_F(EngineModelTest, SeededSamplingMatchesGenerate) {
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  p.max_tokens = 30;
  p.seed = 1234;
  p.ignore_eos = true;
  const std::vector<int32_t> prompt = tokenizer_->Encode(kTexts[0]);
  const std::vector<int32_t> expected = Reference(prompt, p);
  StartEngine();
  GenerateRequest r;
  r.prompt = prompt;
  r.sampling = p;
  Collected c = Collect(**engine_->Submit(r));
  EXPECT_EQ(c.tokens, expected);
}

TEST_F(EngineModelTest, SessionForkMatchesOneShotOfTheConcatenation) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = 20;
  const std::vector<int32_t> context = tokenizer_->Encode(kTexts[3]);
  const std::vector<int32_t> question = Continuation(" Then Tom said");
  std::vector<int32_t> whole = context;
  whole.insert(whole.end(), question.begin(), question.end());
  const std::vector<int32_t> expected = Reference(whole, p);
  EngineConfig ec;
  ec.max_tokens_per_step = 16;  // chunked session prefill and suffix
  StartEngine(ec);
  CreateSessionRequest cs;
  cs.context = context;
  cs.owner = "alice";
  auto s = engine_->CreateSession(cs);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->tokens, static_cast<int64_t>(context.size()));
  for (int i = 0; i < 3; ++i) {  // the session is unchanged by each question
    GenerateRequest r;
    r.prompt = question;
    r.sampling = p;
    r.session_id = s->session_id;
    r.owner = "alice";
    Collected c = Collect(**engine_->Submit(r));
    ASSERT_TRUE(c.final.status.ok()) << c.final.status;
    EXPECT_EQ(c.tokens, expected);
    EXPECT_EQ(c.final.usage.session_tokens_reused, static_cast<int64_t>(context.size()));
  }
  GenerateRequest other;
  other.prompt = question;
  other.session_id = s->session_id;
  other.owner = "bob";
  EXPECT_EQ(engine_->Submit(other).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineModelTest, AppendModeBuildsAConversation) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = 12;
  const std::vector<int32_t> context = tokenizer_->Encode(kTexts[5]);
  const std::vector<int32_t> q1 = Continuation(" One night");
  const std::vector<int32_t> q2 = Continuation(" The next day");
  StartEngine();
  CreateSessionRequest cs;
  cs.context = context;
  cs.owner = "alice";
  auto s = engine_->CreateSession(cs);
  ASSERT_TRUE(s.ok()) << s.status();
  GenerateRequest turn1;
  turn1.prompt = q1;
  turn1.sampling = p;
  turn1.session_id = s->session_id;
  turn1.owner = "alice";
  turn1.session_mode = SessionMode::kAppend;
  Collected c1 = Collect(**engine_->Submit(turn1));
  ASSERT_TRUE(c1.final.status.ok()) << c1.final.status;
  ASSERT_EQ(c1.tokens.size(), 12u);
  std::vector<int32_t> history = context;
  history.insert(history.end(), q1.begin(), q1.end());
  history.insert(history.end(), c1.tokens.begin(), c1.tokens.end());
  auto info = engine_->GetSession(s->session_id, "alice");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->tokens, static_cast<int64_t>(history.size()));
  GenerateRequest turn2 = turn1;
  turn2.prompt = q2;
  turn2.session_mode = SessionMode::kFork;
  Collected c2 = Collect(**engine_->Submit(turn2));
  ASSERT_TRUE(c2.final.status.ok());
  engine_.reset();  // the runner is free again for the reference

  std::vector<int32_t> whole1 = context;
  whole1.insert(whole1.end(), q1.begin(), q1.end());
  EXPECT_EQ(c1.tokens, Reference(whole1, p));
  history.insert(history.end(), q2.begin(), q2.end());
  EXPECT_EQ(c2.tokens, Reference(history, p));
}

TEST_F(EngineModelTest, CompressedSessionAndTtlExpiry) {
  StartEngine();
  CreateSessionRequest cs;
  cs.context = tokenizer_->Encode(std::string(kTexts[1]) + " " + kTexts[7]);
  cs.owner = "alice";
  cs.kv_policy = KvPolicy{.method = KvMethod::kPyramidKv, .budget = 24, .window = 4};
  cs.ttl = absl::Milliseconds(100);
  auto s = engine_->CreateSession(cs);
  ASSERT_TRUE(s.ok()) << s.status();
  int64_t stored = 0;
  for (int64_t n : s->per_layer_tokens) stored += n;
  EXPECT_EQ(stored, 24 * static_cast<int64_t>(s->per_layer_tokens.size()));
  EXPECT_GT(engine_->Stats().blocks_used, 0);
  GenerateRequest r;
  r.prompt = Continuation(" Then");
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = 8;
  r.session_id = s->session_id;
  r.owner = "alice";
  Collected c = Collect(**engine_->Submit(r));
  ASSERT_TRUE(c.final.status.ok()) << c.final.status;
  EXPECT_EQ(c.tokens.size(), 8u);
  EXPECT_EQ(engine_->ListSessions("alice")->size(), 1u);
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().num_sessions == 0; }, absl::Seconds(5)));
  EXPECT_EQ(engine_->Stats().blocks_used, 0);
  EXPECT_EQ(engine_->GetSession(s->session_id, "alice").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(EngineModelTest, DurableSessionAnswersTheSameAfterARestart) {
  // The K/V written to disk is read back bit for bit: the greedy answer after a restart (a new
  // runner, so a new pool) equals the one before.
  const auto dir =
      std::filesystem::temp_directory_path() / absl::StrCat("funnel_durable_model_", getpid());
  std::filesystem::remove_all(dir);
  EngineConfig ec;
  ec.session_dir = dir.string();
  ec.model_fingerprint = "stories260K";
  StartEngine(ec);
  CreateSessionRequest cs;
  cs.context = tokenizer_->Encode(std::string(kTexts[1]) + " " + kTexts[3]);
  cs.owner = "alice";
  cs.kv_policy = KvPolicy{.method = KvMethod::kPyramidKv, .budget = 24, .window = 4};
  auto s = engine_->CreateSession(cs);
  ASSERT_TRUE(s.ok()) << s.status();
  GenerateRequest r;
  r.prompt = Continuation(" Then the dog");
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = 24;
  r.sampling.ignore_eos = true;
  r.session_id = s->session_id;
  r.owner = "alice";
  const Collected before = Collect(**engine_->Submit(r));
  ASSERT_TRUE(before.final.status.ok()) << before.final.status;
  engine_.reset();
  runner_.reset();
  RunnerOptions o;
  o.num_threads = 2;
  o.block_size = 16;
  o.kv_cache_bytes = int64_t{16} << 20;
  auto fresh = CpuModelRunner::Create(*weights_, o);
  ASSERT_TRUE(fresh.ok());
  runner_ = std::move(*fresh);
  StartEngine(ec);
  auto restored = engine_->GetSession(s->session_id, "alice");
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->per_layer_tokens, s->per_layer_tokens);
  const Collected after = Collect(**engine_->Submit(r));
  ASSERT_TRUE(after.final.status.ok()) << after.final.status;
  EXPECT_EQ(after.tokens, before.tokens);
  ASSERT_TRUE(engine_->DeleteSession(s->session_id, "alice").ok());
  engine_.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace funnel
