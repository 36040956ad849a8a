// LoadTokenizerAndTemplate: every kind of path it accepts, the side files of a Hugging Face
// directory, its errors, and robustness of the file parsers against corrupted input.
#include "runtime/text/tokenizer_loader.h"

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/sentencepiece_model.h"
#include "runtime/text/tiktoken.h"
#include "runtime/text/tokenizer_json.h"
#include "tests/testing/test_data.h"
#include "tests/unit/text/tokenizer_files_util.h"
#include "tests/unit/text/tokenizer_vector_util.h"

namespace funnel {
namespace {

using Json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

LoadedTokenizer MustLoad(const std::string& path) {
  auto loaded = LoadTokenizerAndTemplate(path);
  EXPECT_TRUE(loaded.ok()) << path << ": " << loaded.status();
  return loaded.ok() ? std::move(*loaded) : LoadedTokenizer{};
}

TEST(TokenizerLoaderTest, GgufFile) {
  const LoadedTokenizer l =
      MustLoad(testing::SharedDataPath("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf"));
  ASSERT_NE(l.tokenizer, nullptr);
  EXPECT_EQ(l.tokenizer->vocab_size(), 32000);
  EXPECT_THAT(l.eos_ids, ElementsAre(2));
  EXPECT_EQ(l.description, "ggml-vocab-llama-spm.gguf (GGUF SentencePiece BPE, 32000 tokens)");
  EXPECT_EQ(l.chat_template, "");
}

TEST(TokenizerLoaderTest, SentencePieceModelFiles) {
  const LoadedTokenizer v1 =
      MustLoad(testing::SharedDataPath("tokenizers/mistral/tokenizer.model.v1"));
  ASSERT_NE(v1.tokenizer, nullptr);
  EXPECT_EQ(v1.tokenizer->model(), "llama");
  EXPECT_EQ(v1.tokenizer->vocab_size(), 32000);
  EXPECT_EQ(v1.tokenizer->FindToken("[INST]"), -1);  // text in the v1 vocabulary
  const LoadedTokenizer v7 = MustLoad(
      testing::SharedDataPath("tokenizers/mistral/mistral_instruct_tokenizer_241114.model.v7"));
  ASSERT_NE(v7.tokenizer, nullptr);
  EXPECT_EQ(v7.tokenizer->vocab_size(), 32768);
  EXPECT_EQ(v7.tokenizer->FindToken("[SYSTEM_PROMPT]"), 16);
  EXPECT_TRUE(v7.tokenizer->IsControl(16));
  EXPECT_EQ(v7.tokenizer->type(770), TokenType::kUserDefined);  // [REFERENCE_DOC_0]
  // User-defined pieces are matched whole in text; control pieces are not.
  const auto ids = v7.tokenizer->Encode("[REFERENCE_DOC_0][INST]", {.add_bos = false});
  EXPECT_THAT(ids, ::testing::Contains(770));
  EXPECT_THAT(ids, ::testing::Not(::testing::Contains(3)));
  EXPECT_THAT(v7.tokenizer->Encode("[INST]", {.add_bos = false, .parse_special = true}),
              ElementsAre(3));
}

TEST(TokenizerLoaderTest, UnigramSentencePieceModelIsRejected) {
  auto l = LoadTokenizerAndTemplate(
      testing::SharedDataPath("tokenizers/sentencepiece-test/test_model.model"));
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(l.status().message(),
              HasSubstr("SentencePiece model type UNIGRAM (1) is not supported"));
  EXPECT_THAT(l.status().message(), HasSubstr("test_model.model"));
}

TEST(TokenizerLoaderTest, Llama3TiktokenModel) {
  const LoadedTokenizer l = MustLoad(testing::SharedDataPath("tokenizers/llama3/tokenizer.model"));
  ASSERT_NE(l.tokenizer, nullptr);
  const Tokenizer& t = *l.tokenizer;
  EXPECT_EQ(t.vocab_size(), 128256);
  EXPECT_EQ(t.bos_id(), 128000);
  EXPECT_EQ(t.eos_id(), 128001);
  EXPECT_EQ(t.FindToken("<|start_header_id|>"), 128006);
  EXPECT_EQ(t.FindToken("<|eot_id|>"), 128009);
  EXPECT_EQ(t.FindToken("<|image|>"), 128011);  // llama-models numbering
  EXPECT_EQ(t.FindToken("<|reserved_special_token_245|>"), 128255);
  EXPECT_THAT(l.eos_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_THAT(t.Encode("Hello world"), ElementsAre(128000, 9906, 1917));
  EXPECT_THAT(t.Encode("<|eot_id|>", {.add_bos = false, .parse_special = true}),
              ElementsAre(128009));
}

TEST(TokenizerLoaderTest, DirectoryWithOnlyVocabAndMerges) {
  const LoadedTokenizer l = MustLoad(testing::SharedDataPath("tokenizers/gpt2"));
  ASSERT_NE(l.tokenizer, nullptr);
  EXPECT_EQ(l.description, "vocab.json (byte-level BPE, 50257 tokens)");
  EXPECT_EQ(l.tokenizer->eos_id(), 50256);
  EXPECT_FALSE(l.tokenizer->add_bos());
  // vocab.json itself as the path works too.
  EXPECT_NE(MustLoad(testing::SharedDataPath("tokenizers/gpt2/vocab.json")).tokenizer, nullptr);
}

TEST(TokenizerLoaderTest, Qwen2DirectoryUsesTokenizerConfig) {
  const LoadedTokenizer l = MustLoad(testing::SharedDataPath("tokenizers/qwen2"));
  ASSERT_NE(l.tokenizer, nullptr);
  const Tokenizer& t = *l.tokenizer;
  EXPECT_EQ(t.bos_id(), -1);
  EXPECT_EQ(t.eos_id(), 151645);  // <|im_end|>
  EXPECT_EQ(t.pad_id(), 151643);
  EXPECT_TRUE(t.IsControl(151644));
  EXPECT_THAT(l.chat_template, HasSubstr("<|im_start|>"));
  EXPECT_THAT(t.Encode("1234"), ElementsAre(16, 17, 18, 19));  // Qwen2 splits single digits
}

// A Hugging Face directory: tokenizer.json plus the side files, written from the GPT-2 files.
std::filesystem::path WriteHfDirectory() {
  const auto dir = testing::FreshTempDir();
  Json tj;
  tj["added_tokens"] =
      Json::array({{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}},
                   {{"id", 50257}, {"content", "<|im_end|>"}, {"special", true}},
                   {{"id", 50258}, {"content", "<tool>"}, {"special", false}}});
  tj["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
  Json vocab =
      Json::parse(testing::ReadTextFile(testing::SharedDataPath("tokenizers/gpt2/vocab.json")));
  tj["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array({"Ġ t", "h e"})}};
  testing::WriteJson(dir / "tokenizer.json", tj);
  testing::WriteJson(dir / "tokenizer_config.json",
                     {{"bos_token", "<|endoftext|>"},
                      {"eos_token", {{"content", "<|im_end|>"}, {"special", true}}},
                      {"add_bos_token", true},
                      {"chat_template",
                       Json::array({{{"name", "tool_use"}, {"template", "T"}},
                                    {{"name", "default"}, {"template", "{{'<|im_start|>'}}"}}})}});
  testing::WriteJson(dir / "generation_config.json", {{"eos_token_id", {50256, 50257}}});
  testing::WriteJson(dir / "config.json", {{"model_type", "gpt2"}, {"eos_token_id", 50256}});
  return dir;
}

TEST(TokenizerLoaderTest, HfDirectorySideFiles) {
  const auto dir = WriteHfDirectory();
  const LoadedTokenizer l = MustLoad(dir.string());
  ASSERT_NE(l.tokenizer, nullptr);
  const Tokenizer& t = *l.tokenizer;
  EXPECT_EQ(l.description, "tokenizer.json (byte-level BPE, 50259 tokens)");
  EXPECT_EQ(l.chat_template, "{{'<|im_start|>'}}");  // the template named "default"
  EXPECT_EQ(t.bos_id(), 50256);
  EXPECT_TRUE(t.add_bos());
  EXPECT_EQ(t.eos_id(), 50257);
  EXPECT_THAT(l.eos_ids, ElementsAre(50257, 50256));
  EXPECT_TRUE(t.IsEndOfGeneration(50256));
  // "<tool>" is a non-special added token: matched in text always.
  EXPECT_THAT(t.Encode("<tool>", {.add_bos = false}), ElementsAre(50258));
  // The same directory through its tokenizer.json file.
  EXPECT_EQ(MustLoad((dir / "tokenizer.json").string()).tokenizer->eos_id(), 50257);
}

TEST(TokenizerLoaderTest, ChatTemplateJinjaFile) {
  const auto dir = WriteHfDirectory();
  std::filesystem::remove(dir / "tokenizer_config.json");
  testing::WriteFile(dir / "chat_template.jinja", "[INST]{{ m }}[/INST]");
  EXPECT_EQ(MustLoad(dir.string()).chat_template, "[INST]{{ m }}[/INST]");
}

TEST(TokenizerLoaderTest, Errors) {
  auto status = [](const std::string& path) { return LoadTokenizerAndTemplate(path).status(); };
  const auto dir = testing::FreshTempDir();
  EXPECT_EQ(status((dir / "missing").string()).code(), absl::StatusCode::kNotFound);
  const absl::Status empty_dir = status(dir.string());
  EXPECT_EQ(empty_dir.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(empty_dir.message(),
              HasSubstr("looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt"));
  testing::WriteFile(dir / "tokenizer.model", "this is not a tokenizer");
  EXPECT_THAT(status(dir.string()).message(),
              HasSubstr("not a GGUF file, a tokenizer.json, a SentencePiece model (protobuf) or "
                        "a tiktoken rank file"));
  const auto dir2 = testing::FreshTempDir("2");
  testing::WriteFile(dir2 / "vocab.json", "{}");
  EXPECT_THAT(status(dir2.string()).message(), HasSubstr("has no merges.txt beside it"));
  testing::WriteFile(dir2 / "merges.txt", "");
  EXPECT_THAT(status(dir2.string()).message(), HasSubstr("vocab.json: no tokens"));
  testing::WriteFile(dir2 / "vocab.json", R"({"a": 0, "b": 1})");
  testing::WriteFile(dir2 / "merges.txt", "#version: 0.2\na b c\n");
  EXPECT_THAT(status(dir2.string()).message(), HasSubstr("merges.txt: line 2 is not 'left right'"));
  testing::WriteFile(dir2 / "merges.txt", "a b\n");
  testing::WriteFile(dir2 / "tokenizer_config.json", R"({"eos_token": "</s>"})");
  EXPECT_THAT(status(dir2.string()).message(),
              HasSubstr("eos_token '</s>' is not in the vocabulary"));
  testing::WriteFile(dir2 / "tokenizer_config.json", "{");
  EXPECT_THAT(status(dir2.string()).message(), HasSubstr("tokenizer_config.json: "));
  testing::WriteFile(dir2 / "tokenizer_config.json", "{}");
  testing::WriteFile(dir2 / "generation_config.json", R"({"eos_token_id": 99})");
  EXPECT_THAT(status(dir2.string()).message(), HasSubstr("special token id 99 is out of range"));
  std::filesystem::remove(dir2 / "generation_config.json");
  EXPECT_TRUE(status(dir2.string()).ok());
}

TEST(TokenizerLoaderTest, TiktokenErrors) {
  EXPECT_TRUE(LooksLikeTiktoken("IQ== 0\nIg== 1\n"));
  EXPECT_FALSE(LooksLikeTiktoken("\x0A\x05hello"));
  auto message = [](const std::string& text) {
    return std::string(VocabularyFromTiktoken(text).status().message());
  };
  EXPECT_THAT(message("IQ== 0\nIg== 1\n"), HasSubstr("has 2 ranks; only Llama 3's (128000)"));
}

// Mutation robustness: truncations and byte flips of real files give a tokenizer or an error,
// never a crash or a hang.
TEST(TokenizerLoaderTest, CorruptedFilesNeverCrash) {
  std::mt19937 rng(99);
  const std::string spm =
      testing::ReadTextFile(testing::SharedDataPath("tokenizers/mistral/tokenizer.model.v1"));
  int ok = 0;
  for (int i = 0; i < 120; ++i) {
    std::string bytes = spm;
    if (i % 2 == 0) {
      bytes.resize(rng() % bytes.size());
    } else {
      for (int k = 0; k < 1 + i % 8; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    auto vocab = VocabularyFromSentencePiece(bytes);
    if (!vocab.ok()) continue;
    auto tok = Tokenizer::FromVocab(*std::move(vocab));
    if (!tok.ok()) continue;
    ++ok;
    (*tok)->Decode((*tok)->Encode("Hello, world! \xF0\x9F\xA6\x99 123"));
  }
  EXPECT_GT(ok, 0);  // some flips land in scores and still load
  const std::string json = R"({"added_tokens":[{"id":3,"content":"<s>","special":true}],
    "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false},
    "model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}})";
  for (int i = 0; i < 400; ++i) {
    std::string bytes = json;
    if (i % 2 == 0) {
      bytes.resize(rng() % bytes.size());
    } else {
      bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    auto vocab = VocabularyFromTokenizerJson(bytes);
    if (!vocab.ok()) continue;
    auto tok = Tokenizer::FromVocab(*std::move(vocab));
    if (tok.ok()) (*tok)->Decode((*tok)->Encode("abab<s>", {.parse_special = true}));
  }
}

}  // namespace
}  // namespace funnel
