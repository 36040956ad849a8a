#include "runtime/text/tokenizer.h"

#include <cstdint>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/gguf_file.h"
#include "runtime/model/gguf_writer.h"
#include "tests/testing/test_data.h"
#include "tests/unit/text/text_test_util.h"

namespace funnel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kStoriesGguf[] = "models/stories260K/stories260K.gguf";
constexpr char kLlamaSpmGguf[] = "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Splits a llama.cpp .inp file as its test harness does: strings separated by
// "\n__ggml_vocab_test__\n"; the file ends with a separator, which closes the last string.
std::vector<std::string> ReadInputs(const std::string& path) {
  const std::string raw = ReadFile(path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  size_t pos = 0;
  while (pos < raw.size()) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      inputs.push_back(raw.substr(pos));
      break;
    }
    inputs.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  return inputs;
}

// One line of space-separated ids per input.
std::vector<std::vector<int32_t>> ReadOutputs(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<std::vector<int32_t>> outputs;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    int32_t id;
    while (ls >> id) ids.push_back(id);
    outputs.push_back(std::move(ids));
  }
  return outputs;
}

int CountMatchingVectors(const Tokenizer& tok, const std::vector<std::string>& inputs,
                         const std::vector<std::vector<int32_t>>& expected) {
  int matches = 0;
  for (size_t i = 0; i < inputs.size() && i < expected.size(); ++i) {
    const std::vector<int32_t> ids = tok.Encode(inputs[i], {.add_bos = false});
    EXPECT_EQ(ids, expected[i]) << "input " << i << ": '" << inputs[i] << "'";
    matches += ids == expected[i];
  }
  return matches;
}

TEST(TokenizerTest, LlamaSpmVectors) {
  auto tok = testing::LoadTokenizer(kLlamaSpmGguf);
  const std::string base = testing::SharedDataPath(kLlamaSpmGguf);
  const auto inputs = ReadInputs(base + ".inp");
  const auto expected = ReadOutputs(base + ".out");
  ASSERT_EQ(inputs.size(), 46u);
  ASSERT_EQ(expected.size(), 46u);
  EXPECT_EQ(CountMatchingVectors(*tok, inputs, expected), 46);
}

TEST(TokenizerTest, Tok512Vectors) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  const auto inputs = ReadInputs(testing::SharedDataPath(std::string(kLlamaSpmGguf) + ".inp"));
  const auto expected = ReadOutputs(testing::SharedDataPath("models/stories260K/tok512.test.out"));
  ASSERT_EQ(inputs.size(), 46u);
  ASSERT_EQ(expected.size(), 46u);
  EXPECT_EQ(CountMatchingVectors(*tok, inputs, expected), 46);
}

TEST(TokenizerTest, StoriesMetadata) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);
  EXPECT_EQ(tok->pad_id(), -1);  // stored as 0xFFFFFFFF
  EXPECT_TRUE(tok->add_bos());
  EXPECT_TRUE(tok->IsControl(1));
  EXPECT_TRUE(tok->IsControl(2));
  EXPECT_FALSE(tok->IsControl(0));
  EXPECT_FALSE(tok->IsControl(403));
  EXPECT_TRUE(tok->IsEndOfGeneration(2));
  EXPECT_FALSE(tok->IsEndOfGeneration(1));
  EXPECT_EQ(tok->piece(261),
            "\xE2\x96\x81"
            "a");
  EXPECT_EQ(tok->TokenToPiece(261), " a");
  EXPECT_EQ(tok->TokenToPiece(1), "");
  EXPECT_EQ(tok->TokenToPiece(3 + 0x41), "A");
  EXPECT_EQ(tok->TokenToPiece(-1), "");
  EXPECT_EQ(tok->TokenToPiece(512), "");
  EXPECT_EQ(tok->piece(9999), "");
}

TEST(TokenizerTest, StoriesPromptWithBos) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  EXPECT_THAT(tok->Encode("Once upon a time"), ElementsAre(1, 403, 407, 261, 378));
  EXPECT_THAT(tok->Encode("Once upon a time", {.add_bos = false}), ElementsAre(403, 407, 261, 378));
  EXPECT_THAT(tok->Encode(""), ElementsAre(1));
  EXPECT_THAT(tok->Encode("", {.add_bos = false}), ElementsAre());
}

TEST(TokenizerTest, SpacePrefixOption) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  // "a" alone vs. "▁a" with the prefix.
  const auto with = tok->Encode("a", {.add_bos = false});
  const auto without = tok->Encode("a", {.add_bos = false, .add_space_prefix = false});
  EXPECT_THAT(with, ElementsAre(261));
  ASSERT_EQ(without.size(), 1u);
  EXPECT_EQ(tok->piece(without[0]), "a");
}

TEST(TokenizerTest, DecodesReferenceGeneration) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  const auto ref = nlohmann::json::parse(
      ReadFile(testing::SharedDataPath("models/stories260K/stories260K.ref_greedy48.json")));
  const auto full = ref["full_sequence_incl_last_prediction"].get<std::vector<int32_t>>();
  const auto fed = ref["token_sequence_fed"].get<std::vector<int32_t>>();
  const auto text = ref["decoded_text"].get<std::string>();
  // decoded_text covers every token including the last prediction (" to").
  EXPECT_EQ(tok->Decode(full), text);
  EXPECT_EQ(tok->Decode(fed) + " to", text);
  EXPECT_EQ(tok->Encode(ref["prompt"].get<std::string>()),
            ref["prompt_ids_with_bos"].get<std::vector<int32_t>>());
}

TEST(TokenizerTest, ControlTokensAreNotParsedFromText) {
  auto tok = testing::LoadTokenizer(kLlamaSpmGguf);
  const auto ids = tok->Encode("<s>hello</s>", {.add_bos = false});
  for (int32_t id : ids) {
    EXPECT_FALSE(tok->IsControl(id)) << id;
  }
  EXPECT_EQ(tok->Decode(ids), "<s>hello</s>");
  const auto with_bos = tok->Encode("<s>");
  ASSERT_GE(with_bos.size(), 2u);
  EXPECT_EQ(with_bos[0], 1);
  EXPECT_NE(with_bos[1], 1);
}

TEST(TokenizerTest, ByteFallback) {
  auto tok = testing::LoadTokenizer(kStoriesGguf);
  // U+1F999 is not in the 512-token vocabulary: four byte tokens (<0xNN> = id 3 + NN).
  const auto ids = tok->Encode("\xF0\x9F\xA6\x99", {.add_bos = false});
  EXPECT_THAT(ids, ElementsAre(410, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99));
  EXPECT_EQ(tok->Decode(ids), "\xF0\x9F\xA6\x99");
  // Invalid UTF-8 input survives byte by byte.
  const std::string invalid =
      "a\x80\xFF"
      "b\xE4";
  EXPECT_EQ(tok->Decode(tok->Encode(invalid)), invalid);
}

TEST(TokenizerTest, DecodeStripsOnlyTheFirstLeadingSpace) {
  auto tok = testing::LoadTokenizer(kLlamaSpmGguf);
  EXPECT_EQ(tok->Decode(tok->Encode("  two spaces")), "  two spaces");
  EXPECT_EQ(tok->Decode(tok->Encode(" ")), " ");
  const std::vector<int32_t> hello = {1, 15043, 3186};  // <s> ▁Hello ▁world
  EXPECT_EQ(tok->Decode(hello), "Hello world");
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{3186}), "world");
  EXPECT_EQ(tok->TokenToLeadingPiece(3186), "world");
  EXPECT_EQ(tok->TokenToLeadingPiece(3 + 0x20), " ");  // byte tokens are never stripped
}

TEST(TokenizerTest, RoundTripProperty) {
  auto stories = testing::LoadTokenizer(kStoriesGguf);
  auto llama = testing::LoadTokenizer(kLlamaSpmGguf);
  std::mt19937 rng(20240607);
  for (int i = 0; i < 3000; ++i) {
    const std::string s = testing::RandomUtf8(rng, 1 + i % 40);
    for (const Tokenizer* tok : {stories.get(), llama.get()}) {
      ASSERT_EQ(tok->Decode(tok->Encode(s)), s) << testing::Escape(s);
      ASSERT_EQ(tok->Decode(tok->Encode(s, {.add_bos = false})), s) << testing::Escape(s);
    }
  }
}

TEST(TokenizerTest, LongInput) {
  auto tok = testing::LoadTokenizer(kLlamaSpmGguf);
  std::mt19937 rng(3);
  std::string text;
  while (text.size() < (1 << 20)) text += testing::RandomUtf8(rng, 64);
  const auto ids = tok->Encode(text);
  EXPECT_GT(ids.size(), 100000u);
  EXPECT_EQ(tok->Decode(ids), text);
}

TEST(TokenizerTest, LoadsFullLlama2Vocab) {
  auto tok = testing::LoadTokenizer("models/random-weights/llama-2-tiny-random.gguf");
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_THAT(tok->Encode("Hello world"), ElementsAre(1, 15043, 3186));
  EXPECT_EQ(tok->Decode(tok->Encode("Hello world")), "Hello world");
}

Vocabulary TinyVocab() {
  Vocabulary v;
  v.tokens = {"<unk>",
              "<s>",
              "</s>",
              "\xE2\x96\x81",
              "a",
              "b",
              "ab",
              "\xE2\x96\x81"
              "ab",
              "<0x63>",
              "<|user|>"};
  v.scores = {0, 0, 0, -1, -2, -3, -4, -5, 0, 0};
  v.types = {TokenType::kUnknown, TokenType::kControl,    TokenType::kControl, TokenType::kNormal,
             TokenType::kNormal,  TokenType::kNormal,     TokenType::kNormal,  TokenType::kNormal,
             TokenType::kByte,    TokenType::kUserDefined};
  return v;
}

TEST(TokenizerVocabTest, UserDefinedPiecesMatchWhole) {
  auto tok = Tokenizer::FromVocab(TinyVocab());
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "ab<|user|>ab" → ▁ab <|user|> ab
  EXPECT_THAT((*tok)->Encode("ab<|user|>ab", {.add_bos = false}), ElementsAre(7, 9, 6));
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{7, 9, 6}), "ab<|user|>ab");
}

TEST(TokenizerVocabTest, UnknownWithoutByteTokens) {
  auto tok = Tokenizer::FromVocab(TinyVocab());
  ASSERT_TRUE(tok.ok()) << tok.status();
  // 'c' has a byte token; 'x' and 'y' have none and collapse into one unk.
  EXPECT_THAT((*tok)->Encode("cxy", {.add_bos = false}), ElementsAre(3, 8, 0));
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{0}), " \xE2\x81\x87 ");
}

TEST(TokenizerVocabTest, UnusedPiecesAreSplitBack) {
  Vocabulary v = TinyVocab();
  v.types[6] = TokenType::kUnused;  // "ab" may be formed but is never emitted
  v.scores[6] = 10;
  auto tok = Tokenizer::FromVocab(v);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("ab", {.add_bos = false, .add_space_prefix = false}),
              ElementsAre(4, 5));
}

TEST(TokenizerVocabTest, MissingTypesAreInferred) {
  Vocabulary v = TinyVocab();
  v.types.clear();
  v.scores.clear();
  auto tok = Tokenizer::FromVocab(v);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_TRUE((*tok)->IsControl(1));
  EXPECT_EQ((*tok)->type(0), TokenType::kUnknown);
  EXPECT_EQ((*tok)->type(8), TokenType::kByte);
  EXPECT_EQ((*tok)->TokenToPiece(8), "c");
}

TEST(TokenizerVocabTest, RejectsInconsistentVocab) {
  Vocabulary v = TinyVocab();
  v.scores.pop_back();
  EXPECT_THAT(Tokenizer::FromVocab(v).status().message(), HasSubstr("scores has 9 entries"));
  v = TinyVocab();
  v.types.push_back(TokenType::kNormal);
  EXPECT_THAT(Tokenizer::FromVocab(v).status().message(), HasSubstr("token_type has 11"));
  v = TinyVocab();
  v.eos_id = 10;
  EXPECT_THAT(Tokenizer::FromVocab(v).status().message(),
              HasSubstr("eos_token_id 10 is out of range"));
  v = TinyVocab();
  v.types[4] = static_cast<TokenType>(9);
  EXPECT_EQ(Tokenizer::FromVocab(v).status().code(), absl::StatusCode::kInvalidArgument);
  v = TinyVocab();
  v.types[4] = TokenType::kByte;  // "a" is not <0xNN>
  EXPECT_THAT(Tokenizer::FromVocab(v).status().message(), HasSubstr("expected <0xNN>"));
  v = TinyVocab();
  v.tokens.clear();
  v.scores.clear();
  v.types.clear();
  EXPECT_EQ(Tokenizer::FromVocab(v).status().code(), absl::StatusCode::kInvalidArgument);
}

// Builds a GGUF with tokenizer metadata for the validation tests.
absl::StatusOr<std::unique_ptr<Tokenizer>> FromMetadata(const std::string& model, int n_scores,
                                                        int32_t bos_id) {
  GgufWriter w;
  w.AddString("tokenizer.ggml.model", model);
  w.AddStringArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"});
  w.AddFloat32Array("tokenizer.ggml.scores", std::vector<float>(n_scores, 0.0f));
  w.AddInt32Array("tokenizer.ggml.token_type", {2, 3, 3, 1});
  w.AddUint32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(bos_id));
  const std::vector<uint8_t> bytes = w.Serialize();
  auto gguf = GgufFile::FromBytes(bytes);
  if (!gguf.ok()) return gguf.status();
  return Tokenizer::FromGguf(**gguf);
}

TEST(TokenizerGgufTest, ValidMetadata) {
  auto tok = FromMetadata("llama", 4, 1);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 4);
  EXPECT_EQ((*tok)->eos_id(), 2);  // default
}

TEST(TokenizerGgufTest, ScoresLengthMismatch) {
  const auto status = FromMetadata("llama", 3, 1).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("scores has 3 entries but tokenizer.ggml.tokens has 4"));
}

TEST(TokenizerGgufTest, IdOutOfRange) {
  const auto status = FromMetadata("llama", 4, 7).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("bos_token_id 7 is out of range"));
}

TEST(TokenizerGgufTest, NoneIdIsAccepted) {
  auto tok = FromMetadata("llama", 4, -1);  // 0xFFFFFFFF
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), -1);
  EXPECT_THAT((*tok)->Encode("a", {.add_space_prefix = false}), ElementsAre(3));
}

TEST(TokenizerGgufTest, UnsupportedModel) {
  const auto status = FromMetadata("bert", 4, 1).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "unsupported tokenizer model 'bert' (supported: 'llama' SentencePiece BPE, 'gpt2' "
            "byte-level BPE, 'bpe')");
}

TEST(TokenizerGgufTest, ByteLevelNeedsMerges) {
  const auto status = FromMetadata("gpt2", 4, 1).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("no tokenizer.ggml.merges"));
}

// A GGUF byte-level vocabulary: the bytes of "ab" and their merge, with a given pre-tokenizer.
absl::StatusOr<std::unique_ptr<Tokenizer>> ByteLevelGguf(const std::string& pre) {
  GgufWriter w;
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddString("tokenizer.ggml.pre", pre);
  w.AddStringArray("tokenizer.ggml.tokens", {"a", "b", "ab", "\xC4\xA0", "<|end|>"});
  w.AddInt32Array("tokenizer.ggml.token_type", {1, 1, 1, 1, 3});
  w.AddStringArray("tokenizer.ggml.merges", {"a b"});
  w.AddUint32("tokenizer.ggml.eos_token_id", 4);
  const std::vector<uint8_t> bytes = w.Serialize();
  auto gguf = GgufFile::FromBytes(bytes);
  if (!gguf.ok()) return gguf.status();
  return Tokenizer::FromGguf(**gguf);
}

TEST(TokenizerGgufTest, ByteLevelFromMetadata) {
  auto tok = ByteLevelGguf("gpt-2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->model(), "gpt2");
  EXPECT_FALSE((*tok)->add_bos());  // llama.cpp's default for GPT-2 vocabularies
  // "ab ab" → "ab", " ab": the space is its own symbol (Ġ) and "Ġab" is not a token.
  EXPECT_THAT((*tok)->Encode("ab ab"), ElementsAre(2, 3, 2));
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{2, 3, 2}), "ab ab");
  EXPECT_THAT((*tok)->Encode("ab<|end|>", {.parse_special = true}), ElementsAre(2, 4));
  EXPECT_TRUE((*tok)->IsEndOfGeneration(4));
}

TEST(TokenizerGgufTest, UnknownPreTokenizerListsKnownNames) {
  const auto status = ByteLevelGguf("klingon").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("unknown pre-tokenizer 'klingon'; known: gpt-2,"));
  EXPECT_THAT(status.message(), HasSubstr("llama3"));
  EXPECT_THAT(status.message(), HasSubstr("qwen2"));
}

TEST(TokenizerSpecialTest, ControlTokensParsedOnlyWhenAsked) {
  auto tok = testing::LoadTokenizer(kLlamaSpmGguf);
  const int32_t hi = tok->FindToken("\xE2\x96\x81hi");
  ASSERT_GE(hi, 0);
  // llama.cpp's rule: the text after a parsed special token gets the space prefix again.
  EXPECT_THAT(tok->Encode("<s>hi", {.add_bos = false, .parse_special = true}), ElementsAre(1, hi));
  EXPECT_THAT(tok->Encode("hi</s>", {.add_bos = false, .parse_special = true}), ElementsAre(hi, 2));
  const auto plain = tok->Encode("<s>hi</s>", {.add_bos = false});
  EXPECT_THAT(plain, ::testing::Not(::testing::Contains(1)));
  EXPECT_THAT(plain, ::testing::Not(::testing::Contains(2)));
  EXPECT_EQ(tok->Decode(plain), "<s>hi</s>");
}

TEST(TokenizerSpecialTest, FindTokenPrefersSpecialEntries) {
  auto tok = testing::LoadTokenizer(kLlamaSpmGguf);
  EXPECT_EQ(tok->FindToken("<s>"), 1);
  EXPECT_EQ(tok->FindToken("</s>"), 2);
  EXPECT_EQ(tok->FindToken("no such piece"), -1);
  EXPECT_THAT(tok->end_of_generation_ids(), ElementsAre(2));
}

TEST(TokenizerGgufTest, MissingTokenizer) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  const std::vector<uint8_t> bytes = w.Serialize();
  auto gguf = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  const auto status = Tokenizer::FromGguf(**gguf).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("tokenizer.ggml.model"));
}

}  // namespace
}  // namespace funnel
