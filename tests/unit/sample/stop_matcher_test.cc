#include "runtime/sample/stop_matcher.h"

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"

namespace funnel {
namespace {

// Brute-force reference over the whole text: the stop string that completes first (smallest end;
// among those ending together, the longest) cuts the text before its start.
struct Expected {
  std::string output;
  bool stopped = false;
  size_t stop_end = 0;  // Bytes received when the stop completes.
};

Expected Reference(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t longest = 0;
    for (const std::string& stop : stops) {
      if (stop.empty() || stop.size() > end || stop.size() <= longest) continue;
      if (text.compare(end - stop.size(), stop.size(), stop) == 0) longest = stop.size();
    }
    if (longest > 0) return {text.substr(0, end - longest), true, end};
  }
  return {text, false, 0};
}

// Bytes the matcher must hold back after receiving `received` (no stop yet): the longest suffix
// that is a proper prefix of some stop string (stop strings here start on character boundaries).
size_t ReferenceHeld(const std::string& received, const std::vector<std::string>& stops) {
  size_t held = 0;
  for (const std::string& stop : stops) {
    for (size_t len = 1; len < stop.size() && len <= received.size(); ++len) {
      if (received.compare(received.size() - len, len, stop, 0, len) == 0) {
        held = std::max(held, len);
      }
    }
  }
  return held;
}

bool IsCompleteUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80           ? 1
                       : (c >> 5) == 0x6  ? 2
                       : (c >> 4) == 0xE  ? 3
                       : (c >> 3) == 0x1E ? 4
                                          : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t j = 1; j < len; ++j) {
      if ((static_cast<unsigned char>(s[i + j]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

// Streams `chunks` through a matcher and checks it against the reference after every call.
void CheckStream(const std::vector<std::string>& chunks, const std::vector<std::string>& stops) {
  std::string text;
  for (const std::string& chunk : chunks) text += chunk;
  const Expected expected = Reference(text, stops);
  SCOPED_TRACE("text=\"" + text + "\" stops=" + std::to_string(stops.size()));

  StopStringMatcher matcher(stops);
  std::string received;
  std::string emitted;
  bool stopped = false;
  for (const std::string& chunk : chunks) {
    const StopStringMatcher::Result r = matcher.Push(chunk);
    if (stopped) {
      EXPECT_EQ(r.emit, "");
      EXPECT_TRUE(r.stopped);
      continue;
    }
    received += chunk;
    ASSERT_TRUE(IsCompleteUtf8(r.emit));
    emitted += r.emit;
    const bool should_stop = expected.stopped && received.size() >= expected.stop_end;
    ASSERT_EQ(r.stopped, should_stop) << "after " << received.size() << " bytes";
    stopped = r.stopped;
    if (!stopped) {
      ASSERT_EQ(emitted.size() + ReferenceHeld(received, stops), received.size());
      ASSERT_EQ(emitted, received.substr(0, emitted.size()));
    }
  }
  const std::string flushed = matcher.Flush();
  if (stopped) {
    EXPECT_EQ(flushed, "");
  }
  EXPECT_TRUE(IsCompleteUtf8(flushed));
  EXPECT_EQ(emitted + flushed, expected.output);
  EXPECT_EQ(stopped, expected.stopped);
}

std::vector<std::string> Split(const std::string& text, const std::vector<size_t>& sizes) {
  std::vector<std::string> chunks;
  size_t pos = 0;
  for (size_t size : sizes) {
    chunks.push_back(text.substr(pos, size));
    pos += size;
  }
  if (pos < text.size()) chunks.push_back(text.substr(pos));
  return chunks;
}

TEST(StopStringMatcherTest, NoStopsEmitsEverythingImmediately) {
  StopStringMatcher matcher({});
  EXPECT_EQ(matcher.Push("hello").emit, "hello");
  EXPECT_EQ(matcher.Push(" world").emit, " world");
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopStringMatcherTest, StopInOneChunk) {
  StopStringMatcher matcher({"END"});
  const StopStringMatcher::Result r = matcher.Push("abcENDxyz");
  EXPECT_EQ(r.emit, "abc");
  EXPECT_TRUE(r.stopped);
  const StopStringMatcher::Result after = matcher.Push("more");
  EXPECT_EQ(after.emit, "");
  EXPECT_TRUE(after.stopped);
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopStringMatcherTest, HoldsBackPossibleStartThenReleases) {
  StopStringMatcher matcher({"STOP"});
  StopStringMatcher::Result r = matcher.Push("abST");
  EXPECT_EQ(r.emit, "ab");
  EXPECT_FALSE(r.stopped);
  r = matcher.Push("O");
  EXPECT_EQ(r.emit, "");
  r = matcher.Push("x");
  EXPECT_EQ(r.emit, "STOx");
  r = matcher.Push("S");
  EXPECT_EQ(r.emit, "");
  EXPECT_EQ(matcher.Flush(), "S");
}

TEST(StopStringMatcherTest, StopLongerThanAnyChunk) {
  const std::string stop = "<|end_of_turn|>";
  const std::string text = "hi <|end_of_tu <|end_of_turn|> tail";
  std::vector<std::string> chunks;
  for (char c : text) chunks.emplace_back(1, c);
  CheckStream(chunks, {stop});
  StopStringMatcher matcher({stop});
  std::string emitted;
  bool stopped = false;
  for (const std::string& chunk : chunks) {
    const StopStringMatcher::Result r = matcher.Push(chunk);
    emitted += r.emit;
    stopped = r.stopped;
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(emitted, "hi <|end_of_tu ");
}

TEST(StopStringMatcherTest, FirstStopToCompleteWins) {
  // "bc" completes before "abcd" does, regardless of chunking.
  CheckStream({"abcd"}, {"abcd", "bc"});
  StopStringMatcher matcher({"abcd", "bc"});
  const StopStringMatcher::Result r = matcher.Push("xabcd");
  EXPECT_EQ(r.emit, "xa");
  EXPECT_TRUE(r.stopped);
}

TEST(StopStringMatcherTest, OverlappingStopsEndingTogetherCutAtLongest) {
  StopStringMatcher matcher({"ab", "aab"});
  StopStringMatcher::Result r = matcher.Push("xaa");
  EXPECT_EQ(r.emit, "x");
  r = matcher.Push("b!");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
  CheckStream({"xa", "a", "ab"}, {"aab", "ab"});
  CheckStream({"aaa", "b"}, {"ab", "aab"});
}

TEST(StopStringMatcherTest, SelfOverlappingStop) {
  CheckStream({"aa", "aa", "ab"}, {"aaab"});
  CheckStream({"ab", "ab", "ac"}, {"abac"});
}

TEST(StopStringMatcherTest, MultiByteCharacters) {
  CheckStream({"caf", "é ", "€", "😀!"}, {"é €"});
  CheckStream({"日本", "語で", "す。"}, {"語です"});
  StopStringMatcher matcher({"€uro"});
  StopStringMatcher::Result r = matcher.Push("1€");
  EXPECT_EQ(r.emit, "1");
  r = matcher.Push("u");
  EXPECT_EQ(r.emit, "");
  r = matcher.Push("ros");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopStringMatcherTest, NeverSplitsACharacterWhenStopStartsMidCharacter) {
  // A stop whose first bytes are the tail of "€" (E2 82 AC): holding back only those bytes would
  // split the character, so the whole character is held.
  StopStringMatcher matcher({"\x82\xACX"});
  StopStringMatcher::Result r = matcher.Push("a€");
  EXPECT_EQ(r.emit, "a");
  EXPECT_FALSE(r.stopped);
  r = matcher.Push("b");
  EXPECT_EQ(r.emit, "€b");
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopStringMatcherTest, EmptyStopStringsAreIgnored) {
  StopStringMatcher matcher({"", "z"});
  EXPECT_EQ(matcher.Push("abc").emit, "abc");
  EXPECT_TRUE(matcher.Push("yz").stopped);
}

TEST(StopStringMatcherTest, FlushWithoutStopReleasesHeldText) {
  StopStringMatcher matcher({"</s>"});
  EXPECT_EQ(matcher.Push("done</").emit, "done");
  EXPECT_EQ(matcher.Flush(), "</");
}

// Random strings over a small alphabet, random stop sets, random chunkings (including empty
// chunks) against the reference.
TEST(StopStringMatcherTest, RandomAsciiMatchesReference) {
  std::mt19937_64 rng(20240601);
  auto uniform = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::string alphabet = "abc";
  for (int c = 0; c < 5000; ++c) {
    std::string text;
    for (size_t n = uniform(40); n > 0; --n) text += alphabet[uniform(alphabet.size())];
    std::vector<std::string> stops;
    for (size_t n = 1 + uniform(3); n > 0; --n) {
      std::string stop;
      for (size_t len = 1 + uniform(6); len > 0; --len) stop += alphabet[uniform(alphabet.size())];
      stops.push_back(stop);
    }
    std::vector<size_t> sizes;
    for (size_t total = 0; total < text.size();) {
      sizes.push_back(uniform(5));
      total += sizes.back();
    }
    CheckStream(Split(text, sizes), stops);
    if (HasFatalFailure()) return;
  }
}

TEST(StopStringMatcherTest, RandomUtf8MatchesReference) {
  std::mt19937_64 rng(7);
  auto uniform = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::vector<std::string> chars = {"a", "é", "€", "😀", "b"};
  for (int c = 0; c < 3000; ++c) {
    std::vector<std::string> text_chars;
    for (size_t n = uniform(30); n > 0; --n) text_chars.push_back(chars[uniform(chars.size())]);
    std::vector<std::string> stops;
    for (size_t n = 1 + uniform(3); n > 0; --n) {
      std::string stop;
      for (size_t len = 1 + uniform(4); len > 0; --len) stop += chars[uniform(chars.size())];
      stops.push_back(stop);
    }
    // Chunks of whole characters.
    std::vector<std::string> chunks;
    for (size_t i = 0; i < text_chars.size();) {
      std::string chunk;
      for (size_t n = uniform(4); n > 0 && i < text_chars.size(); --n) chunk += text_chars[i++];
      chunks.push_back(chunk);
    }
    CheckStream(chunks, stops);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace funnel
