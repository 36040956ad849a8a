// tokenizer.json: files written here in the `tokenizers` library's format from the shared
// vocabularies (GPT-2 and Qwen2 vocab.json + merges.txt, Llama 2's SentencePiece pieces with
// merges derived as transformers' SentencePieceExtractor does) must reproduce the llama.cpp
// reference vectors, exactly as the original files do.
#include "runtime/text/tokenizer_json.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/sentencepiece_model.h"
#include "runtime/text/tokenizer.h"
#include "runtime/text/tokenizer_loader.h"
#include "tests/testing/test_data.h"
#include "tests/unit/text/tokenizer_files_util.h"
#include "tests/unit/text/tokenizer_vector_util.h"

namespace funnel {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

constexpr char kSpace[] = "\xE2\x96\x81";

Json ReadJsonFile(const std::string& relative) {
  return Json::parse(testing::ReadTextFile(testing::SharedDataPath(relative)));
}

// merges.txt lines (after the #version header) as "a b" strings or [a, b] pairs.
Json ReadMerges(const std::string& relative, bool as_pairs) {
  const std::string text = testing::ReadTextFile(testing::SharedDataPath(relative));
  Json merges = Json::array();
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line.starts_with("#version")) continue;
    if (!as_pairs) {
      merges.push_back(line);
    } else {
      const size_t space = line.find(' ', 1);
      merges.push_back(Json::array({line.substr(0, space), line.substr(space + 1)}));
    }
  }
  return merges;
}

Json AddedToken(int id, const std::string& content, bool special = true) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

Json BpeModel(Json vocab, Json merges) {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"ignore_merges", false},
          {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}};
}

std::unique_ptr<Tokenizer> LoadJson(const Json& tokenizer_json) {
  const auto dir = testing::FreshTempDir();
  testing::WriteJson(dir / "tokenizer.json", tokenizer_json);
  auto tok = LoadTokenizer((dir / "tokenizer.json").string());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(TokenizerJsonTest, Gpt2ByteLevel) {
  Json j;
  j["version"] = "1.0";
  j["added_tokens"] = Json::array({AddedToken(50256, "<|endoftext|>")});
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"},
                        {"add_prefix_space", false},
                        {"trim_offsets", true},
                        {"use_regex", true}};
  j["post_processor"] = {{"type", "ByteLevel"},
                         {"add_prefix_space", true},
                         {"trim_offsets", false},
                         {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["model"] = BpeModel(ReadJsonFile("tokenizers/gpt2/vocab.json"),
                        ReadMerges("tokenizers/gpt2/merges.txt", false));
  auto tok = LoadJson(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->model(), "gpt2");
  EXPECT_TRUE(tok->IsControl(50256));
  const auto cases =
      testing::ReadVectorCases("tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf.out");
  EXPECT_EQ(testing::CountMatchingVectors(*tok, cases), 46);
}

TEST(TokenizerJsonTest, Qwen2SplitThenByteLevelWithPairMerges) {
  Json j;
  j["added_tokens"] =
      Json::array({AddedToken(151643, "<|endoftext|>"), AddedToken(151644, "<|im_start|>"),
                   AddedToken(151645, "<|im_end|>")});
  j["normalizer"] = {{"type", "NFC"}};
  // Qwen2's own pattern, with the case-insensitive group as tokenizer.json has it.
  const std::string pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", Json::array({{{"type", "Split"},
                                                        {"pattern", {{"Regex", pattern}}},
                                                        {"behavior", "Isolated"},
                                                        {"invert", false}},
                                                       {{"type", "ByteLevel"},
                                                        {"add_prefix_space", false},
                                                        {"trim_offsets", false},
                                                        {"use_regex", false}}})}};
  j["post_processor"] = nullptr;
  j["model"] = BpeModel(ReadJsonFile("tokenizers/qwen2/vocab.json"),
                        ReadMerges("tokenizers/qwen2/merges.txt", true));
  auto tok = LoadJson(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 151646);
  EXPECT_EQ(tok->bos_id(), -1);
  const auto cases =
      testing::ReadVectorCases("tokenizers/llama.cpp-vocab/ggml-vocab-qwen2.gguf.out");
  EXPECT_EQ(testing::CountMatchingVectors(*tok, cases), 46);
  EXPECT_EQ(tok->Encode("<|im_start|>", {.parse_special = true}), std::vector<int32_t>{151644});
}

// Llama 2's tokenizer.json as transformers' LlamaConverter writes it: the SentencePiece pieces
// as the vocabulary, merges from every split of a piece into two pieces ordered by the piece's
// score, byte fallback, and either the legacy Prepend/Replace normalizers or Metaspace.
Json LlamaTokenizerJson(bool metaspace) {
  auto vocab = VocabularyFromSentencePiece(
      testing::ReadTextFile(testing::SharedDataPath("tokenizers/llama2/tokenizer.model")));
  EXPECT_TRUE(vocab.ok()) << vocab.status();
  absl::flat_hash_map<std::string, int32_t> ids;
  Json vocab_json = Json::object();
  for (int32_t id = 0; id < static_cast<int32_t>(vocab->tokens.size()); ++id) {
    ids[vocab->tokens[id]] = id;
    vocab_json[vocab->tokens[id]] = id;
  }
  std::vector<std::tuple<std::string, std::string, float>> merges;
  for (int32_t id = 0; id < static_cast<int32_t>(vocab->tokens.size()); ++id) {
    const std::string& piece = vocab->tokens[id];
    std::vector<std::tuple<std::string, std::string, float>> local;
    for (size_t k = 1; k < piece.size(); ++k) {
      if ((static_cast<uint8_t>(piece[k]) & 0xC0) == 0x80) continue;  // split at characters
      const std::string l = piece.substr(0, k), r = piece.substr(k);
      if (ids.contains(l) && ids.contains(r)) local.emplace_back(l, r, vocab->scores[id]);
    }
    std::sort(local.begin(), local.end(), [&](const auto& a, const auto& b) {
      return std::make_pair(ids[std::get<0>(a)], ids[std::get<1>(a)]) <
             std::make_pair(ids[std::get<0>(b)], ids[std::get<1>(b)]);
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(),
                   [](const auto& a, const auto& b) { return std::get<2>(a) > std::get<2>(b); });
  Json merges_json = Json::array();
  for (const auto& [l, r, score] : merges) merges_json.push_back(l + " " + r);

  Json j;
  j["added_tokens"] =
      Json::array({AddedToken(0, "<unk>"), AddedToken(1, "<s>"), AddedToken(2, "</s>")});
  if (metaspace) {
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"},
                          {"replacement", kSpace},
                          {"prepend_scheme", "first"},
                          {"split", false}};
  } else {
    j["normalizer"] = {
        {"type", "Sequence"},
        {"normalizers",
         Json::array(
             {{{"type", "Prepend"}, {"prepend", kSpace}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}})}};
    j["pre_tokenizer"] = nullptr;
  }
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})}};
  j["model"] = BpeModel(vocab_json, merges_json);
  j["model"]["unk_token"] = "<unk>";
  j["model"]["byte_fallback"] = true;
  j["model"]["fuse_unk"] = true;
  return j;
}

TEST(TokenizerJsonTest, LlamaSentencePieceStyleLegacyNormalizers) {
  auto tok = LoadJson(LlamaTokenizerJson(/*metaspace=*/false));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->model(), "bpe");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->unk_id(), 0);
  const auto cases =
      testing::ReadVectorCases("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf.out");
  EXPECT_EQ(testing::CountMatchingVectors(*tok, cases), 46);
  EXPECT_EQ(tok->Decode(tok->Encode(" Hello  world\xF0\x9F\xA6\x99")),
            " Hello  world\xF0\x9F\xA6\x99");
}

TEST(TokenizerJsonTest, LlamaSentencePieceStyleMetaspace) {
  auto tok = LoadJson(LlamaTokenizerJson(/*metaspace=*/true));
  ASSERT_NE(tok, nullptr);
  const auto cases =
      testing::ReadVectorCases("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf.out");
  EXPECT_EQ(testing::CountMatchingVectors(*tok, cases), 46);
  // prepend_scheme "first": no '▁' after a special token.
  const auto ids = tok->Encode("<s>hi", {.add_bos = false, .parse_special = true});
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok->piece(ids[1]), "hi");
}

// Llama 3's tokenizer.json shape (Split with its original regex, ByteLevel without regex,
// ignore_merges, TemplateProcessing BOS) over the tiktoken ranks, with every split of a token
// into two tokens as a merge ranked by the token's rank (tiktoken's own merge rule).
TEST(TokenizerJsonTest, Llama3ShapeFromTiktokenRanks) {
  auto base = LoadTokenizer(testing::SharedDataPath("tokenizers/llama3/tokenizer.model"));
  ASSERT_TRUE(base.ok()) << base.status();
  const Tokenizer& t = **base;
  Json vocab = Json::object();
  absl::flat_hash_map<std::string, int32_t> ids;
  for (int32_t id = 0; id < 128000; ++id) {
    vocab[t.piece(id)] = id;
    ids[t.piece(id)] = id;
  }
  std::vector<std::tuple<int32_t, int32_t, std::string, std::string>> merges;
  for (int32_t id = 0; id < 128000; ++id) {
    const std::string& p = t.piece(id);
    for (size_t k = 1; k < p.size(); ++k) {
      if ((static_cast<uint8_t>(p[k]) & 0xC0) == 0x80) continue;
      const std::string l = p.substr(0, k), r = p.substr(k);
      if (ids.contains(l) && ids.contains(r)) merges.emplace_back(id, ids[l], l, r);
    }
  }
  std::sort(merges.begin(), merges.end());
  Json merges_json = Json::array();
  for (const auto& [id, left, l, r] : merges) merges_json.push_back(l + " " + r);
  Json added = Json::array();
  for (int32_t id = 128000; id < t.vocab_size(); ++id) added.push_back(AddedToken(id, t.piece(id)));
  Json j;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  const std::string pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", Json::array({{{"type", "Split"},
                                                        {"pattern", {{"Regex", pattern}}},
                                                        {"behavior", "Isolated"},
                                                        {"invert", false}},
                                                       {{"type", "ByteLevel"},
                                                        {"add_prefix_space", false},
                                                        {"trim_offsets", true},
                                                        {"use_regex", false}}})}};
  j["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       Json::array({{{"type", "ByteLevel"}, {"add_prefix_space", true}},
                    {{"type", "TemplateProcessing"},
                     {"single", Json::array({{{"SpecialToken",
                                               {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})}}})}};
  j["model"] = BpeModel(vocab, merges_json);
  j["model"]["ignore_merges"] = true;
  auto tok = LoadJson(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), 128000);
  EXPECT_TRUE(tok->add_bos());
  const auto cases =
      testing::ReadVectorCases("tokenizers/llama.cpp-vocab/ggml-vocab-llama-bpe.gguf.out");
  EXPECT_EQ(testing::CountMatchingVectors(*tok, cases), 46);
}

TEST(TokenizerJsonTest, Errors) {
  auto message = [](const std::string& json) {
    auto v = VocabularyFromTokenizerJson(json);
    EXPECT_FALSE(v.ok());
    return std::string(v.status().message());
  };
  EXPECT_THAT(message("{not json"), HasSubstr("tokenizer.json: "));
  EXPECT_THAT(message(R"({"model": {"type": "Unigram", "vocab": []}})"),
              HasSubstr("model type 'Unigram' is not supported"));
  EXPECT_THAT(message(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})"),
              HasSubstr("need a ByteLevel or Metaspace"));
  EXPECT_THAT(message(R"({"model": {"type": "BPE", "vocab": {"a": -3}, "merges": []}})"),
              HasSubstr("id -3 is out of range"));
  EXPECT_THAT(message(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}})"),
              HasSubstr("merge 'ab' is not 'left right'"));
  EXPECT_THAT(message(R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"},
      "behavior": "Removed"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})"),
              HasSubstr("Split behavior 'Removed' is not supported"));
  EXPECT_THAT(message(R"({"pre_tokenizer": {"type": "Whitespace"},
      "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})"),
              HasSubstr("pre-tokenizer 'Whitespace' is not supported"));
  EXPECT_THAT(message(R"({"model": {"type": "BPE", "vocab": "nope", "merges": []}})"),
              HasSubstr("model.vocab is not an object"));
  EXPECT_THAT(message(R"({"vocab": {}})"), HasSubstr("model"));
}

}  // namespace
}  // namespace funnel
