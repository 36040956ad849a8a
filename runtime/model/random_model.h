// Writes random-weight Llama GGUF models of any shape (for speed measurements and tests).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "runtime/model/gguf_file.h"

namespace funnel {

struct RandomModelSpec {
  std::string name = "random-llama";
  int32_t num_layers = 2;
  int32_t dim = 64;
  int32_t num_heads = 4;
  int32_t num_kv_heads = 2;
  int32_t ffn_dim = 172;
  int32_t vocab_size = 512;  // at least 259 (3 specials + 256 byte tokens)
  int32_t context_length = 4096;
  float rope_theta = 10000.0f;
  bool tied_output = false;
  GgmlType matrix_type = GgmlType::kF32;  // F32, F16, BF16 or Q8_0
  uint64_t seed = 1;

  absl::Status Validate() const;
};

// Writes the model to `path`. The vocabulary is a synthetic SentencePiece-style one:
// <unk>, <s>, </s>, the 256 byte pieces, then single characters and "▁"-words, so any text
// round-trips through the tokenizer. Weights are uniform in ±1/sqrt(fan_in), norms are 1.
absl::Status WriteRandomModel(const RandomModelSpec& spec, const std::string& path);

}  // namespace funnel
