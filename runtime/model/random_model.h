// Writes random-weight Llama GGUF models of any shape (for speed measurements and tests).
#pragma once

#include <cmath>
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
// round-trips through the tokenizer. Norms are 1. Matrix t in file order (token_embd, output
// unless tied, then per layer attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down)
// holds, before encoding as matrix_type, element [r, c] = UniformAt(seed + t, r * cols + c,
// bound) (kernels/cpu/random_fill.h) with bound 1 for token_embd (O(1) activations, as in trained
// models) and RandomMatrixBound(cols) otherwise. CudaModelRunner::CreateRandom makes the same
// F32 weights on the device.
absl::Status WriteRandomModel(const RandomModelSpec& spec, const std::string& path);

// 1 / sqrt(fan_in).
inline float RandomMatrixBound(int64_t cols) { return 1.0f / std::sqrt(static_cast<float>(cols)); }

}  // namespace funnel
