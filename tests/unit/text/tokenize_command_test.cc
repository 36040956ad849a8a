// `funnel tokenize --model PATH` with every kind of tokenizer path: the ids it prints for some of
// the llama.cpp test strings (fed byte-exact through --text-file) must be the reference ids.
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/test_data.h"
#include "tests/unit/cli/client_test_util.h"
#include "tests/unit/text/tokenizer_files_util.h"
#include "tests/unit/text/tokenizer_vector_util.h"

namespace funnel {
namespace {

using ::testing::HasSubstr;

struct PathCase {
  const char* model;     // shared-data path given to --model
  const char* expected;  // its .out vectors
};

class TokenizeCommandTest : public ::testing::TestWithParam<PathCase> {};

TEST_P(TokenizeCommandTest, PrintsReferenceIds) {
  const auto cases = testing::ReadVectorCases(GetParam().expected);
  ASSERT_EQ(cases.size(), 46u);
  const auto dir = testing::FreshTempDir();
  // A mix of plain words, digits, multiple spaces / newlines and non-Latin text.
  for (size_t i : {size_t{12}, size_t{30}, size_t{43}}) {
    const auto file = dir / ("input" + std::to_string(i));
    testing::WriteFile(file, cases[i].text);
    const testing::CommandResult r =
        testing::RunFunnelBinary({"tokenize", "--model", testing::SharedDataPath(GetParam().model),
                                  "--text-file", file.string(), "--no-bos"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out).get<std::vector<int32_t>>(), cases[i].ids)
        << "input " << i << ": " << testing::Escape(cases[i].text);
  }
}

constexpr char kVocab[] = "tokenizers/llama.cpp-vocab/";

INSTANTIATE_TEST_SUITE_P(
    Paths, TokenizeCommandTest,
    ::testing::Values(PathCase{"tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf",
                               "tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf.out"},
                      PathCase{"tokenizers/gpt2",
                               "tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf.out"},
                      PathCase{"tokenizers/qwen2/vocab.json",
                               "tokenizers/llama.cpp-vocab/ggml-vocab-qwen2.gguf.out"},
                      PathCase{"tokenizers/llama3/tokenizer.model",
                               "tokenizers/llama.cpp-vocab/ggml-vocab-llama-bpe.gguf.out"},
                      PathCase{"tokenizers/llama2/tokenizer.model",
                               "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf.out"},
                      PathCase{"tokenizers/mistral/tokenizer.model.v1",
                               "tokenizers/mistral/tokenizer.model.v1.test.out"}));

TEST(TokenizeCommandMiscTest, ParseSpecialChatAndJson) {
  const std::string qwen2 = testing::SharedDataPath("tokenizers/qwen2");
  testing::CommandResult r =
      testing::RunFunnelBinary({"tokenize", "--model", qwen2, "--text", "<|im_start|>"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(nlohmann::json::parse(r.out), nlohmann::json::array({151644}));
  r = testing::RunFunnelBinary(
      {"tokenize", "--model", qwen2, "--text", "<|im_start|>", "--parse-special"});
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::array({151644}));
  r = testing::RunFunnelBinary({"tokenize", "--model", qwen2, "--text", "hi", "--chat", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"].front(), 151644);  // the model's ChatML template
  EXPECT_EQ(j["pieces"].front(), "<|im_start|>");
  EXPECT_EQ(j["tokenizer"], "vocab.json (byte-level BPE, 151646 tokens)");
  r = testing::RunFunnelBinary(
      {"tokenize", "--model", qwen2, "--text", "hi", "--chat", "--chat-template", "vicuna"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("valid names: chatml, llama2, llama3, mistral"));
  r = testing::RunFunnelBinary(
      {"tokenize", "--model", testing::FreshTempDir().string(), "--text", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no tokenizer found"));
  r = testing::RunFunnelBinary({"tokenize", "--model", qwen2});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("exactly one of --text and --text-file"));
}

}  // namespace
}  // namespace funnel
