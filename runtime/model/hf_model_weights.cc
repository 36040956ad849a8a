// ModelWeights from a Hugging Face model directory (declared in model_weights.h).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/model/hf_config.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/qk_permutation.h"
#include "runtime/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace funnel {

// Fills a ModelWeights from HF-named safetensors tensors. Used once, on the loading thread.
class HfWeightLoader {
 public:
  HfWeightLoader(ModelWeights& w, const SafetensorsCheckpoint& checkpoint)
      : w_(w), ckpt_(checkpoint) {}

  absl::Status Load() {
    const ModelConfig& c = w_.config_;
    ASSIGN_OR_RETURN(w_.token_embd_, Matrix("model.embed_tokens.weight", c.vocab_size, c.dim));
    ASSIGN_OR_RETURN(w_.output_norm_, Vector("model.norm.weight", c.dim));
    if (c.tied_output) {
      w_.output_ = w_.token_embd_;
      used_.insert("lm_head.weight");  // transformers ties it to the embedding even if present
    } else {
      ASSIGN_OR_RETURN(w_.output_, Matrix("lm_head.weight", c.vocab_size, c.dim));
    }
    // A corrupt layer count must fail on the missing tensors, not on a huge allocation.
    const std::string last = LayerName(c.num_layers - 1, "input_layernorm.weight");
    if (ckpt_.Find(last) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("model: missing tensor %s (%d layers declared)", last, c.num_layers));
    }
    w_.layers_.resize(static_cast<size_t>(c.num_layers));
    for (int32_t i = 0; i < c.num_layers; ++i) {
      RETURN_IF_ERROR(LoadLayer(i, w_.layers_[static_cast<size_t>(i)]));
    }
    WarnUnused();
    return absl::OkStatus();
  }

 private:
  static std::string LayerName(int32_t layer, const std::string& suffix) {
    return absl::StrCat("model.layers.", layer, ".", suffix);
  }

  absl::Status LoadLayer(int32_t i, LayerWeights& l) {
    const ModelConfig& c = w_.config_;
    const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
    const int64_t kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
    auto name = [&](const std::string& suffix) { return LayerName(i, suffix); };
    ASSIGN_OR_RETURN(l.attn_norm, Vector(name("input_layernorm.weight"), c.dim));
    ASSIGN_OR_RETURN(l.wq, QkMatrix(name("self_attn.q_proj.weight"), q_dim, c.dim));
    ASSIGN_OR_RETURN(l.wk, QkMatrix(name("self_attn.k_proj.weight"), kv_dim, c.dim));
    ASSIGN_OR_RETURN(l.wv, Matrix(name("self_attn.v_proj.weight"), kv_dim, c.dim));
    ASSIGN_OR_RETURN(l.wo, Matrix(name("self_attn.o_proj.weight"), c.dim, q_dim));
    if (ckpt_.Find(name("self_attn.o_proj.bias")) != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("model: tensor ",
                                                     name("self_attn.o_proj.bias"),
                                                     " (an output projection "
                                                     "bias) is not supported"));
    }
    if (c.attention_bias) {
      ASSIGN_OR_RETURN(std::vector<float> bq, Vector(name("self_attn.q_proj.bias"), q_dim));
      ASSIGN_OR_RETURN(std::vector<float> bk, Vector(name("self_attn.k_proj.bias"), kv_dim));
      ASSIGN_OR_RETURN(l.bv, Vector(name("self_attn.v_proj.bias"), kv_dim));
      l.bq = PermuteQkVector(QkPermutation::kHalfSplitToAdjacent, bq, c.head_dim);
      l.bk = PermuteQkVector(QkPermutation::kHalfSplitToAdjacent, bk, c.head_dim);
    }
    ASSIGN_OR_RETURN(l.ffn_norm, Vector(name("post_attention_layernorm.weight"), c.dim));
    ASSIGN_OR_RETURN(l.w_gate, Matrix(name("mlp.gate_proj.weight"), c.ffn_dim, c.dim));
    ASSIGN_OR_RETURN(l.w_up, Matrix(name("mlp.up_proj.weight"), c.ffn_dim, c.dim));
    ASSIGN_OR_RETURN(l.w_down, Matrix(name("mlp.down_proj.weight"), c.dim, c.ffn_dim));
    return absl::OkStatus();
  }

  absl::StatusOr<const SafetensorsTensor*> FindShaped(const std::string& name,
                                                      const std::vector<int64_t>& shape) {
    const SafetensorsTensor* t = ckpt_.Find(name);
    if (t == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("model: missing tensor ", name));
    if (t->shape != shape) {
      return absl::InvalidArgumentError(
          absl::StrFormat("model: tensor %s has shape [%s], config.json implies [%s]", name,
                          absl::StrJoin(t->shape, ", "), absl::StrJoin(shape, ", ")));
    }
    used_.insert(name);
    return t;
  }

  static absl::StatusOr<WeightType> ToWeightType(const SafetensorsTensor& t) {
    switch (t.dtype) {
      case SafetensorsDtype::kF32:
        return WeightType::kF32;
      case SafetensorsDtype::kF16:
        return WeightType::kF16;
      case SafetensorsDtype::kBF16:
        return WeightType::kBF16;
      default:
        return absl::InvalidArgumentError(
            absl::StrFormat("model: tensor %s has dtype %s; supported: F32, F16, BF16", t.name,
                            SafetensorsDtypeName(t.dtype)));
    }
  }

  uint8_t* Own(int64_t bytes) {
    w_.owned_.push_back(std::make_unique<uint8_t[]>(static_cast<size_t>(bytes)));
    return w_.owned_.back().get();
  }

  // In place when aligned to the element size, else an owned (aligned) copy.
  absl::StatusOr<WeightMatrix> Matrix(const std::string& name, int64_t rows, int64_t cols) {
    ASSIGN_OR_RETURN(const SafetensorsTensor* t, FindShaped(name, {rows, cols}));
    ASSIGN_OR_RETURN(WeightType type, ToWeightType(*t));
    const void* data = t->data;
    if (reinterpret_cast<uintptr_t>(data) % SafetensorsDtypeSize(t->dtype) != 0) {
      uint8_t* copy = Own(t->num_bytes());
      std::memcpy(copy, t->data, static_cast<size_t>(t->num_bytes()));
      data = copy;
    }
    return WeightMatrix{type, data, rows, cols};
  }

  // An owned copy with rows permuted from HF's half-split RoPE order to adjacent pairs.
  absl::StatusOr<WeightMatrix> QkMatrix(const std::string& name, int64_t rows, int64_t cols) {
    ASSIGN_OR_RETURN(const SafetensorsTensor* t, FindShaped(name, {rows, cols}));
    ASSIGN_OR_RETURN(WeightType type, ToWeightType(*t));
    uint8_t* copy = Own(t->num_bytes());
    PermuteQkRows(QkPermutation::kHalfSplitToAdjacent, t->data, copy, rows, RowBytes(type, cols),
                  w_.config_.head_dim);
    return WeightMatrix{type, copy, rows, cols};
  }

  absl::StatusOr<std::vector<float>> Vector(const std::string& name, int64_t n) {
    ASSIGN_OR_RETURN(const SafetensorsTensor* t, FindShaped(name, {n}));
    ASSIGN_OR_RETURN(WeightType type, ToWeightType(*t));
    std::vector<uint8_t> aligned(t->data, t->data + t->num_bytes());
    std::vector<float> v(static_cast<size_t>(n));
    DequantizeRow(type, aligned.data(), v.data(), n);
    return v;
  }

  // Tensors the model does not use usually mean a naming mismatch: say so in the log.
  void WarnUnused() const {
    std::vector<std::string> unused;
    for (const std::string& name : ckpt_.names()) {
      if (!used_.contains(name) && !absl::EndsWith(name, "rotary_emb.inv_freq")) {
        unused.push_back(name);
      }
    }
    if (unused.empty()) return;
    const size_t shown = std::min<size_t>(unused.size(), 4);
    spdlog::warn(
        "model: {} tensor(s) of the checkpoint are not used: {}{}", unused.size(),
        absl::StrJoin(unused.begin(), unused.begin() + static_cast<ptrdiff_t>(shown), ", "),
        unused.size() > shown ? ", ..." : "");
  }

  ModelWeights& w_;
  const SafetensorsCheckpoint& ckpt_;
  absl::flat_hash_set<std::string> used_;
};

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::FromHf(
    ModelConfig config, std::shared_ptr<const SafetensorsCheckpoint> checkpoint) {
  RETURN_IF_ERROR(config.Validate());
  auto w = std::unique_ptr<ModelWeights>(new ModelWeights());
  w->config_ = std::move(config);
  w->safetensors_ = std::move(checkpoint);
  HfWeightLoader loader(*w, *w->safetensors_);
  RETURN_IF_ERROR(loader.Load());
  w->Finish();
  return w;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::FromHfDir(const std::string& dir) {
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfigFromHfDir(dir));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsCheckpoint> checkpoint,
                   SafetensorsCheckpoint::Open(dir));
  auto w = FromHf(std::move(config),
                  std::shared_ptr<const SafetensorsCheckpoint>(std::move(checkpoint)));
  if (!w.ok()) {
    return absl::Status(w.status().code(), absl::StrCat(dir, ": ", w.status().message()));
  }
  spdlog::info("loaded HF model {}: {}", dir, (*w)->config().Summary());
  return w;
}

}  // namespace funnel
