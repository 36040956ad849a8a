// Helpers for engine tests: a tiny vocabulary for the fake runner, draining output streams.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/output_stream.h"
#include "runtime/exec/fake_model_runner.h"
#include "runtime/text/tokenizer.h"
#include "spdlog/spdlog.h"

namespace funnel::testing {

// <unk>, <s>, </s>, then "▁w3", "▁w4", ...: token i >= 3 decodes to " w<i>".
inline std::unique_ptr<Tokenizer> MakeFakeTokenizer(int32_t vocab_size) {
  Vocabulary v;
  v.tokens = {"<unk>", "<s>", "</s>"};
  for (int32_t i = 3; i < vocab_size; ++i) v.tokens.push_back(absl::StrCat("\xE2\x96\x81w", i));
  auto t = Tokenizer::FromVocab(std::move(v));
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

struct Collected {
  std::vector<int32_t> tokens;
  std::vector<TokenEvent> events;
  std::string text;  // token texts + final text
  FinalEvent final;
  bool done = false;
};

// Reads events until the FinalEvent (or `timeout` without any event).
inline Collected Collect(OutputStream& stream, absl::Duration timeout = absl::Seconds(20)) {
  Collected c;
  for (;;) {
    std::optional<OutputStream::Event> e = stream.Next(timeout);
    if (!e.has_value()) return c;
    if (auto* t = std::get_if<TokenEvent>(&*e)) {
      c.tokens.push_back(t->token);
      c.text += t->text;
      c.events.push_back(*t);
    } else {
      c.final = std::get<FinalEvent>(*e);
      c.text += c.final.text;
      c.done = true;
      return c;
    }
  }
}

inline GenerateRequest MakeRequest(std::vector<int32_t> prompt, int32_t max_tokens, std::string id = "") {
  GenerateRequest r;
  r.request_id = std::move(id);
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  return r;
}

// Polls `pred` every millisecond for up to `timeout`.
template <typename Pred>
bool WaitFor(Pred pred, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return pred();
}

// An engine over the fake runner; checks at teardown that every block went back to the pool.
class FakeEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::warn); }

  void StartEngine(FakeRunnerOptions ro = {}, EngineConfig ec = {}) {
    runner_ = std::make_unique<FakeModelRunner>(ro);
    tokenizer_ = MakeFakeTokenizer(ro.vocab_size);
    auto e = Engine::Create(ec, runner_.get(), tokenizer_.get());
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }

  void TearDown() override {
    engine_.reset();
    if (runner_ != nullptr) {
      EXPECT_EQ(runner_->pool().num_used(), 0) << "blocks leaked";
    }
  }

  // The fake runner's next n tokens after `last` at `position`.
  std::vector<int32_t> Chain(int32_t last, int64_t position, int n) const {
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
      last = runner_->NextToken(last, position++);
      out.push_back(last);
    }
    return out;
  }

  std::unique_ptr<FakeModelRunner> runner_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace funnel::testing
