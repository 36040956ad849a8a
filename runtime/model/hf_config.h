// Hugging Face config.json / generation_config.json <-> ModelConfig, for the Llama family:
// LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (by "architectures", else "model_type").
//
// Read: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size and vocab_size are
// required; num_key_value_heads (default: num_attention_heads), head_dim (must equal
// hidden_size / num_attention_heads when given), rope_theta, rope_scaling (null, "default",
// "linear" or "llama3" under "rope_type" or the older "type"), rms_norm_eps,
// tie_word_embeddings, attention_bias (Llama; Qwen2 always has q/k/v biases),
// max_position_embeddings and bos/eos_token_id take the transformers defaults of the family when
// absent. EOS ids come from generation_config.json's eos_token_id (an id or a list) when given,
// else from config.json's. Unsupported features are errors, not silent approximations:
// hidden_act other than silu, mlp_bias, rope_scaling types other than the above, partial rotary,
// Qwen2's use_sliding_window. (Mistral's sliding_window is logged and ignored, as llama.cpp does.)
// Every error is InvalidArgument naming the file and the key.
//
// Thread safety: free functions, no shared state.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/model/model_config.h"

namespace funnel {

// Parses the texts of config.json and generation_config.json (empty: absent); `name` becomes
// ModelConfig::name unless config.json has a non-empty "_name_or_path". The result is validated.
absl::StatusOr<ModelConfig> ModelConfigFromHfJson(std::string_view config_json,
                                                  std::string_view generation_config_json,
                                                  const std::string& name);

// Reads `dir`/config.json (required) and `dir`/generation_config.json (optional).
absl::StatusOr<ModelConfig> ModelConfigFromHfDir(const std::string& dir);

// config.json for `config` as a LlamaForCausalLM; `torch_dtype` is "float32", "float16" or
// "bfloat16". Fails for rope_dim != head_dim (HF Llama has no partial rotary).
absl::StatusOr<std::string> HfConfigJson(const ModelConfig& config, const std::string& torch_dtype);

// generation_config.json: bos_token_id, and eos_token_id (one id, or a list when several).
std::string HfGenerationConfigJson(const ModelConfig& config);

}  // namespace funnel
