// GGUF llama model -> Hugging Face model directory (`funnel model convert --to-hf`).
//
// Writes into `out_dir` (created if needed; refused if it already holds config.json or
// safetensors weights):
//   model.safetensors        HF tensor names (model.embed_tokens.weight,
//                            model.layers.N.self_attn.{q,k,v,o}_proj.weight,
//                            model.layers.N.mlp.{gate,up,down}_proj.weight,
//                            model.layers.N.{input,post_attention}_layernorm.weight,
//                            model.norm.weight, lm_head.weight unless the GGUF has no
//                            output.weight, i.e. tied); F32/F16/BF16 matrices keep their type,
//                            Q8_0 ones are dequantized to F32, norms are F32. The Q/K rows are
//                            permuted back from GGUF's adjacent-pair RoPE order to HF's half-split
//                            order (qk_permutation.h), undoing llama.cpp's convert permutation.
//                            "__metadata__": {"format": "pt"}.
//   config.json, generation_config.json   (hf_config.h)
//   tokenizer.json, tokenizer_config.json, special_tokens_map.json   (hf_tokenizer_writer.h;
//                            skipped with a warning when the GGUF has no tokenizer)
// Everything is checked (model shapes, tokenizer support) before the first file is written; each
// file is written through a temporary file and a rename.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace funnel {

struct HfConversion {
  std::vector<std::string> files;  // names written, in order
  int64_t tensor_bytes = 0;        // bytes of tensor data in model.safetensors
  int32_t num_tensors = 0;
};

absl::StatusOr<HfConversion> ConvertGgufToHf(const std::string& gguf_path,
                                             const std::string& out_dir);

}  // namespace funnel
