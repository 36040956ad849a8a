// Loading the stories260K golden run (llama2.c, fp32) from ../shared/data.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/testing/test_data.h"

namespace funnel::testing {

inline std::string Stories260KPath() { return SharedDataPath("models/stories260K/stories260K.gguf"); }

struct GoldenRun {
  std::vector<int32_t> prompt_ids;                   // with BOS
  std::vector<int32_t> full_sequence;                // prompt + generated + last prediction
  std::vector<std::vector<float>> logits;            // [position][vocab]
};

inline GoldenRun LoadStories260KGolden() {
  GoldenRun g;
  std::ifstream meta(SharedDataPath("models/stories260K/stories260K.ref_greedy48.json"));
  nlohmann::json j = nlohmann::json::parse(meta);
  g.prompt_ids = j["prompt_ids_with_bos"].get<std::vector<int32_t>>();
  g.full_sequence = j["full_sequence_incl_last_prediction"].get<std::vector<int32_t>>();
  std::ifstream lines(
      SharedDataPath("models/stories260K/stories260K.ref_logits.once_upon_a_time.greedy48.jsonl"));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    nlohmann::json l = nlohmann::json::parse(line);
    const size_t pos = l["pos"].get<size_t>();
    if (g.logits.size() <= pos) g.logits.resize(pos + 1);
    g.logits[pos] = l["logits"].get<std::vector<float>>();
  }
  return g;
}

}  // namespace funnel::testing
