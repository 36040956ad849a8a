// Llama-family model hyper-parameters, read from GGUF metadata and validated once.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/cpu/norm_rope_act.h"
#include "runtime/model/gguf_file.h"

namespace funnel {

struct ModelConfig {
  std::string name;           // general.name, or the file's stem
  std::string architecture;   // "llama"
  int32_t num_layers = 0;
  int32_t dim = 0;            // embedding width
  int32_t ffn_dim = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;   // GQA: num_heads is a multiple of it
  int32_t head_dim = 0;       // dim / num_heads
  int32_t rope_dim = 0;       // rotated dims per head (usually head_dim)
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  float rope_theta = 10000.0f;
  float rms_norm_eps = 1e-5f;
  RopeStyle rope_style = RopeStyle::kAdjacentPairs;
  bool tied_output = false;   // output projection shares the token embedding

  // Checks the cross-field invariants (positive sizes, divisibility, even rope_dim).
  absl::Status Validate() const;
  // "dim 64, 5 layers, 8/4 heads, ..." for logs.
  std::string Summary() const;
};

// Reads `llama.*` metadata (the `general.architecture` prefix) and the tensor shapes it implies.
absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& gguf);

}  // namespace funnel
