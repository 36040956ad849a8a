// Llama weights as views into a GGUF file (F32/F16/BF16/Q8_0 matrices used in place), with
// shapes checked against the ModelConfig. Norm vectors are converted to owned fp32.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/matmul.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/model_config.h"

namespace funnel {

struct LayerWeights {
  std::vector<float> attn_norm;  // [dim]
  WeightMatrix wq;               // [num_heads * head_dim, dim]
  WeightMatrix wk;               // [num_kv_heads * head_dim, dim]
  WeightMatrix wv;               // [num_kv_heads * head_dim, dim]
  WeightMatrix wo;               // [dim, num_heads * head_dim]
  std::vector<float> ffn_norm;   // [dim]
  WeightMatrix w_gate;           // [ffn_dim, dim]
  WeightMatrix w_up;             // [ffn_dim, dim]
  WeightMatrix w_down;           // [dim, ffn_dim]
};

class ModelWeights {
 public:
  // Loads from an opened GGUF; keeps `gguf` alive (the matrices point into its mapping).
  static absl::StatusOr<std::unique_ptr<ModelWeights>> FromGguf(std::shared_ptr<const GgufFile> gguf);
  // Opens `path` and loads it.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Open(const std::string& path);

  const ModelConfig& config() const { return config_; }
  const GgufFile& gguf() const { return *gguf_; }
  const WeightMatrix& token_embedding() const { return token_embd_; }  // [vocab, dim]
  const WeightMatrix& output() const { return output_; }               // [vocab, dim]
  const std::vector<float>& output_norm() const { return output_norm_; }
  const LayerWeights& layer(int32_t i) const { return layers_[static_cast<size_t>(i)]; }
  // Bytes of all matrices (what one decode step reads).
  int64_t matrix_bytes() const { return matrix_bytes_; }

 private:
  ModelWeights() = default;

  std::shared_ptr<const GgufFile> gguf_;
  ModelConfig config_;
  WeightMatrix token_embd_;
  WeightMatrix output_;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
  int64_t matrix_bytes_ = 0;
};

}  // namespace funnel
