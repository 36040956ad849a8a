#include "runtime/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

absl::StatusOr<int32_t> GetPositiveInt(const GgufFile& gguf, const std::string& key) {
  ASSIGN_OR_RETURN(int64_t v, gguf.GetInt(key));
  if (v <= 0 || v > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat("model: %s = %d is out of range", key, v));
  }
  return static_cast<int32_t>(v);
}

// Optional key: `fallback` when absent, an error when present but malformed.
template <typename T, typename Getter>
absl::StatusOr<T> GetOr(const GgufFile& gguf, const std::string& key, T fallback, Getter get) {
  if (!gguf.Has(key)) return fallback;
  return get(key);
}

absl::Status ValidateRopeScaling(const RopeScaling& s) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("model config: rope scaling: ", what));
  };
  switch (s.type) {
    case RopeScalingType::kNone:
      return absl::OkStatus();
    case RopeScalingType::kLinear:
      if (!(s.factor > 0.0f) || !std::isfinite(s.factor)) return bad("factor must be positive");
      return absl::OkStatus();
    case RopeScalingType::kLlama3:
      if (!(s.factor > 0.0f) || !std::isfinite(s.factor)) return bad("factor must be positive");
      if (!(s.low_freq_factor > 0.0f) || !(s.high_freq_factor > s.low_freq_factor) ||
          !std::isfinite(s.high_freq_factor)) {
        return bad(
            absl::StrFormat("llama3 needs 0 < low_freq_factor < high_freq_factor (got %g, %g)",
                            s.low_freq_factor, s.high_freq_factor));
      }
      if (s.original_context_length <= 0) {
        return bad("llama3 needs a positive original_max_position_embeddings");
      }
      return absl::OkStatus();
  }
  return bad("unknown type");
}

const char* RopeScalingName(RopeScalingType type) {
  switch (type) {
    case RopeScalingType::kNone:
      return "none";
    case RopeScalingType::kLinear:
      return "linear";
    case RopeScalingType::kLlama3:
      return "llama3";
  }
  return "?";
}

// GGUF `<arch>.rope.scaling.type` (llama.cpp writes "none", "linear" or "yarn") and its factor.
absl::StatusOr<RopeScaling> RopeScalingFromGguf(const GgufFile& gguf, const std::string& prefix) {
  RopeScaling s;
  if (!gguf.Has(prefix + "rope.scaling.type")) return s;
  ASSIGN_OR_RETURN(std::string type, gguf.GetString(prefix + "rope.scaling.type"));
  if (type == "none") return s;
  if (type != "linear") {
    return absl::InvalidArgumentError(absl::StrCat("model: unsupported rope scaling type '", type,
                                                   "' (supported: none, linear)"));
  }
  ASSIGN_OR_RETURN(double factor, gguf.GetFloat(prefix + "rope.scaling.factor"));
  s.type = RopeScalingType::kLinear;
  s.factor = static_cast<float>(factor);
  return s;
}

}  // namespace

std::vector<float> RopeInverseFrequencies(const ModelConfig& c) {
  const int64_t half = c.rope_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(std::max<int64_t>(half, 0)));
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] =
        std::pow(c.rope_theta, -2.0f * static_cast<float>(i) / static_cast<float>(c.rope_dim));
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScalingType::kLinear) {
    for (float& f : inv_freq) f /= s.factor;
  } else if (s.type == RopeScalingType::kLlama3) {
    // transformers' _compute_llama3_parameters, in double.
    const double old_len = s.original_context_length;
    const double low_freq_wavelen = old_len / s.low_freq_factor;
    const double high_freq_wavelen = old_len / s.high_freq_factor;
    for (float& f : inv_freq) {
      const double base = f;
      const double wavelen = 2.0 * std::numbers::pi / base;
      double scaled = base;
      if (wavelen > low_freq_wavelen) {
        scaled = base / s.factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        scaled = (1.0 - smooth) * base / s.factor + smooth * base;
      }
      f = static_cast<float>(scaled);
    }
  }
  return inv_freq;
}

absl::Status ModelConfig::Validate() const {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("model config: ", what));
  };
  if (num_layers <= 0 || dim <= 0 || ffn_dim <= 0 || num_heads <= 0 || num_kv_heads <= 0 ||
      vocab_size <= 0) {
    return bad("layers, dim, ffn, heads, kv heads and vocab must be positive");
  }
  if (dim % num_heads != 0)
    return bad(absl::StrFormat("dim %d is not a multiple of %d heads", dim, num_heads));
  if (num_heads % num_kv_heads != 0) {
    return bad(
        absl::StrFormat("%d heads are not a multiple of %d KV heads", num_heads, num_kv_heads));
  }
  if (head_dim != dim / num_heads) return bad("head_dim must equal dim / heads");
  if (rope_dim <= 0 || rope_dim > head_dim || rope_dim % 2 != 0) {
    return bad(absl::StrFormat("rope dimension %d must be even and at most head_dim %d", rope_dim,
                               head_dim));
  }
  if (!(rope_theta > 0.0f) || !(rms_norm_eps > 0.0f))
    return bad("rope theta and RMSNorm epsilon must be positive");
  if (context_length <= 0) return bad("context length must be positive");
  RETURN_IF_ERROR(ValidateRopeScaling(rope_scaling));
  if (bos_id < -1 || bos_id >= vocab_size) {
    return bad(absl::StrFormat("BOS id %d is outside the vocabulary [0, %d)", bos_id, vocab_size));
  }
  for (int32_t id : eos_ids) {
    if (id < 0 || id >= vocab_size) {
      return bad(absl::StrFormat("EOS id %d is outside the vocabulary [0, %d)", id, vocab_size));
    }
  }
  return absl::OkStatus();
}

std::string ModelConfig::Summary() const {
  return absl::StrFormat(
      "%s: %d layers, dim %d, %d heads / %d KV heads (head_dim %d), ffn %d, vocab %d, ctx %d, "
      "rope theta %g (scaling %s), eps %g, %s output%s",
      name, num_layers, dim, num_heads, num_kv_heads, head_dim, ffn_dim, vocab_size, context_length,
      rope_theta, RopeScalingName(rope_scaling.type), rms_norm_eps,
      tied_output ? "tied" : "separate", attention_bias ? ", qkv bias" : "");
}

absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& gguf) {
  ModelConfig c;
  ASSIGN_OR_RETURN(c.architecture, gguf.GetString("general.architecture"));
  if (c.architecture != "llama") {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported model architecture '", c.architecture, "' (supported: llama)"));
  }
  const std::string p = c.architecture + ".";
  auto get_string = [&](const std::string& k) { return gguf.GetString(k); };
  auto get_int = [&](const std::string& k) { return GetPositiveInt(gguf, k); };
  auto get_float = [&](const std::string& k) -> absl::StatusOr<float> {
    ASSIGN_OR_RETURN(double v, gguf.GetFloat(k));
    return static_cast<float>(v);
  };
  ASSIGN_OR_RETURN(c.name, GetOr<std::string>(gguf, "general.name", "model", get_string));
  ASSIGN_OR_RETURN(c.num_layers, get_int(p + "block_count"));
  ASSIGN_OR_RETURN(c.dim, get_int(p + "embedding_length"));
  ASSIGN_OR_RETURN(c.ffn_dim, get_int(p + "feed_forward_length"));
  ASSIGN_OR_RETURN(c.num_heads, get_int(p + "attention.head_count"));
  ASSIGN_OR_RETURN(c.num_kv_heads,
                   GetOr<int32_t>(gguf, p + "attention.head_count_kv", c.num_heads, get_int));
  ASSIGN_OR_RETURN(c.context_length, GetOr<int32_t>(gguf, p + "context_length", 2048, get_int));
  ASSIGN_OR_RETURN(c.rope_theta, GetOr<float>(gguf, p + "rope.freq_base", 10000.0f, get_float));
  ASSIGN_OR_RETURN(c.rms_norm_eps,
                   GetOr<float>(gguf, p + "attention.layer_norm_rms_epsilon", 1e-5f, get_float));
  ASSIGN_OR_RETURN(c.rope_scaling, RopeScalingFromGguf(gguf, p));
  c.head_dim = c.num_heads > 0 ? c.dim / c.num_heads : 0;
  ASSIGN_OR_RETURN(c.rope_dim,
                   GetOr<int32_t>(gguf, p + "rope.dimension_count", c.head_dim, get_int));

  const GgufTensorInfo* embd = gguf.FindTensor("token_embd.weight");
  if (embd == nullptr) return absl::InvalidArgumentError("model: missing tensor token_embd.weight");
  if (embd->dims.size() != 2)
    return absl::InvalidArgumentError("model: token_embd.weight must be 2-D");
  if (embd->dims[1] > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("model: token_embd.weight has an absurd vocabulary size");
  }
  c.vocab_size = static_cast<int32_t>(embd->dims[1]);
  c.tied_output = gguf.FindTensor("output.weight") == nullptr;
  // Special ids are informational here (the tokenizer owns them): kept only when in range.
  auto in_vocab = [&](const std::string& key) -> int32_t {
    auto id = gguf.GetInt(key);
    return id.ok() && *id >= 0 && *id < c.vocab_size ? static_cast<int32_t>(*id) : -1;
  };
  c.bos_id = in_vocab("tokenizer.ggml.bos_token_id");
  if (int32_t eos = in_vocab("tokenizer.ggml.eos_token_id"); eos >= 0) c.eos_ids.push_back(eos);
  RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace funnel
