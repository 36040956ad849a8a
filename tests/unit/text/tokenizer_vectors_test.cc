// The 46 llama.cpp tokenizer test strings (ggml-vocab-*.gguf.inp) against the ids recorded by
// the reference tokenizers (*.gguf.out, mistral/*.test.out), loaded from every source this
// project reads: GGUF metadata, SentencePiece tokenizer.model, tiktoken tokenizer.model,
// vocab.json + merges.txt, and tokenizer.json files written here from the same vocabularies.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/text/tokenizer.h"
#include "runtime/text/tokenizer_loader.h"
#include "tests/testing/test_data.h"
#include "tests/unit/text/text_test_util.h"
#include "tests/unit/text/tokenizer_vector_util.h"

namespace funnel {
namespace {

using testing::VectorCase;

std::unique_ptr<Tokenizer> Load(const std::string& relative) {
  auto loaded = LoadTokenizer(testing::SharedDataPath(relative));
  EXPECT_TRUE(loaded.ok()) << relative << ": " << loaded.status();
  return loaded.ok() ? std::move(*loaded) : nullptr;
}

void ExpectAllVectors(const std::string& tokenizer_path, const std::string& expected_out) {
  auto tok = Load(tokenizer_path);
  ASSERT_NE(tok, nullptr);
  const std::vector<VectorCase> cases = testing::ReadVectorCases(expected_out);
  ASSERT_EQ(cases.size(), 46u);
  EXPECT_EQ(testing::CountMatchingVectors(*tok, cases), 46) << tokenizer_path;
}

constexpr char kVocabDir[] = "tokenizers/llama.cpp-vocab/";

TEST(TokenizerVectorsTest, LlamaSpmFromGguf) {
  ExpectAllVectors(std::string(kVocabDir) + "ggml-vocab-llama-spm.gguf",
                   std::string(kVocabDir) + "ggml-vocab-llama-spm.gguf.out");
}

TEST(TokenizerVectorsTest, LlamaSpmFromSentencePieceModel) {
  ExpectAllVectors("tokenizers/llama2/tokenizer.model",
                   std::string(kVocabDir) + "ggml-vocab-llama-spm.gguf.out");
}

TEST(TokenizerVectorsTest, LlamaBpeFromTiktokenModel) {
  ExpectAllVectors("tokenizers/llama3/tokenizer.model",
                   std::string(kVocabDir) + "ggml-vocab-llama-bpe.gguf.out");
}

TEST(TokenizerVectorsTest, Gpt2FromGguf) {
  ExpectAllVectors(std::string(kVocabDir) + "ggml-vocab-gpt-2.gguf",
                   std::string(kVocabDir) + "ggml-vocab-gpt-2.gguf.out");
}

TEST(TokenizerVectorsTest, Gpt2FromVocabJsonAndMerges) {
  ExpectAllVectors("tokenizers/gpt2", std::string(kVocabDir) + "ggml-vocab-gpt-2.gguf.out");
}

TEST(TokenizerVectorsTest, Qwen2FromVocabJsonAndMerges) {
  ExpectAllVectors("tokenizers/qwen2", std::string(kVocabDir) + "ggml-vocab-qwen2.gguf.out");
}

TEST(TokenizerVectorsTest, MistralV1FromSentencePieceModel) {
  ExpectAllVectors("tokenizers/mistral/tokenizer.model.v1",
                   "tokenizers/mistral/tokenizer.model.v1.test.out");
}

TEST(TokenizerVectorsTest, MistralV3FromSentencePieceModel) {
  ExpectAllVectors("tokenizers/mistral/mistral_instruct_tokenizer_240323.model.v3",
                   "tokenizers/mistral/mistral_instruct_tokenizer_240323.model.v3.test.out");
}

// The other vocab-only GGUFs of llama.cpp's test set: byte-level vocabularies whose pre-tokenizer
// is a sequence of regexes (tokenizer.ggml.pre), and Phi-3's SentencePiece vocabulary.
class GgufVectorsTest : public ::testing::TestWithParam<const char*> {};

TEST_P(GgufVectorsTest, AllVectors) {
  const std::string base = std::string(kVocabDir) + "ggml-vocab-" + GetParam() + ".gguf";
  ExpectAllVectors(base, base + ".out");
}

INSTANTIATE_TEST_SUITE_P(LlamaCppVocabs, GgufVectorsTest,
                         ::testing::Values("starcoder", "refact", "falcon", "mpt", "deepseek-coder",
                                           "deepseek-llm", "phi-3"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace funnel
