// Reading llama.cpp-style tokenizer test vectors: the 46 strings of ggml-vocab-*.gguf.inp and
// the expected ids of an .out file (one line of space-separated ids per string, no BOS).
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/text/tokenizer.h"
#include "tests/testing/test_data.h"
#include "tests/unit/text/text_test_util.h"

namespace funnel::testing {

inline constexpr char kVectorInputs[] = "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf.inp";

inline std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Splits a llama.cpp .inp file as its test harness does: strings separated by
// "\n__ggml_vocab_test__\n"; the file ends with a separator, which closes the last string.
inline std::vector<std::string> ReadVectorInputs(const std::string& path) {
  const std::string raw = ReadTextFile(path);
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
inline std::vector<std::vector<int32_t>> ReadVectorOutputs(const std::string& path) {
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

struct VectorCase {
  std::string text;
  std::vector<int32_t> ids;
};

// The shared inputs paired with the expected ids of `relative_out` (a shared-data path).
inline std::vector<VectorCase> ReadVectorCases(const std::string& relative_out) {
  const auto inputs = ReadVectorInputs(SharedDataPath(kVectorInputs));
  const auto outputs = ReadVectorOutputs(SharedDataPath(relative_out));
  EXPECT_EQ(inputs.size(), outputs.size()) << relative_out;
  std::vector<VectorCase> cases;
  for (size_t i = 0; i < inputs.size() && i < outputs.size(); ++i) {
    cases.push_back({inputs[i], outputs[i]});
  }
  return cases;
}

// Encodes each case without BOS and without parsing special tokens; every mismatch is a test
// failure naming the input. Returns the number of exact matches.
inline int CountMatchingVectors(const Tokenizer& tok, const std::vector<VectorCase>& cases) {
  int matches = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::vector<int32_t> ids = tok.Encode(cases[i].text, {.add_bos = false});
    EXPECT_EQ(ids, cases[i].ids) << "input " << i << ": '" << Escape(cases[i].text) << "'";
    matches += ids == cases[i].ids;
  }
  return matches;
}

}  // namespace funnel::testing
