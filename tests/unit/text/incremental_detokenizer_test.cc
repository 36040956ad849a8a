#include "runtime/text/incremental_detokenizer.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/text/tokenizer.h"
#include "tests/unit/text/text_test_util.h"

namespace funnel {
namespace {

constexpr char kStoriesGguf[] = "models/stories260K/stories260K.gguf";
constexpr char kLlamaSpmGguf[] = "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf";
constexpr char kReplacement[] = "\xEF\xBF\xBD";

int32_t ByteId(uint8_t b) { return 3 + b; }  // <0xNN> ids in both Llama-style vocabularies

// Streams `ids` through a detokenizer; every chunk must be valid UTF-8.
std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids,
                   bool strip_leading_space = true) {
  IncrementalDetokenizer detok(tok, strip_leading_space);
  std::string out;
  for (int32_t id : ids) {
    const std::string chunk = detok.Push(id);
    EXPECT_TRUE(testing::IsValidUtf8(chunk)) << testing::Escape(chunk);
    out += chunk;
  }
  const std::string rest = detok.Flush();
  EXPECT_TRUE(testing::IsValidUtf8(rest)) << testing::Escape(rest);
  return out + rest;
}

TEST(IncrementalDetokenizerTest, HoldsBackSplitCharacter) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  IncrementalDetokenizer detok(*tok);
  EXPECT_EQ(detok.Push(1), "");    // <s>
  EXPECT_EQ(detok.Push(410), "");  // "▁" at the start loses its space
  EXPECT_EQ(detok.Push(ByteId(0xF0)), "");
  EXPECT_EQ(detok.Push(ByteId(0x9F)), "");
  EXPECT_EQ(detok.Push(ByteId(0xA6)), "");
  EXPECT_EQ(detok.Push(ByteId(0x99)), "\xF0\x9F\xA6\x99");
  EXPECT_EQ(detok.Push(261), " a");
  EXPECT_EQ(detok.Flush(), "");
}

TEST(IncrementalDetokenizerTest, LeadingSpaceRule) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378};
  EXPECT_EQ(Stream(*tok, ids), "Once upon a time");
  EXPECT_EQ(Stream(*tok, ids, /*strip_leading_space=*/false), " Once upon a time");
}

TEST(IncrementalDetokenizerTest, InvalidBytesBecomeReplacement) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  IncrementalDetokenizer detok(*tok);
  EXPECT_EQ(detok.Push(ByteId(0x80)), kReplacement);  // lone continuation byte
  EXPECT_EQ(detok.Push(ByteId(0xE4)), "");
  EXPECT_EQ(detok.Push(ByteId('x')), std::string(kReplacement) + "x");  // E4 can never complete
  EXPECT_EQ(detok.Push(ByteId(0xC3)), "");
  EXPECT_EQ(detok.Flush(), kReplacement);  // truncated at the end
  IncrementalDetokenizer surrogate(*tok);
  EXPECT_EQ(surrogate.Push(ByteId(0xED)), "");
  EXPECT_EQ(surrogate.Push(ByteId(0xA0)), std::string(kReplacement) + kReplacement);
  EXPECT_EQ(surrogate.Flush(), "");
}

TEST(IncrementalDetokenizerTest, MatchesDecodeOnRandomText) {
  auto stories = testing::LoadTokenizer(kStoriesGguf);
  auto llama = testing::LoadTokenizer(kLlamaSpmGguf);
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    const std::string s = testing::RandomUtf8(rng, 1 + i % 32);
    for (const Tokenizer* tok : {stories.get(), llama.get()}) {
      const std::vector<int32_t> ids = tok->Encode(s);
      ASSERT_EQ(Stream(*tok, ids), tok->Decode(ids)) << testing::Escape(s);
    }
  }
}

// Random mixtures of vocabulary ids, whole characters spelled as byte tokens, and stray bytes.
std::vector<int32_t> RandomIds(std::mt19937& rng, const Tokenizer& tok, int n) {
  std::uniform_int_distribution<int32_t> any_id(0, tok.vocab_size() - 1);
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) {
    const uint32_t kind = rng() % 5;
    if (kind < 2) {
      ids.push_back(any_id(rng));
    } else if (kind < 4) {
      for (char c : testing::RandomUtf8(rng, 1)) ids.push_back(ByteId(static_cast<uint8_t>(c)));
    } else {
      ids.push_back(ByteId(static_cast<uint8_t>(0x80 + rng() % 0x80)));
    }
  }
  return ids;
}

TEST(IncrementalDetokenizerTest, RandomIdsNeverEmitInvalidUtf8) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  std::mt19937 rng(11);
  int compared = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::vector<int32_t> ids = RandomIds(rng, *tok, 1 + i % 16);
    const std::string streamed = Stream(*tok, ids);  // checks every chunk is valid
    const std::string decoded = tok->Decode(ids);
    if (testing::IsValidUtf8(decoded)) {
      ASSERT_EQ(streamed, decoded);
      ++compared;
    }
  }
  EXPECT_GT(compared, 300);
}

}  // namespace
}  // namespace funnel
