// The engine's building blocks: KV footprint arithmetic, logprobs, output streams, the inbox.
#include <gtest/gtest.h>

#include <thread>

#include "runtime/engine/inbox.h"
#include "runtime/engine/kv_footprint.h"
#include "runtime/engine/logprobs.h"
#include "runtime/engine/output_stream.h"
#include "runtime/exec/fake_model_runner.h"
#include "runtime/sample/sampler.h"

namespace funnel {
namespace {

TEST(KvFootprintTest, FreshAndForkBlocks) {
  LayerBudgets full;
  full.prompt_tokens = 10;
  full.selected.assign(3, 0);
  const auto final_lengths = FreshFinalLengths(full, 3, 6);
  EXPECT_EQ(final_lengths, (std::vector<int64_t>{16, 16, 16}));
  EXPECT_EQ(FreshBlocks(final_lengths, 4), 12);
  EXPECT_EQ(FreshBlocks(final_lengths, 5), 12);  // ceil(16 / 5) = 4 per layer

  const KvPolicy pyramid{.method = KvMethod::kPyramidKv, .budget = 12, .window = 4};
  const LayerBudgets b = ComputeLayerBudgets(pyramid, 3, 100);
  ASSERT_TRUE(b.compress);
  const auto compressed = FreshFinalLengths(b, 3, 2);
  for (int32_t l = 0; l < 3; ++l) EXPECT_EQ(compressed[l], b.stored(l) + 2);

  // A fork of layers holding 6 and 8 entries (block 4): the partial block of layer 0 is copied.
  const std::vector<int64_t> base = {6, 8};
  const auto fork_final = ForkFinalLengths(base, 3, 2);
  EXPECT_EQ(fork_final, (std::vector<int64_t>{11, 13}));
  EXPECT_EQ(ForkBlocks(base, fork_final, 4), (3 - 1) + (4 - 2));
}

TEST(KvFootprintTest, GenerationReserveIsCappedByTheContext) {
  EXPECT_EQ(GenerationReserve(16, 10, 512), 16);
  EXPECT_EQ(GenerationReserve(1000, 500, 512), 12);
  EXPECT_EQ(GenerationReserve(5, 512, 512), 0);
}

TEST(KvFootprintTest, RemainingBlocksMatchWhatTheRunnerTakes) {
  FakeRunnerOptions o;
  o.num_layers = 2;
  o.block_size = 4;
  o.num_blocks = 64;
  FakeModelRunner runner(o);
  SequenceKv base = runner.NewSequence();
  std::vector<int32_t> prompt(6, 5);
  std::vector<float> logits;
  StepSequence s{&base, prompt, false, nullptr};
  ASSERT_TRUE(runner.Step({&s, 1}, logits).ok());
  SequenceKv fork = base.Fork(runner.pool());
  const std::vector<int64_t> lengths = {6, 6};
  const auto final_lengths = ForkFinalLengths(lengths, 3, 4);  // 13 entries per layer
  const int64_t predicted = ForkBlocks(lengths, final_lengths, 4);
  EXPECT_EQ(RemainingBlocks(fork, runner.pool(), final_lengths), predicted);
  const int32_t free_before = runner.pool().num_free();
  std::vector<int32_t> suffix(3, 7);
  StepSequence f{&fork, suffix, false, nullptr};
  ASSERT_TRUE(runner.Step({&f, 1}, logits).ok());
  for (int i = 0; i < 4; ++i) {
    const int32_t t = 9;
    StepSequence d{&fork, std::span<const int32_t>(&t, 1), false, nullptr};
    ASSERT_TRUE(runner.Step({&d, 1}, logits).ok());
  }
  EXPECT_EQ(free_before - runner.pool().num_free(), predicted);
  EXPECT_EQ(RemainingBlocks(fork, runner.pool(), final_lengths), 0);
  runner.Release(fork);
  runner.Release(base);
  EXPECT_EQ(runner.pool().num_used(), 0);
}

TEST(LogprobsTest, ChosenMatchesTheSamplersProcessedDistribution) {
  std::vector<float> logits = {1.0f, 3.0f, -2.0f, 0.5f, 2.5f, 3.0f};
  const std::vector<int32_t> prompt = {1, 4};
  const std::vector<int32_t> generated = {4, 4, 3};
  SamplingParams p;
  p.temperature = 0.7f;
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.2f;
  p.frequency_penalty = 0.1f;
  p.top_k = 3;
  p.seed = 5;
  Sampler sampler(p, 0);
  std::vector<float> scratch;
  for (int i = 0; i < 5; ++i) {
    const int32_t chosen = sampler.Sample(logits, prompt, generated);
    TokenLogprobs lp = ComputeLogprobs(logits, p, prompt, generated, chosen, 3, scratch);
    EXPECT_EQ(lp.chosen.token, chosen);
    EXPECT_NEAR(lp.chosen.logprob, sampler.last_logprob(), 1e-5f);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_GE(lp.top[0].logprob, lp.top[1].logprob);
    EXPECT_GE(lp.top[1].logprob, lp.top[2].logprob);
  }
  // Ties go to the lower id; greedy uses temperature 1.
  p = SamplingParams{};
  p.temperature = 0.0f;
  TokenLogprobs g = ComputeLogprobs(logits, p, {}, {}, 1, 2, scratch);
  EXPECT_EQ(g.top[0].token, 1);
  EXPECT_EQ(g.top[1].token, 5);
  EXPECT_FLOAT_EQ(g.top[0].logprob, g.top[1].logprob);
  double sum = 0;
  for (float l : logits) sum += std::exp(l - 3.0);
  EXPECT_NEAR(g.chosen.logprob, -std::log(sum), 1e-5);
}

TEST(OutputStreamTest, DeliversInOrderThenEnds) {
  OutputStream s;
  EXPECT_FALSE(s.Next(absl::Milliseconds(1)).has_value());
  s.Push(TokenEvent{.token = 3, .text = "a", .logprob = std::nullopt, .top_logprobs = {}});
  FinalEvent f;
  f.finish_reason = "stop";
  s.Finish(f);
  s.Push(
      TokenEvent{.token = 4, .text = "b", .logprob = std::nullopt, .top_logprobs = {}});  // ignored
  s.Finish(FinalEvent{});                                                                 // ignored
  EXPECT_TRUE(s.finished());
  auto e1 = s.Next(absl::ZeroDuration());
  ASSERT_TRUE(e1.has_value());
  EXPECT_EQ(std::get<TokenEvent>(*e1).token, 3);
  auto e2 = s.Next(absl::InfiniteDuration());
  ASSERT_TRUE(e2.has_value());
  EXPECT_EQ(std::get<FinalEvent>(*e2).finish_reason, "stop");
  EXPECT_FALSE(s.Next(absl::InfiniteDuration()).has_value());  // returns at once
}

TEST(OutputStreamTest, WakesAWaitingConsumer) {
  OutputStream s;
  std::thread producer([&] {
    absl::SleepFor(absl::Milliseconds(20));
    s.Push(TokenEvent{.token = 7, .text = "", .logprob = std::nullopt, .top_logprobs = {}});
  });
  auto e = s.Next(absl::Seconds(10));
  producer.join();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(std::get<TokenEvent>(*e).token, 7);
  s.RequestCancel();
  EXPECT_TRUE(s.cancel_requested());
}

TEST(OutputStreamTest, ListenerDrainsWithoutBlocking) {
  OutputStream s;
  s.Push(TokenEvent{.token = 1, .text = "", .logprob = std::nullopt, .top_logprobs = {}});
  std::vector<int32_t> seen;
  bool final_seen = false;
  int calls = 0;
  s.SetListener([&] {
    ++calls;
    while (auto e = s.Next(absl::ZeroDuration())) {
      if (auto* t = std::get_if<TokenEvent>(&*e)) {
        seen.push_back(t->token);
      } else {
        final_seen = true;
      }
    }
  });
  EXPECT_EQ(calls, 1) << "called at once for the event already waiting";
  EXPECT_EQ(seen, std::vector<int32_t>{1});
  for (int32_t t = 2; t <= 4; ++t) {
    s.Push(TokenEvent{.token = t, .text = "", .logprob = std::nullopt, .top_logprobs = {}});
  }
  s.Finish(FinalEvent{});
  EXPECT_EQ(calls, 5);
  EXPECT_EQ(seen, (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_TRUE(final_seen);
  s.SetListener(nullptr);
  s.Push(
      TokenEvent{.token = 9, .text = "", .logprob = std::nullopt, .top_logprobs = {}});  // ignored
  EXPECT_EQ(calls, 5);
  OutputStream empty;
  empty.SetListener([&] { ++calls; });
  EXPECT_EQ(calls, 5) << "no call when nothing waits";
}

TEST(InboxTest, PushWakeAndClose) {
  Inbox inbox;
  std::thread waker([&] {
    absl::SleepFor(absl::Milliseconds(20));
    inbox.Wake();
  });
  const absl::Time t0 = absl::Now();
  inbox.Wait(absl::Seconds(10));
  waker.join();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  EngineCommand c = ShutdownCommand{absl::Now()};
  EXPECT_TRUE(inbox.Push(c));
  inbox.Wait(absl::Seconds(10));  // returns at once: a command is queued
  EXPECT_EQ(inbox.TakeAll().size(), 1u);
  EngineCommand d = ShutdownCommand{absl::Now()};
  EXPECT_TRUE(inbox.Push(d));
  EXPECT_EQ(inbox.Close().size(), 1u);
  EngineCommand late = ShutdownCommand{absl::Now()};
  EXPECT_FALSE(inbox.Push(late));
}

TEST(EngineConfigTest, Validate) {
  EXPECT_TRUE(EngineConfig{}.Validate().ok());
  EngineConfig c;
  c.max_num_seqs = 0;
  EXPECT_FALSE(c.Validate().ok());
  c = EngineConfig{};
  c.max_tokens_per_step = 0;
  EXPECT_FALSE(c.Validate().ok());
  c = EngineConfig{};
  c.replica_id = "a b";
  EXPECT_FALSE(c.Validate().ok());
  c = EngineConfig{};
  c.default_kv_policy.method = KvMethod::kSnapKv;  // no budget
  EXPECT_FALSE(c.Validate().ok());
  c = EngineConfig{};
  c.session_ttl = absl::ZeroDuration();
  EXPECT_FALSE(c.Validate().ok());
}

}  // namespace
}  // namespace funnel
