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
#include "runtime/text/tokenizer.h"

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

}  // namespace funnel::testing
