#include "runtime/model/random_model.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cpu/convert.h"
#include "kernels/cpu/random_fill.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

// [rows, cols] of stream `seed` (value r * cols + c), encoded as `type`.
std::vector<uint8_t> EncodeMatrix(GgmlType type, int64_t rows, int64_t cols, float bound,
                                  uint64_t seed) {
  const auto wt = static_cast<WeightType>(type);
  const int64_t row_bytes = RowBytes(wt, cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    FillUniformAt(row.data(), cols, seed, static_cast<uint64_t>(r * cols), bound);
    uint8_t* dst = out.data() + r * row_bytes;
    switch (type) {
      case GgmlType::kF32:
        std::memcpy(dst, row.data(), static_cast<size_t>(row_bytes));
        break;
      case GgmlType::kF16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = Fp32ToFp16(row[c]);
          std::memcpy(dst + 2 * c, &h, 2);
        }
        break;
      case GgmlType::kBF16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = Fp32ToBf16(row[c]);
          std::memcpy(dst + 2 * c, &h, 2);
        }
        break;
      default:
        QuantizeRowQ8_0(row.data(), dst, cols);
        break;
    }
  }
  return out;
}

std::vector<uint8_t> Ones(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n), 1.0f);
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

void AddVocab(GgufWriter& w, int32_t vocab_size) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(absl::StrFormat("<0x%02X>", b));
    types.push_back(6);
  }
  const std::string space = "\xe2\x96\x81";  // U+2581
  std::vector<std::string> extra = {space};
  for (char ch = 33; ch < 127; ++ch) extra.push_back(std::string(1, ch));
  for (char ch = 'a'; ch <= 'z'; ++ch) extra.push_back(space + ch);
  for (char a = 'a'; a <= 'z'; ++a) {
    for (char b = 'a'; b <= 'z'; ++b) extra.push_back(std::string{a, b});
  }
  for (char a = 'a'; a <= 'z'; ++a) {
    for (char b = 'a'; b <= 'z'; ++b) extra.push_back(space + a + b);
  }
  for (size_t i = 0; tokens.size() < static_cast<size_t>(vocab_size); ++i) {
    tokens.push_back(i < extra.size() ? extra[i] : absl::StrCat(space, "tok", i));
    types.push_back(1);
  }
  std::vector<float> scores(tokens.size(), 0.0f);
  for (size_t i = 259; i < scores.size(); ++i) scores[i] = -static_cast<float>(i);
  w.AddString("tokenizer.ggml.model", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", tokens);
  w.AddFloat32Array("tokenizer.ggml.scores", scores);
  w.AddInt32Array("tokenizer.ggml.token_type", types);
  w.AddUint32("tokenizer.ggml.bos_token_id", 1);
  w.AddUint32("tokenizer.ggml.eos_token_id", 2);
  w.AddUint32("tokenizer.ggml.unknown_token_id", 0);
  w.AddBool("tokenizer.ggml.add_bos_token", true);
  w.AddBool("tokenizer.ggml.add_eos_token", false);
}

}  // namespace

absl::Status RandomModelSpec::Validate() const {
  if (num_layers < 1 || dim < 1 || num_heads < 1 || num_kv_heads < 1 || ffn_dim < 1) {
    return absl::InvalidArgumentError("random model: sizes must be positive");
  }
  if (dim % num_heads != 0 || num_heads % num_kv_heads != 0 || (dim / num_heads) % 2 != 0) {
    return absl::InvalidArgumentError(
        "random model: dim must split into an even head_dim, heads into KV-head groups");
  }
  if (vocab_size < 259)
    return absl::InvalidArgumentError("random model: vocab must be at least 259");
  if (matrix_type != GgmlType::kF32 && matrix_type != GgmlType::kF16 &&
      matrix_type != GgmlType::kBF16 && matrix_type != GgmlType::kQ8_0) {
    return absl::InvalidArgumentError("random model: type must be F32, F16, BF16 or Q8_0");
  }
  if (matrix_type == GgmlType::kQ8_0 && (dim % 32 != 0 || ffn_dim % 32 != 0)) {
    return absl::InvalidArgumentError("random model: Q8_0 needs dim and ffn multiples of 32");
  }
  return absl::OkStatus();
}

absl::Status WriteRandomModel(const RandomModelSpec& s, const std::string& path) {
  RETURN_IF_ERROR(s.Validate());
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddString("general.name", s.name);
  w.AddUint32("llama.block_count", s.num_layers);
  w.AddUint32("llama.embedding_length", s.dim);
  w.AddUint32("llama.feed_forward_length", s.ffn_dim);
  w.AddUint32("llama.attention.head_count", s.num_heads);
  w.AddUint32("llama.attention.head_count_kv", s.num_kv_heads);
  w.AddUint32("llama.context_length", s.context_length);
  w.AddUint32("llama.rope.dimension_count", s.dim / s.num_heads);
  w.AddFloat32("llama.rope.freq_base", s.rope_theta);
  w.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  AddVocab(w, s.vocab_size);

  uint64_t stream = s.seed;  // one stream per matrix, in file order (random_model.h)
  const int64_t head_dim = s.dim / s.num_heads;
  const int64_t kv_dim = head_dim * s.num_kv_heads;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    w.AddTensor(name, {cols, rows}, s.matrix_type,
                EncodeMatrix(s.matrix_type, rows, cols, RandomMatrixBound(cols), stream++));
  };
  // Embeddings scaled up so activations are O(1), as in trained models.
  w.AddTensor("token_embd.weight", {s.dim, s.vocab_size}, s.matrix_type,
              EncodeMatrix(s.matrix_type, s.vocab_size, s.dim, 1.0f, stream++));
  w.AddTensor("output_norm.weight", {s.dim}, GgmlType::kF32, Ones(s.dim));
  if (!s.tied_output) matrix("output.weight", s.vocab_size, s.dim);
  for (int32_t l = 0; l < s.num_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    w.AddTensor(p + "attn_norm.weight", {s.dim}, GgmlType::kF32, Ones(s.dim));
    matrix(p + "attn_q.weight", s.dim, s.dim);
    matrix(p + "attn_k.weight", kv_dim, s.dim);
    matrix(p + "attn_v.weight", kv_dim, s.dim);
    matrix(p + "attn_output.weight", s.dim, s.dim);
    w.AddTensor(p + "ffn_norm.weight", {s.dim}, GgmlType::kF32, Ones(s.dim));
    matrix(p + "ffn_gate.weight", s.ffn_dim, s.dim);
    matrix(p + "ffn_up.weight", s.ffn_dim, s.dim);
    matrix(p + "ffn_down.weight", s.dim, s.ffn_dim);
  }
  return w.WriteFile(path);
}

}  // namespace funnel
