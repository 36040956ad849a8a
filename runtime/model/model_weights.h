// Llama-family weights with shapes checked against the ModelConfig, from a GGUF file or a
// Hugging Face model directory (config.json + safetensors). Matrices are used in place from the
// memory-mapped files (GGUF: F32/F16/BF16/Q8_0; safetensors: F32/F16/BF16), except the HF Q/K
// projections, which are owned copies permuted into the adjacent-pair RoPE layout (see
// qk_permutation.h), and safetensors tensors that are not aligned to their element size (copied).
// Norm and bias vectors are converted to owned fp32.
//
// Immutable after loading; safe to share between threads.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/matmul.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/model_config.h"
#include "runtime/model/safetensors_checkpoint.h"

namespace funnel {

struct LayerWeights {
  std::vector<float> attn_norm;  // [dim]
  WeightMatrix wq;               // [num_heads * head_dim, dim]
  WeightMatrix wk;               // [num_kv_heads * head_dim, dim]
  WeightMatrix wv;               // [num_kv_heads * head_dim, dim]
  WeightMatrix wo;               // [dim, num_heads * head_dim]
  // q/k/v biases when config.attention_bias (Qwen2), else empty; rows in the same (adjacent-pair)
  // order as wq/wk.
  std::vector<float> bq;        // [num_heads * head_dim] or empty
  std::vector<float> bk;        // [num_kv_heads * head_dim] or empty
  std::vector<float> bv;        // [num_kv_heads * head_dim] or empty
  std::vector<float> ffn_norm;  // [dim]
  WeightMatrix w_gate;          // [ffn_dim, dim]
  WeightMatrix w_up;            // [ffn_dim, dim]
  WeightMatrix w_down;          // [dim, ffn_dim]
};

class ModelWeights {
 public:
  // Loads from an opened GGUF; keeps `gguf` alive (the matrices point into its mapping).
  static absl::StatusOr<std::unique_ptr<ModelWeights>> FromGguf(
      std::shared_ptr<const GgufFile> gguf);
  // Opens the GGUF file at `path` and loads it (OpenModel in model_loader.h also takes HF dirs).
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Open(const std::string& path);

  // Loads a Hugging Face model directory: config.json (+ generation_config.json) and
  // model.safetensors or model.safetensors.index.json with its shards.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> FromHfDir(const std::string& dir);
  // Loads HF-named tensors (model.layers.N.self_attn.q_proj.weight, ...) of `checkpoint` for a
  // validated `config`; keeps `checkpoint` alive.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> FromHf(
      ModelConfig config, std::shared_ptr<const SafetensorsCheckpoint> checkpoint);

  const ModelConfig& config() const { return config_; }
  // The GGUF file the weights come from. Precondition: has_gguf() (not for HF directories).
  const GgufFile& gguf() const { return *gguf_; }
  bool has_gguf() const { return gguf_ != nullptr; }
  const WeightMatrix& token_embedding() const { return token_embd_; }  // [vocab, dim]
  const WeightMatrix& output() const { return output_; }               // [vocab, dim]
  const std::vector<float>& output_norm() const { return output_norm_; }
  const LayerWeights& layer(int32_t i) const { return layers_[static_cast<size_t>(i)]; }
  // RopeInverseFrequencies(config()): [rope_dim / 2], rope scaling applied.
  const std::vector<float>& rope_inv_freq() const { return rope_inv_freq_; }
  // Bytes of all matrices (what one decode step reads).
  int64_t matrix_bytes() const { return matrix_bytes_; }

 private:
  friend class HfWeightLoader;
  ModelWeights() = default;
  void Finish();  // rope_inv_freq_ and matrix_bytes_ from the loaded config and matrices

  std::shared_ptr<const GgufFile> gguf_;
  std::shared_ptr<const SafetensorsCheckpoint> safetensors_;
  std::vector<std::unique_ptr<uint8_t[]>> owned_;  // permuted or realigned matrix copies
  ModelConfig config_;
  WeightMatrix token_embd_;
  WeightMatrix output_;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
  std::vector<float> rope_inv_freq_;
  int64_t matrix_bytes_ = 0;
};

}  // namespace funnel
