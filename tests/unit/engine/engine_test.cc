// Engine behaviour on the fake runner: admission by exact KV footprint, queueing, FIFO fairness,
// prompt-token budgets and chunked prefill, cancellation, deadlines, faults, shutdown.
#include "runtime/engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "runtime/exec/fake_model_runner.h"
#include "spdlog/spdlog.h"
#include "tests/unit/engine/engine_test_util.h"

namespace funnel {
namespace {

using ::funnel::testing::Collect;
using ::funnel::testing::Collected;
using ::funnel::testing::MakeRequest;
using ::funnel::testing::WaitFor;

std::vector<int32_t> Prompt(int n, int seed = 0) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(3 + (i * 5 + seed * 11) % 60);
  return p;
}

CreateSessionRequest SessionRequest(std::vector<int32_t> context, std::string owner) {
  CreateSessionRequest r;
  r.context = std::move(context);
  r.owner = std::move(owner);
  return r;
}

class EngineTest : public ::funnel::testing::FakeEngineTest {
 protected:
  std::vector<int32_t> Expected(const std::vector<int32_t>& prompt, int n) const {
    return Chain(prompt.back(), static_cast<int64_t>(prompt.size()) - 1, n);
  }

  std::shared_ptr<OutputStream> SubmitOk(GenerateRequest r) {
    auto s = engine_->Submit(std::move(r));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : nullptr;
  }

  // Pauses the runner and submits `first`; returns once the engine holds it inside a step, so
  // that everything submitted before Resume() is planned together in the next step.
  std::shared_ptr<OutputStream> HoldEngineWith(GenerateRequest first) {
    runner_->Pause();
    auto s = SubmitOk(std::move(first));
    EXPECT_TRUE(WaitFor([&] { return engine_->Stats().num_waiting == 0; }));
    absl::SleepFor(absl::Milliseconds(5));
    return s;
  }

  // Index of the first step in which a sequence starts a prefill of `n` tokens at position 0.
  int64_t AdmissionStep(int64_t n) const {
    const auto steps = runner_->steps();
    for (size_t i = 0; i < steps.size(); ++i) {
      for (const FakeStepSequence& s : steps[i].seqs) {
        if (s.start_position == 0 && s.num_tokens == n) return static_cast<int64_t>(i);
      }
    }
    return -1;
  }

  size_t MaxSequencesPerStep() const {
    size_t m = 0;
    for (const FakeStepRecord& r : runner_->steps()) m = std::max(m, r.seqs.size());
    return m;
  }
};

TEST_F(EngineTest, GeneratesTheRunnersChainAndReportsUsage) {
  StartEngine();
  const auto prompt = Prompt(9);
  Collected c = Collect(*SubmitOk(MakeRequest(prompt, 6, "r1")));
  ASSERT_TRUE(c.done);
  EXPECT_TRUE(c.final.status.ok()) << c.final.status;
  EXPECT_EQ(c.final.finish_reason, "length");
  EXPECT_EQ(c.tokens, Expected(prompt, 6));
  std::string text;
  for (int32_t t : c.tokens) text += absl::StrCat(" w", t);
  EXPECT_EQ(c.text, text);
  EXPECT_EQ(c.final.usage.prompt_tokens, 9);
  EXPECT_EQ(c.final.usage.completion_tokens, 6);
  EXPECT_EQ(c.final.usage.kv_entries_per_layer, std::vector<int64_t>(4, 9));
  EXPECT_GE(c.final.usage.total_ms, c.final.usage.ttft_ms);
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().blocks_used == 0; }));
  const EngineStats st = engine_->Stats();
  EXPECT_EQ(st.prompt_tokens_total, 9);
  EXPECT_EQ(st.generation_tokens_total, 6);
  EXPECT_EQ(st.blocks_total, 256);
  EXPECT_TRUE(st.healthy);
  EXPECT_EQ(engine_->Cancel("r1").code(), absl::StatusCode::kNotFound);  // finished
}

TEST_F(EngineTest, ValidatesAtSubmit) {
  EngineConfig ec;
  ec.max_prompt_tokens = 32;
  StartEngine({}, ec);
  EXPECT_EQ(engine_->Submit(MakeRequest({}, 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->Submit(MakeRequest(Prompt(33), 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->Submit(MakeRequest({5, 64}, 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->Submit(MakeRequest({5, -1}, 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  GenerateRequest bad_sampling = MakeRequest(Prompt(4), 4);
  bad_sampling.sampling.top_p = 0.0f;
  EXPECT_EQ(engine_->Submit(bad_sampling).status().code(), absl::StatusCode::kInvalidArgument);
  GenerateRequest bad_policy = MakeRequest(Prompt(4), 4);
  bad_policy.kv_policy = KvPolicy{.method = KvMethod::kPyramidKv};  // no budget
  EXPECT_EQ(engine_->Submit(bad_policy).status().code(), absl::StatusCode::kInvalidArgument);
  GenerateRequest bad_logprobs = MakeRequest(Prompt(4), 4);
  bad_logprobs.top_logprobs = 21;
  EXPECT_EQ(engine_->Submit(bad_logprobs).status().code(), absl::StatusCode::kInvalidArgument);
  GenerateRequest late = MakeRequest(Prompt(4), 4);
  late.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(engine_->Submit(late).status().code(), absl::StatusCode::kDeadlineExceeded);
  GenerateRequest no_session = MakeRequest(Prompt(4), 4);
  no_session.session_id = "sess-r0-0000000000000000";
  EXPECT_EQ(engine_->Submit(no_session).status().code(), absl::StatusCode::kNotFound);

  runner_->set_step_delay(absl::Milliseconds(2));
  auto first = SubmitOk(MakeRequest(Prompt(4), 20, "dup"));
  EXPECT_EQ(engine_->Submit(MakeRequest(Prompt(4), 4, "dup")).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(Collect(*first).final.status.ok());
}

TEST_F(EngineTest, PromptOverTheModelContextIsInvalid) {
  FakeRunnerOptions ro;
  ro.context_length = 64;
  StartEngine(ro);
  EXPECT_EQ(engine_->Submit(MakeRequest(Prompt(65), 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A prompt that fills the context gets one token, then "length".
  Collected c = Collect(*SubmitOk(MakeRequest(Prompt(64), 10)));
  EXPECT_TRUE(c.final.status.ok());
  EXPECT_EQ(c.tokens.size(), 1u);
  EXPECT_EQ(c.final.finish_reason, "length");
}

TEST_F(EngineTest, AdmitsByExactFootprintAndQueuesTheRest) {
  // Prompt 8 + max_tokens 8 = 16 entries per layer = 4 blocks x 4 layers = 16 blocks each.
  FakeRunnerOptions ro;
  ro.num_blocks = 48;  // exactly three requests
  StartEngine(ro);
  std::vector<std::shared_ptr<OutputStream>> streams;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) prompts.push_back(Prompt(8, i));
  streams.push_back(HoldEngineWith(MakeRequest(prompts[0], 8)));
  for (int i = 1; i < 6; ++i) streams.push_back(SubmitOk(MakeRequest(prompts[i], 8)));
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().num_waiting == 5; }));
  runner_->Resume();
  for (int i = 0; i < 6; ++i) {
    Collected c = Collect(*streams[i]);
    ASSERT_TRUE(c.final.status.ok()) << i << ": " << c.final.status;
    EXPECT_EQ(c.tokens, Expected(prompts[i], 8)) << i;
  }
  EXPECT_EQ(MaxSequencesPerStep(), 3u);
  // The fourth request starts only when the first ones have finished and freed their blocks.
  const auto steps = runner_->steps();
  int64_t started = 0;
  for (const FakeStepRecord& r : steps) {
    for (const FakeStepSequence& s : r.seqs) started += s.start_position == 0 ? 1 : 0;
  }
  EXPECT_EQ(started, 6);
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().blocks_used == 0; }));
}

TEST_F(EngineTest, QueueFullIsResourceExhausted) {
  EngineConfig ec;
  ec.max_queue = 2;
  ec.max_num_seqs = 1;
  StartEngine({}, ec);
  auto a = HoldEngineWith(MakeRequest(Prompt(4), 3));
  auto b = SubmitOk(MakeRequest(Prompt(5), 3));
  auto c = SubmitOk(MakeRequest(Prompt(6), 3));
  auto d = engine_->Submit(MakeRequest(Prompt(7), 3));
  EXPECT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(d.status().message().find("queue is full"), std::string::npos);
  EXPECT_EQ(engine_->Stats().rejections_total, 1);
  EXPECT_EQ(engine_->Stats().num_waiting, 2);
  runner_->Resume();
  for (auto* s : {&a, &b, &c}) EXPECT_TRUE(Collect(**s).final.status.ok());
}

TEST_F(EngineTest, RequestThatCanNeverFitIsRejectedAtSubmit) {
  FakeRunnerOptions ro;
  ro.num_blocks = 16;
  StartEngine(ro);
  auto s = engine_->Submit(MakeRequest(Prompt(60), 4));  // 64 entries = 16 blocks per layer
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.status().message().find("never fit"), std::string::npos) << s.status();
  // Compressed to 8 entries per layer on average, the same prompt fits.
  GenerateRequest compressed = MakeRequest(Prompt(60), 4);
  compressed.kv_policy = KvPolicy{.method = KvMethod::kSnapKv, .budget = 8, .window = 4};
  Collected c = Collect(*SubmitOk(compressed));
  EXPECT_TRUE(c.final.status.ok()) << c.final.status;
  EXPECT_EQ(c.final.usage.kv_entries_per_layer, std::vector<int64_t>(4, 8));
  EXPECT_EQ(c.tokens, Expected(Prompt(60), 4));  // positions continue at 60
  EXPECT_EQ(engine_->Stats().rejections_total, 1);
}

TEST_F(EngineTest, MaxNumSeqsCapsTheRunningSet) {
  EngineConfig ec;
  ec.max_num_seqs = 2;
  StartEngine({}, ec);
  std::vector<std::shared_ptr<OutputStream>> streams;
  streams.push_back(HoldEngineWith(MakeRequest(Prompt(4), 5)));
  for (int i = 1; i < 5; ++i) streams.push_back(SubmitOk(MakeRequest(Prompt(4 + i, i), 5)));
  runner_->Resume();
  for (auto& s : streams) EXPECT_TRUE(Collect(*s).final.status.ok());
  EXPECT_EQ(MaxSequencesPerStep(), 2u);
}

TEST_F(EngineTest, FifoAdmissionDoesNotStarveABigRequest) {
  // Pool of 32 blocks. Small requests take 8 blocks (8 entries per layer); C takes all 32.
  FakeRunnerOptions ro;
  ro.num_blocks = 32;
  StartEngine(ro);
  auto a = HoldEngineWith(MakeRequest(Prompt(4), 4));  // prompt lengths identify requests
  auto b = SubmitOk(MakeRequest(Prompt(5), 3));
  auto c = SubmitOk(MakeRequest(Prompt(12), 20));
  auto d = SubmitOk(MakeRequest(Prompt(6), 2));
  auto e = SubmitOk(MakeRequest(Prompt(7), 1));
  runner_->Resume();
  for (auto* s : {&a, &b, &c, &d, &e}) ASSERT_TRUE(Collect(**s).final.status.ok());
  const int64_t step_b = AdmissionStep(5), step_c = AdmissionStep(12);
  const int64_t step_d = AdmissionStep(6), step_e = AdmissionStep(7);
  ASSERT_GE(step_b, 0);
  EXPECT_GT(step_c, step_b);
  // D and E would fit next to A or B, but never overtake C.
  EXPECT_GT(step_d, step_c);
  EXPECT_GT(step_e, step_c);
  // C ran alone: it needs the whole pool.
  const auto steps = runner_->steps();
  EXPECT_EQ(steps[static_cast<size_t>(step_c)].seqs.size(), 1u);
}

TEST_F(EngineTest, ChunkedPrefillRespectsTheStepBudgetAndInterleavesWithDecodes) {
  FakeRunnerOptions ro;
  ro.num_blocks = 1024;
  EngineConfig ec;
  ec.max_tokens_per_step = 16;
  StartEngine(ro, ec);
  runner_->set_step_delay(absl::Milliseconds(1));
  auto a = SubmitOk(MakeRequest(Prompt(4), 200));
  ASSERT_TRUE(WaitFor([&] { return runner_->num_steps() >= 3; }));  // a is decoding
  const auto long_prompt = Prompt(50, 3);
  auto b = SubmitOk(MakeRequest(long_prompt, 3));
  Collected cb = Collect(*b);
  ASSERT_TRUE(cb.final.status.ok());
  EXPECT_EQ(cb.tokens, Expected(long_prompt, 3));
  EXPECT_EQ(cb.final.usage.kv_entries_per_layer, std::vector<int64_t>(4, 50));
  ASSERT_TRUE(Collect(*a).final.status.ok());

  const auto steps = runner_->steps();
  const SequenceKv* b_kv = nullptr;
  for (const auto& r : steps) {
    for (const auto& s : r.seqs) {
      if (s.start_position == 0 && s.num_tokens == 16) b_kv = s.kv;
    }
  }
  ASSERT_NE(b_kv, nullptr);
  std::vector<int64_t> chunks;
  for (const auto& r : steps) {
    int64_t prefill = 0;
    bool has_b_chunk = false, has_decode = false;
    for (const auto& s : r.seqs) {
      if (s.kv == b_kv && chunks.size() < 4 && s.start_position < 50) {
        chunks.push_back(s.num_tokens);
        has_b_chunk = true;
        prefill += s.num_tokens;
      } else if (s.num_tokens == 1) {
        has_decode = true;
      } else {
        prefill += s.num_tokens;
      }
    }
    EXPECT_LE(prefill, 16);
    if (has_b_chunk) {
      EXPECT_TRUE(has_decode) << "a's decode must run in every step of b's prefill";
    }
  }
  EXPECT_EQ(chunks, (std::vector<int64_t>{16, 16, 16, 2}));
}

// The chunks of the prompt fed to `kv` before position `limit`, in step order, with whether each
// compressed.
std::vector<std::pair<int64_t, bool>> PromptChunks(const std::vector<FakeStepRecord>& steps,
                                                   const SequenceKv* kv, int64_t limit) {
  std::vector<std::pair<int64_t, bool>> out;
  for (const auto& r : steps) {
    for (const auto& s : r.seqs) {
      if (s.kv == kv && s.start_position < limit) out.emplace_back(s.num_tokens, s.compressing);
    }
  }
  return out;
}

const SequenceKv* FirstChunkKv(const std::vector<FakeStepRecord>& steps, int64_t num_tokens) {
  for (const auto& r : steps) {
    for (const auto& s : r.seqs) {
      if (s.start_position == 0 && s.num_tokens == num_tokens) return s.kv;
    }
  }
  return nullptr;
}

TEST_F(EngineTest, CompressedPromptIsPrefilledInChunksWithinTheStepBudget) {
  FakeRunnerOptions ro;
  ro.num_blocks = 1024;
  EngineConfig ec;
  ec.max_tokens_per_step = 16;
  StartEngine(ro, ec);
  runner_->set_step_delay(absl::Milliseconds(1));
  auto a = SubmitOk(MakeRequest(Prompt(4), 200));
  ASSERT_TRUE(WaitFor([&] { return runner_->num_steps() >= 3; }));
  runner_->Pause();
  auto b = SubmitOk(MakeRequest(Prompt(40, 1), 2));  // chunked: 16 + 16 + 8
  GenerateRequest compressed = MakeRequest(Prompt(50, 2), 5);
  compressed.kv_policy = KvPolicy{.method = KvMethod::kPyramidKv, .budget = 12, .window = 4};
  auto c = SubmitOk(compressed);
  auto d = SubmitOk(MakeRequest(Prompt(6, 3), 2));
  runner_->Resume();
  Collected cc = Collect(*c);
  ASSERT_TRUE(cc.final.status.ok()) << cc.final.status;
  EXPECT_EQ(cc.tokens, Expected(Prompt(50, 2), 5));
  int64_t stored = 0;
  for (int64_t n : cc.final.usage.kv_entries_per_layer) stored += n;
  EXPECT_EQ(stored, 4 * 12);  // exact pyramid totals
  for (auto* s : {&a, &b, &d}) ASSERT_TRUE(Collect(**s).final.status.ok());

  const auto steps = runner_->steps();
  for (const auto& r : steps) {
    int64_t prefill = 0;
    for (const auto& s : r.seqs) prefill += s.num_tokens > 1 ? s.num_tokens : 0;
    EXPECT_LE(prefill, 16) << "no step prefills more than its budget";
  }
  // b takes the first step's budget; c's chunks fill what is left, its last one (at least the
  // window of 4) compresses, and a decodes in every one of those steps.
  const SequenceKv* c_kv = nullptr;
  for (const auto& r : steps) {
    for (const auto& s : r.seqs) {
      if (s.compressing) c_kv = s.kv;
    }
  }
  ASSERT_NE(c_kv, nullptr);
  const auto chunks = PromptChunks(steps, c_kv, 50);
  int64_t total = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    total += chunks[i].first;
    EXPECT_EQ(chunks[i].second, i + 1 == chunks.size()) << "only the last chunk compresses";
  }
  EXPECT_EQ(total, 50);
  EXPECT_GT(chunks.size(), 1u);
  EXPECT_GE(chunks.back().first, 4);
  for (const auto& r : steps) {
    bool has_c = false, has_decode = false;
    for (const auto& s : r.seqs) {
      has_c |= s.kv == c_kv && s.start_position < 50;
      has_decode |= s.num_tokens == 1;
    }
    if (has_c) {
      EXPECT_TRUE(has_decode) << "a's decode runs in every step of c's prefill";
    }
  }
}

TEST_F(EngineTest, H2oAndPromptsWhoseFullKvNeverFitsArePrefilledInOneStep) {
  // h2o scores every prompt query; a prompt whose full K/V exceeds the pool cannot stage it
  // there. Both take one step, alone among prefills, and still run next to decodes.
  struct Case {
    KvPolicy policy;
    int32_t num_blocks;
  };
  // 4 layers, block 4: the 50-token prompt's chunked peak is 4 * ceil(46 / 4) = 48 blocks.
  for (const Case& k :
       {Case{KvPolicy{.method = KvMethod::kH2o, .budget = 12, .window = 4}, 1024},
        Case{KvPolicy{.method = KvMethod::kPyramidKv, .budget = 12, .window = 4}, 40}}) {
    SCOPED_TRACE(KvMethodName(k.policy.method));
    FakeRunnerOptions ro;
    ro.num_blocks = k.num_blocks;
    EngineConfig ec;
    ec.max_tokens_per_step = 16;
    StartEngine(ro, ec);
    runner_->set_step_delay(absl::Milliseconds(1));
    auto a = SubmitOk(MakeRequest(Prompt(4), 20));  // 4 * ceil(24 / 4) = 24 blocks
    ASSERT_TRUE(WaitFor([&] { return runner_->num_steps() >= 3; }));
    GenerateRequest compressed = MakeRequest(Prompt(50, 2), 3);
    compressed.kv_policy = k.policy;
    Collected cc = Collect(*SubmitOk(compressed));
    ASSERT_TRUE(cc.final.status.ok()) << cc.final.status;
    EXPECT_EQ(cc.tokens, Expected(Prompt(50, 2), 3));
    ASSERT_TRUE(Collect(*a).final.status.ok());
    const auto steps = runner_->steps();
    const SequenceKv* kv = FirstChunkKv(steps, 50);
    ASSERT_NE(kv, nullptr);
    const auto chunks = PromptChunks(steps, kv, 50);
    ASSERT_EQ(chunks.size(), 1u);
    EXPECT_TRUE(chunks[0].second);
    engine_.reset();
    EXPECT_EQ(runner_->pool().num_used(), 0);
  }
}

TEST_F(EngineTest, ChunkedCompressionReservesItsPeakAtAdmission) {
  // 4 layers, block 4, 64 blocks. a (16 prompt + 24 tokens) reserves 4 * ceil(40 / 4) = 40. c
  // (50 tokens, pyramidkv B=12, W=4) chunked peaks at 4 * ceil(46 / 4) = 48 blocks of full K/V,
  // more than the 24 left: c waits for a, although its compressed footprint (16) would fit.
  FakeRunnerOptions ro;
  ro.num_blocks = 64;
  EngineConfig ec;
  ec.max_tokens_per_step = 16;
  StartEngine(ro, ec);
  runner_->set_step_delay(absl::Milliseconds(1));
  auto a = SubmitOk(MakeRequest(Prompt(16), 24));
  ASSERT_TRUE(WaitFor([&] { return runner_->num_steps() >= 2; }));
  GenerateRequest compressed = MakeRequest(Prompt(50, 2), 3);
  compressed.kv_policy = KvPolicy{.method = KvMethod::kPyramidKv, .budget = 12, .window = 4};
  auto c = SubmitOk(compressed);
  ASSERT_TRUE(Collect(*a).final.status.ok());
  Collected cc = Collect(*c);
  ASSERT_TRUE(cc.final.status.ok()) << cc.final.status;
  EXPECT_EQ(cc.tokens, Expected(Prompt(50, 2), 3));
  const auto steps = runner_->steps();
  const SequenceKv* c_kv = nullptr;
  int64_t a_last = -1, c_first = -1;
  for (size_t i = 0; i < steps.size(); ++i) {
    for (const auto& s : steps[i].seqs) {
      if (s.compressing) c_kv = s.kv;
      if (s.num_tokens == 1 && s.start_position == 16 + 24 - 2) a_last = static_cast<int64_t>(i);
    }
  }
  ASSERT_NE(c_kv, nullptr);
  for (size_t i = 0; i < steps.size() && c_first < 0; ++i) {
    for (const auto& s : steps[i].seqs) {
      if (s.kv == c_kv) c_first = static_cast<int64_t>(i);
    }
  }
  ASSERT_GE(a_last, 0);
  EXPECT_GT(c_first, a_last);
  EXPECT_GT(PromptChunks(steps, c_kv, 50).size(), 1u) << "c was chunked";
}

TEST_F(EngineTest, CancelMidStreamFreesAllBlocks) {
  FakeRunnerOptions ro;
  ro.num_blocks = 1024;
  StartEngine(ro);
  runner_->set_step_delay(absl::Milliseconds(2));
  auto s = SubmitOk(MakeRequest(Prompt(8), 400, "victim"));
  auto other = SubmitOk(MakeRequest(Prompt(8, 1), 400, "other"));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s->Next(absl::Seconds(5)).has_value());
  EXPECT_GT(engine_->Stats().blocks_used, 0);
  ASSERT_TRUE(engine_->Cancel("victim").ok());
  Collected c = Collect(*s);
  ASSERT_TRUE(c.done);
  EXPECT_EQ(c.final.status.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(c.final.usage.completion_tokens, 400);
  other->RequestCancel();  // a disconnected client
  Collected o = Collect(*other);
  EXPECT_EQ(o.final.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(WaitFor(
      [&] { return engine_->Stats().blocks_used == 0 && engine_->Stats().num_running == 0; }));
  EXPECT_EQ(engine_->Cancel("victim").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->Cancel("nobody").code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, CancelWhileQueued) {
  EngineConfig ec;
  ec.max_num_seqs = 1;
  StartEngine({}, ec);
  auto a = HoldEngineWith(MakeRequest(Prompt(4), 3));
  auto b = SubmitOk(MakeRequest(Prompt(5), 3, "queued"));
  ASSERT_TRUE(engine_->Cancel("queued").ok());
  runner_->Resume();
  EXPECT_EQ(Collect(*b).final.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(Collect(*a).final.status.ok());
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().num_waiting == 0; }));
}

TEST_F(EngineTest, DeadlineEndsTheRequest) {
  FakeRunnerOptions ro;
  ro.num_blocks = 1024;
  StartEngine(ro);
  runner_->set_step_delay(absl::Milliseconds(2));
  GenerateRequest r = MakeRequest(Prompt(8), 400);
  r.deadline = absl::Now() + absl::Milliseconds(300);
  Collected c = Collect(*SubmitOk(r));
  EXPECT_EQ(c.final.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GT(c.tokens.size(), 0u);
  EXPECT_LT(c.tokens.size(), 400u);
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().blocks_used == 0; }));
}

TEST_F(EngineTest, BackendFaultFailsEverythingWithUnavailable) {
  FakeRunnerOptions ro;
  ro.num_blocks = 1024;
  StartEngine(ro);
  runner_->set_step_delay(absl::Milliseconds(2));
  std::vector<std::shared_ptr<OutputStream>> streams;
  for (int i = 0; i < 3; ++i) streams.push_back(SubmitOk(MakeRequest(Prompt(6, i), 100)));
  for (auto& s : streams) ASSERT_TRUE(s->Next(absl::Seconds(5)).has_value());
  runner_->FailNextStep(absl::InternalError("device lost"));
  for (auto& s : streams) {
    Collected c = Collect(*s);
    ASSERT_TRUE(c.done);
    EXPECT_EQ(c.final.status.code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(c.final.status.message().find("device lost"), std::string::npos);
  }
  EXPECT_FALSE(engine_->healthy());
  EXPECT_FALSE(engine_->Stats().healthy);
  EXPECT_EQ(engine_->Submit(MakeRequest(Prompt(4), 2)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine_->CreateSession(SessionRequest(Prompt(8), "o")).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().blocks_used == 0; }));
}

TEST_F(EngineTest, BadDataFailsOnlyItsRequest) {
  FakeRunnerOptions ro;
  ro.next_token = [](int32_t t, int64_t p) {
    return static_cast<int32_t>(3 + (7 * t + 3 * p + 5) % 40);
  };
  StartEngine(ro);
  runner_->set_poison_token(60);  // the runner refuses it, as a real one refuses bad ids
  auto good1 = HoldEngineWith(MakeRequest(Prompt(5), 4));
  auto bad = SubmitOk(MakeRequest({4, 5, 60, 6}, 4));
  auto good2 = SubmitOk(MakeRequest(Prompt(7), 4));
  runner_->Resume();
  EXPECT_EQ(Collect(*bad).final.status.code(), absl::StatusCode::kInvalidArgument);
  Collected g1 = Collect(*good1), g2 = Collect(*good2);
  EXPECT_TRUE(g1.final.status.ok());
  EXPECT_TRUE(g2.final.status.ok());
  EXPECT_EQ(g2.tokens, Expected(Prompt(7), 4));
  EXPECT_TRUE(engine_->healthy());
}

TEST_F(EngineTest, StopsOnEosAndOnStopStrings) {
  FakeRunnerOptions ro;
  ro.next_token = [](int32_t, int64_t p) { return p >= 12 ? 2 : static_cast<int32_t>(10 + p); };
  StartEngine(ro);
  GenerateRequest eos = MakeRequest(Prompt(8), 20);
  eos.sampling.ignore_eos = false;
  Collected c = Collect(*SubmitOk(eos));
  EXPECT_EQ(c.final.finish_reason, "stop");
  EXPECT_EQ(c.tokens, (std::vector<int32_t>{17, 18, 19, 20, 21, 2}));
  EXPECT_EQ(c.text, " w17 w18 w19 w20 w21");
  EXPECT_EQ(c.final.usage.completion_tokens, 6);

  GenerateRequest ignore = MakeRequest(Prompt(8), 8);  // ignore_eos: EOS is just a token
  Collected ci = Collect(*SubmitOk(ignore));
  EXPECT_EQ(ci.final.finish_reason, "length");
  EXPECT_EQ(ci.tokens.size(), 8u);

  GenerateRequest stop = MakeRequest(Prompt(8), 20);
  stop.sampling.stop = {" w19"};
  Collected cs = Collect(*SubmitOk(stop));
  EXPECT_EQ(cs.final.finish_reason, "stop");
  EXPECT_EQ(cs.text, " w17 w18");
  EXPECT_EQ(cs.tokens, (std::vector<int32_t>{17, 18, 19}));
}

TEST_F(EngineTest, LogprobsOnlyWhenAsked) {
  StartEngine();
  GenerateRequest r = MakeRequest(Prompt(5), 3);
  r.top_logprobs = 2;
  Collected c = Collect(*SubmitOk(r));
  ASSERT_EQ(c.events.size(), 3u);
  for (const TokenEvent& e : c.events) {
    ASSERT_TRUE(e.logprob.has_value());
    EXPECT_EQ(e.logprob->token, e.token);
    EXPECT_NEAR(e.logprob->logprob, 0.0f, 1e-6f);
    ASSERT_EQ(e.top_logprobs.size(), 2u);
    EXPECT_EQ(e.top_logprobs[0].token, e.token);
    EXPECT_LT(e.top_logprobs[1].logprob, -25.0f);
  }
  Collected plain = Collect(*SubmitOk(MakeRequest(Prompt(5), 3)));
  for (const TokenEvent& e : plain.events) {
    EXPECT_FALSE(e.logprob.has_value());
    EXPECT_TRUE(e.top_logprobs.empty());
  }
}

TEST_F(EngineTest, MaxTokensZeroOnlyPrefills) {
  StartEngine();
  Collected c = Collect(*SubmitOk(MakeRequest(Prompt(5), 0)));
  EXPECT_TRUE(c.final.status.ok());
  EXPECT_EQ(c.final.finish_reason, "length");
  EXPECT_TRUE(c.tokens.empty());
  EXPECT_EQ(c.final.usage.kv_entries_per_layer, std::vector<int64_t>(4, 5));
}

TEST_F(EngineTest, ShutdownLetsRunningRequestsFinishWithinGrace) {
  StartEngine();
  runner_->set_step_delay(absl::Milliseconds(1));
  auto a = SubmitOk(MakeRequest(Prompt(4), 20));
  auto b = SubmitOk(MakeRequest(Prompt(5), 20));
  engine_->Shutdown(absl::Seconds(10));
  for (auto* s : {&a, &b}) {
    Collected c = Collect(**s);
    EXPECT_TRUE(c.final.status.ok()) << c.final.status;
    EXPECT_EQ(c.tokens.size(), 20u);
  }
  EXPECT_EQ(engine_->Submit(MakeRequest(Prompt(4), 2)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine_->DeleteSession("x", "y").code(), absl::StatusCode::kUnavailable);
  engine_->Shutdown(absl::ZeroDuration());  // idempotent
}

TEST_F(EngineTest, ShutdownCancelsWhatOutlivesTheGrace) {
  FakeRunnerOptions ro;
  ro.num_blocks = 1024;
  StartEngine(ro);
  runner_->set_step_delay(absl::Milliseconds(2));
  auto a = SubmitOk(MakeRequest(Prompt(4), 400));
  ASSERT_TRUE(a->Next(absl::Seconds(5)).has_value());
  const absl::Time t0 = absl::Now();
  engine_->Shutdown(absl::Milliseconds(30));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
  Collected c = Collect(*a);
  EXPECT_EQ(c.final.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(runner_->pool().num_used(), 0);
}

TEST_F(EngineTest, DestructorWithRequestsInFlightIsSafe) {
  StartEngine();
  runner_->set_step_delay(absl::Milliseconds(2));
  auto a = SubmitOk(MakeRequest(Prompt(4), 200));
  auto session = engine_->CreateSession(SessionRequest(Prompt(12), "o"));
  ASSERT_TRUE(session.ok());
  engine_.reset();
  Collected c = Collect(*a, absl::Seconds(1));
  ASSERT_TRUE(c.done);
  EXPECT_EQ(c.final.status.code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, StatsReportRunningAndWaiting) {
  EngineConfig ec;
  ec.max_num_seqs = 1;
  StartEngine({}, ec);
  auto a = HoldEngineWith(MakeRequest(Prompt(4), 20));
  auto b = SubmitOk(MakeRequest(Prompt(5), 20));
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().num_waiting == 1; }));
  runner_->set_step_delay(absl::Milliseconds(2));
  runner_->Resume();
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().num_running == 1; }));
  for (auto* s : {&a, &b}) EXPECT_TRUE(Collect(**s).final.status.ok());
  EXPECT_TRUE(WaitFor([&] {
    EngineStats st = engine_->Stats();
    return st.num_running == 0 && st.num_waiting == 0 && st.blocks_used == 0;
  }));
  EXPECT_EQ(engine_->Stats().preemptions_total, 0);
}

}  // namespace
}  // namespace funnel
