#include "runtime/model/hf_converter.h"

#include <filesystem>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/convert.h"
#include "runtime/model/hf_config.h"
#include "runtime/model/hf_tokenizer_writer.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/qk_permutation.h"
#include "runtime/model/safetensors_writer.h"
#include "runtime/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

namespace fs = std::filesystem;

SafetensorsDtype OutputDtype(WeightType type) {
  switch (type) {
    case WeightType::kF16:
      return SafetensorsDtype::kF16;
    case WeightType::kBF16:
      return SafetensorsDtype::kBF16;
    case WeightType::kF32:
    case WeightType::kQ8_0:
      return SafetensorsDtype::kF32;
  }
  return SafetensorsDtype::kF32;
}

// A matrix written row by row (rows permuted when `permutation` is set; Q8_0 dequantized).
// `m` must stay valid until the write is done.
SafetensorsWriteEntry MatrixEntry(std::string name, const WeightMatrix& m,
                                  std::optional<QkPermutation> permutation, int64_t head_dim) {
  SafetensorsWriteEntry e{std::move(name), OutputDtype(m.type), {m.rows, m.cols}, nullptr};
  e.write = [m, permutation, head_dim](std::ostream& out) {
    std::vector<float> row(m.type == WeightType::kQ8_0 ? static_cast<size_t>(m.cols) : 0);
    const auto row_bytes = static_cast<std::streamsize>(RowBytes(m.type, m.cols));
    for (int64_t r = 0; r < m.rows; ++r) {
      const int64_t src = permutation ? QkSourceRow(*permutation, r, head_dim) : r;
      if (m.type == WeightType::kQ8_0) {
        DequantizeRow(m.type, m.Row(src), row.data(), m.cols);
        out.write(reinterpret_cast<const char*>(row.data()),
                  static_cast<std::streamsize>(row.size() * sizeof(float)));
      } else {
        out.write(reinterpret_cast<const char*>(m.Row(src)), row_bytes);
      }
    }
    return absl::OkStatus();
  };
  return e;
}

SafetensorsWriteEntry VectorEntry(std::string name, const std::vector<float>& v) {
  return SafetensorsBytesEntry(std::move(name), SafetensorsDtype::kF32,
                               {static_cast<int64_t>(v.size())},
                               std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()),
                                                        v.size() * sizeof(float)));
}

std::vector<SafetensorsWriteEntry> TensorEntries(const ModelWeights& w) {
  const ModelConfig& c = w.config();
  std::vector<SafetensorsWriteEntry> entries;
  entries.push_back(MatrixEntry("model.embed_tokens.weight", w.token_embedding(), {}, 0));
  const auto to_hf = QkPermutation::kAdjacentToHalfSplit;
  for (int32_t i = 0; i < c.num_layers; ++i) {
    const LayerWeights& l = w.layer(i);
    const std::string p = absl::StrCat("model.layers.", i, ".");
    entries.push_back(VectorEntry(p + "input_layernorm.weight", l.attn_norm));
    entries.push_back(MatrixEntry(p + "self_attn.q_proj.weight", l.wq, to_hf, c.head_dim));
    entries.push_back(MatrixEntry(p + "self_attn.k_proj.weight", l.wk, to_hf, c.head_dim));
    entries.push_back(MatrixEntry(p + "self_attn.v_proj.weight", l.wv, {}, 0));
    entries.push_back(MatrixEntry(p + "self_attn.o_proj.weight", l.wo, {}, 0));
    entries.push_back(VectorEntry(p + "post_attention_layernorm.weight", l.ffn_norm));
    entries.push_back(MatrixEntry(p + "mlp.gate_proj.weight", l.w_gate, {}, 0));
    entries.push_back(MatrixEntry(p + "mlp.up_proj.weight", l.w_up, {}, 0));
    entries.push_back(MatrixEntry(p + "mlp.down_proj.weight", l.w_down, {}, 0));
  }
  entries.push_back(VectorEntry("model.norm.weight", w.output_norm()));
  if (!c.tied_output) entries.push_back(MatrixEntry("lm_head.weight", w.output(), {}, 0));
  return entries;
}

// "float16" / "bfloat16" when every layer matrix has that type, else "float32".
std::string TorchDtype(const ModelWeights& w) {
  const WeightType first = w.layer(0).wq.type;
  for (int32_t i = 0; i < w.config().num_layers; ++i) {
    const LayerWeights& l = w.layer(i);
    for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      if (m->type != first) return "float32";
    }
  }
  if (first == WeightType::kF16) return "float16";
  if (first == WeightType::kBF16) return "bfloat16";
  return "float32";
}

absl::Status PrepareOutputDir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir, ec)) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create directory '", dir, "'"));
  }
  for (const char* f : {"config.json", "model.safetensors", "model.safetensors.index.json"}) {
    if (fs::exists(fs::path(dir) / f, ec)) {
      return absl::FailedPreconditionError(
          absl::StrCat("'", dir, "' already holds ", f, "; choose an empty directory"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HfConversion> ConvertGgufToHf(const std::string& gguf_path,
                                             const std::string& out_dir) {
  ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(gguf_path));
  std::shared_ptr<const GgufFile> gguf(std::move(file));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> w, ModelWeights::FromGguf(gguf));
  const ModelConfig& c = w->config();

  std::map<std::string, std::string> text_files;
  ASSIGN_OR_RETURN(text_files["config.json"], HfConfigJson(c, TorchDtype(*w)));
  text_files["generation_config.json"] = HfGenerationConfigJson(c);
  if (GgufHasTokenizer(*gguf)) {
    ASSIGN_OR_RETURN(auto tokenizer_files, HfTokenizerFiles(*gguf, c.context_length));
    text_files.merge(tokenizer_files);
  } else {
    spdlog::warn("{} has no tokenizer; writing weights and config only", gguf_path);
  }
  RETURN_IF_ERROR(PrepareOutputDir(out_dir));

  HfConversion result;
  std::vector<SafetensorsWriteEntry> entries = TensorEntries(*w);
  for (const SafetensorsWriteEntry& e : entries) {
    int64_t n = SafetensorsDtypeSize(e.dtype);
    for (int64_t d : e.shape) n *= d;
    result.tensor_bytes += n;
  }
  result.num_tensors = static_cast<int32_t>(entries.size());
  RETURN_IF_ERROR(WriteSafetensorsFile((fs::path(out_dir) / "model.safetensors").string(), entries,
                                       {{"format", "pt"}}));
  result.files.push_back("model.safetensors");
  for (const auto& [name, text] : text_files) {
    RETURN_IF_ERROR(WriteTextFile((fs::path(out_dir) / name).string(), text));
    result.files.push_back(name);
  }
  return result;
}

}  // namespace funnel
