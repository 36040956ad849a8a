// Helpers for the server unit tests: a word vocabulary for the fake model runner and bounded
// waiting on a condition.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "runtime/text/tokenizer.h"

namespace funnel::testing {

// <unk>, <s>, </s>, then "▁w3", "▁w4", ...: token i >= 3 reads " w<i>" mid-text.
inline std::unique_ptr<Tokenizer> MakeWordTokenizer(int32_t vocab_size) {
  Vocabulary v;
  v.tokens = {"<unk>", "<s>", "</s>"};
  for (int32_t i = 3; i < vocab_size; ++i) v.tokens.push_back(absl::StrCat("\xE2\x96\x81w", i));
  auto t = Tokenizer::FromVocab(std::move(v));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

// Polls `pred` every millisecond until it holds or `timeout` passes; returns its last value.
template <typename Pred>
bool WaitUntil(Pred pred, absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return pred();
}

}  // namespace funnel::testing
