#include "runtime/model/model_weights.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

absl::StatusOr<const GgufTensorInfo*> FindShaped(const GgufFile& gguf, const std::string& name,
                                                 std::vector<int64_t> dims) {
  const GgufTensorInfo* t = gguf.FindTensor(name);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("model: missing tensor ", name));
  if (t->dims != dims) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model: tensor %s has shape [%s], expected [%s]", name,
                        absl::StrJoin(t->dims, ", "), absl::StrJoin(dims, ", ")));
  }
  return t;
}

absl::StatusOr<WeightType> ToWeightType(const GgufTensorInfo& t) {
  switch (t.type) {
    case GgmlType::kF32:
      return WeightType::kF32;
    case GgmlType::kF16:
      return WeightType::kF16;
    case GgmlType::kBF16:
      return WeightType::kBF16;
    case GgmlType::kQ8_0:
      return WeightType::kQ8_0;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("model: tensor %s has type %s; supported: F32, F16, BF16, Q8_0", t.name,
                          GgmlTypeName(t.type)));
  }
}

// dims in ggml order: {cols, rows}.
absl::StatusOr<WeightMatrix> LoadMatrix(const GgufFile& gguf, const std::string& name, int64_t rows,
                                        int64_t cols) {
  ASSIGN_OR_RETURN(const GgufTensorInfo* t, FindShaped(gguf, name, {cols, rows}));
  ASSIGN_OR_RETURN(WeightType type, ToWeightType(*t));
  if (t->data == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("model: tensor ", name, " has no data"));
  return WeightMatrix{type, t->data, rows, cols};
}

absl::StatusOr<std::vector<float>> LoadVector(const GgufFile& gguf, const std::string& name,
                                              int64_t n) {
  ASSIGN_OR_RETURN(const GgufTensorInfo* t, FindShaped(gguf, name, {n}));
  ASSIGN_OR_RETURN(WeightType type, ToWeightType(*t));
  if (type == WeightType::kQ8_0 && n % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: tensor ", name, " has a bad Q8_0 length"));
  }
  std::vector<float> v(static_cast<size_t>(n));
  DequantizeRow(type, t->data, v.data(), n);
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> gguf, GgufFile::Open(path));
  return FromGguf(std::shared_ptr<const GgufFile>(std::move(gguf)));
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::FromGguf(
    std::shared_ptr<const GgufFile> gguf) {
  auto w = std::unique_ptr<ModelWeights>(new ModelWeights());
  w->gguf_ = std::move(gguf);
  const GgufFile& g = *w->gguf_;
  ASSIGN_OR_RETURN(w->config_, ModelConfigFromGguf(g));
  const ModelConfig& c = w->config_;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv_dim = int64_t{c.num_kv_heads} * c.head_dim;

  ASSIGN_OR_RETURN(w->token_embd_, LoadMatrix(g, "token_embd.weight", c.vocab_size, c.dim));
  ASSIGN_OR_RETURN(w->output_norm_, LoadVector(g, "output_norm.weight", c.dim));
  if (c.tied_output) {
    w->output_ = w->token_embd_;
  } else {
    ASSIGN_OR_RETURN(w->output_, LoadMatrix(g, "output.weight", c.vocab_size, c.dim));
  }
  // A corrupt block count must fail on the missing tensors, not on a huge allocation.
  if (g.FindTensor(absl::StrCat("blk.", c.num_layers - 1, ".attn_norm.weight")) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model: missing tensor blk.%d.attn_norm.weight (%d layers declared)",
                        c.num_layers - 1, c.num_layers));
  }
  w->layers_.resize(static_cast<size_t>(c.num_layers));
  for (int32_t i = 0; i < c.num_layers; ++i) {
    LayerWeights& l = w->layers_[static_cast<size_t>(i)];
    const std::string p = absl::StrCat("blk.", i, ".");
    ASSIGN_OR_RETURN(l.attn_norm, LoadVector(g, p + "attn_norm.weight", c.dim));
    ASSIGN_OR_RETURN(l.wq, LoadMatrix(g, p + "attn_q.weight", q_dim, c.dim));
    ASSIGN_OR_RETURN(l.wk, LoadMatrix(g, p + "attn_k.weight", kv_dim, c.dim));
    ASSIGN_OR_RETURN(l.wv, LoadMatrix(g, p + "attn_v.weight", kv_dim, c.dim));
    ASSIGN_OR_RETURN(l.wo, LoadMatrix(g, p + "attn_output.weight", c.dim, q_dim));
    ASSIGN_OR_RETURN(l.ffn_norm, LoadVector(g, p + "ffn_norm.weight", c.dim));
    ASSIGN_OR_RETURN(l.w_gate, LoadMatrix(g, p + "ffn_gate.weight", c.ffn_dim, c.dim));
    ASSIGN_OR_RETURN(l.w_up, LoadMatrix(g, p + "ffn_up.weight", c.ffn_dim, c.dim));
    ASSIGN_OR_RETURN(l.w_down, LoadMatrix(g, p + "ffn_down.weight", c.dim, c.ffn_dim));
  }
  w->Finish();
  return w;
}

void ModelWeights::Finish() {
  rope_inv_freq_ = RopeInverseFrequencies(config_);
  matrix_bytes_ = 0;
  for (const LayerWeights& l : layers_) {
    for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      matrix_bytes_ += m->rows * RowBytes(m->type, m->cols);
    }
  }
  matrix_bytes_ += output_.rows * RowBytes(output_.type, output_.cols);
}

}  // namespace funnel
