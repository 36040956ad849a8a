// Byte-level BPE building blocks (GPT-2 byte map, merge loop, regex pre-tokenizers) and the
// byte-level tokenizers' round trip and streaming decode on the shared vocabularies.
#include "runtime/text/byte_level_bpe.h"

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/text/bpe_merges.h"
#include "runtime/text/incremental_detokenizer.h"
#include "runtime/text/pretokenizer_regex.h"
#include "runtime/text/tokenizer_loader.h"
#include "tests/testing/test_data.h"
#include "tests/unit/text/text_test_util.h"

namespace funnel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ByteLevelMapTest, KnownCharactersAndRoundTrip) {
  EXPECT_EQ(BytesToByteLevel(" "), "\xC4\xA0");     // Ġ
  EXPECT_EQ(BytesToByteLevel("\n"), "\xC4\x8A");    // Ċ
  EXPECT_EQ(BytesToByteLevel("a!~"), "a!~");        // printable ASCII maps to itself
  EXPECT_EQ(BytesToByteLevel("\xAD"), "\xC5\x83");  // soft hyphen → U+0143, the last one
  EXPECT_EQ(BytesToByteLevel("\xE9"), "\xC3\xA9");  // Latin-1 é maps to itself
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  std::string back;
  ASSERT_TRUE(ByteLevelToBytes(BytesToByteLevel(all), back));
  EXPECT_EQ(back, all);
  EXPECT_FALSE(ByteLevelToBytes(" ", back));             // a raw space is not a symbol
  EXPECT_FALSE(ByteLevelToBytes("\xE4\xB8\xAD", back));  // nor is 中
  EXPECT_FALSE(ByteLevelToBytes("\xC5\x84", back));      // U+0144 is past the map
  EXPECT_FALSE(ByteLevelToBytes("\xC4", back));          // truncated
}

// The definition of BPE merging, written plainly: merge the leftmost lowest-rank pair until
// none is left.
std::vector<int32_t> ReferenceMerge(
    std::vector<int32_t> s, const std::map<std::pair<int32_t, int32_t>, std::pair<int, int>>& m) {
  while (true) {
    size_t best = s.size();
    int best_rank = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      auto it = m.find({s[i], s[i + 1]});
      if (it != m.end() && (best == s.size() || it->second.first < best_rank)) {
        best = i;
        best_rank = it->second.first;
      }
    }
    if (best == s.size()) return s;
    s[best] = m.at({s[best], s[best + 1]}).second;
    s.erase(s.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
}

TEST(BpeMergesTest, MatchesReferenceOnShortAndLongWords) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    // Symbols 0..3 merge pairwise into fresh ids; merged ids merge again with small symbols.
    std::map<std::pair<int32_t, int32_t>, std::pair<int, int>> table;
    BpeMerges merges;
    int32_t next_id = 4;
    for (int rank = 0; rank < 12; ++rank) {
      const int32_t l = static_cast<int32_t>(rng() % next_id);
      const int32_t r = static_cast<int32_t>(rng() % 4);
      if (table.contains({l, r})) continue;
      table[{l, r}] = {rank, next_id};
      merges.Add(l, r, rank, next_id);
      ++next_id;
    }
    const size_t len = trial % 2 ? 1 + rng() % 40 : 49 + rng() % 300;  // both merge paths
    std::vector<int32_t> word(len);
    for (int32_t& s : word) s = static_cast<int32_t>(rng() % 4);
    std::vector<int32_t> got = word;
    merges.MergeWord(got);
    ASSERT_EQ(got, ReferenceMerge(word, table)) << "trial " << trial << " len " << len;
  }
}

TEST(BpeMergesTest, TiesGoLeftAndNegativeSymbolsNeverMerge) {
  BpeMerges merges;
  merges.Add(1, 1, 0, 2);
  std::vector<int32_t> s = {1, 1, 1};
  merges.MergeWord(s);
  EXPECT_THAT(s, ElementsAre(2, 1));
  s = {1, -5, 1, 1};
  merges.MergeWord(s);
  EXPECT_THAT(s, ElementsAre(1, -5, 2));
  merges.Add(1, 1, 7, 9);  // a pair keeps its lowest rank
  EXPECT_EQ(merges.Find(1, 1)->merged, 2);
}

std::vector<std::string> Split(const std::string& preset, const std::string& text) {
  auto patterns = PreTokenizerPatterns(preset);
  EXPECT_TRUE(patterns.ok()) << patterns.status();
  auto pre = PreTokenizer::Create(*patterns);
  EXPECT_TRUE(pre.ok()) << pre.status();
  std::vector<std::string_view> pieces;
  (*pre)->Split(text, pieces);
  return std::vector<std::string>(pieces.begin(), pieces.end());
}

TEST(PreTokenizerTest, Gpt2Pattern) {
  EXPECT_THAT(Split("gpt-2", "Hello world's  123\n\nok"),
              ElementsAre("Hello", " world", "'s", " ", " 123", "\n", "\n", "ok"));
  EXPECT_THAT(Split("gpt-2", "I'LL go"), ElementsAre("I", "'", "LL", " go"));  // case-sensitive
}

TEST(PreTokenizerTest, Llama3AndQwen2DifferInDigits) {
  EXPECT_THAT(Split("llama3", "x 1234567"), ElementsAre("x", " ", "123", "456", "7"));
  EXPECT_THAT(Split("qwen2", "x 123"), ElementsAre("x", " ", "1", "2", "3"));
  EXPECT_THAT(Split("llama3", "I'LL go!!\n\n x"), ElementsAre("I", "'LL", " go", "!!\n\n", " x"));
}

TEST(PreTokenizerTest, SequenceOfPatternsSplitsPieces) {
  // starcoder: digits first, then GPT-2's pattern over what is left.
  EXPECT_THAT(Split("starcoder", "ab12 cd"), ElementsAre("ab", "1", "2", " cd"));
}

TEST(PreTokenizerTest, EveryByteLandsInOnePiece) {
  std::mt19937 rng(11);
  for (const char* preset : {"gpt-2", "llama3", "qwen2", "falcon", "default"}) {
    auto pre = *PreTokenizer::Create(*PreTokenizerPatterns(preset));
    for (int i = 0; i < 300; ++i) {
      std::string text = testing::RandomUtf8(rng, 1 + i % 60);
      if (i % 3 == 0) text[rng() % text.size()] = static_cast<char>(0x80 | (rng() % 0x7F));
      std::vector<std::string_view> pieces;
      pre->Split(text, pieces);
      std::string joined;
      for (std::string_view p : pieces) {
        ASSERT_FALSE(p.empty());
        joined += p;
      }
      ASSERT_EQ(joined, text) << preset << ": " << testing::Escape(text);
    }
  }
}

TEST(PreTokenizerTest, BadPatternIsAnError) {
  auto pre = PreTokenizer::Create({"(unclosed"});
  EXPECT_EQ(pre.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pre.status().message(), HasSubstr("(unclosed"));
}

class ByteLevelTokenizerTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    auto tok = LoadTokenizer(testing::SharedDataPath(GetParam()));
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = std::move(*tok);
    ASSERT_EQ(tok_->model(), "gpt2");
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_P(ByteLevelTokenizerTest, RoundTripsAnyText) {
  std::mt19937 rng(5);
  for (int i = 0; i < 1000; ++i) {
    std::string s = testing::RandomUtf8(rng, 1 + i % 50);
    if (i % 4 == 0) s += static_cast<char>(0x80 + rng() % 0x40);  // invalid UTF-8 too
    const auto ids = tok_->Encode(s, {.add_bos = false});
    ASSERT_EQ(tok_->Decode(ids), s) << testing::Escape(s);
  }
}

TEST_P(ByteLevelTokenizerTest, StreamingDecodeMatchesDecode) {
  std::mt19937 rng(6);
  for (int i = 0; i < 200; ++i) {
    const std::string s = testing::RandomUtf8(rng, 1 + i % 30);
    const auto ids = tok_->Encode(s, {.add_bos = false});
    IncrementalDetokenizer detok(*tok_);
    std::string streamed;
    for (int32_t id : ids) streamed += detok.Push(id);
    streamed += detok.Flush();
    ASSERT_EQ(streamed, s) << testing::Escape(s);
  }
  // An emoji split over byte tokens comes out whole, once its last byte arrives.
  const auto ids = tok_->Encode("\xF0\x9F\xA6\x99!", {.add_bos = false});
  ASSERT_GE(ids.size(), 2u);
  IncrementalDetokenizer detok(*tok_);
  std::string streamed;
  for (size_t k = 0; k + 1 < ids.size(); ++k) streamed += detok.Push(ids[k]);
  EXPECT_EQ(streamed, "\xF0\x9F\xA6\x99");
}

TEST_P(ByteLevelTokenizerTest, SpecialTokensOnlyWithParseSpecial) {
  const std::vector<int32_t>& eog = tok_->end_of_generation_ids();
  ASSERT_FALSE(eog.empty());
  const std::string marker = tok_->piece(eog.front());
  const std::string text = "a" + marker + "b";
  const auto plain = tok_->Encode(text, {.add_bos = false});
  for (int32_t id : plain) EXPECT_FALSE(tok_->IsControl(id)) << id;
  EXPECT_EQ(tok_->Decode(plain), text);
  const auto parsed = tok_->Encode(text, {.add_bos = false, .parse_special = true});
  ASSERT_EQ(parsed.size(), 3u);
  EXPECT_EQ(parsed[1], eog.front());
  EXPECT_EQ(tok_->Decode(parsed), "ab");  // control tokens decode to nothing
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, ByteLevelTokenizerTest,
                         ::testing::Values("tokenizers/gpt2", "tokenizers/qwen2",
                                           "tokenizers/llama3/tokenizer.model",
                                           "tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf"));

}  // namespace
}  // namespace funnel
