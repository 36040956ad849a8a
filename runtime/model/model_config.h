// Llama-family model hyper-parameters, read from GGUF metadata or a Hugging Face config.json
// (hf_config.h) and validated once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/norm_rope_act.h"
#include "runtime/model/gguf_file.h"

namespace funnel {

enum class RopeScalingType {
  kNone,    // inv_freq[i] = theta^(-2i / rope_dim)
  kLinear,  // HF "linear": inv_freq / factor (positions interpolated by 1 / factor)
  kLlama3,  // HF "llama3" (Llama 3.1+): long wavelengths / factor, short ones kept, smooth between
};

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  float factor = 1.0f;                  // kLinear, kLlama3
  float low_freq_factor = 1.0f;         // kLlama3
  float high_freq_factor = 4.0f;        // kLlama3
  int32_t original_context_length = 0;  // kLlama3: original_max_position_embeddings
};

struct ModelConfig {
  std::string name;          // general.name, or the file's stem
  std::string architecture;  // "llama" (GGUF); HF model_type: "llama", "mistral", "qwen2"
  int32_t num_layers = 0;
  int32_t dim = 0;  // embedding width
  int32_t ffn_dim = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;  // GQA: num_heads is a multiple of it
  int32_t head_dim = 0;      // dim / num_heads
  int32_t rope_dim = 0;      // rotated dims per head (usually head_dim)
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  float rms_norm_eps = 1e-5f;
  // Layout of the Q/K rows the runner sees. HF checkpoints are half-split; the HF loader permutes
  // their Q/K rows (and biases) into adjacent pairs, so loaded models are always kAdjacentPairs.
  RopeStyle rope_style = RopeStyle::kAdjacentPairs;
  bool tied_output = false;      // output projection shares the token embedding
  bool attention_bias = false;   // q/k/v projections carry biases (Qwen2)
  int32_t bos_id = -1;           // -1: unknown
  std::vector<int32_t> eos_ids;  // end-of-generation ids from the model files (may be several)

  // Checks the cross-field invariants (positive sizes, divisibility, even rope_dim, rope
  // scaling parameters, special ids inside the vocabulary).
  absl::Status Validate() const;
  // "dim 64, 5 layers, 8/4 heads, ..." for logs.
  std::string Summary() const;
};

// The per-pair inverse frequencies [rope_dim / 2] that RoPE turns by (angle = pos * inv_freq[i]),
// rope scaling applied as Hugging Face computes it. For kNone this is exactly the float
// expression ApplyRope uses (theta^(-2i / rope_dim)), so unscaled models are bit-identical.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

// Reads `llama.*` metadata (the `general.architecture` prefix) and the tensor shapes it implies.
absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& gguf);

}  // namespace funnel
