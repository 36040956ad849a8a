#include "runtime/model/model_weights.h"

#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/convert.h"
#include "kernels/cpu/random_fill.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/model_config.h"
#include "runtime/model/random_model.h"
#include "tests/testing/test_data.h"

namespace funnel {
namespace {

using ::testing::Each;
using ::testing::HasSubstr;

class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string tmpl = ::testing::TempDir() + "/model_weights_test_XXXXXX";
    const char* dir = ::mkdtemp(tmpl.data());
    path_ = dir != nullptr ? dir : "";
  }
  ~ScopedTempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<float> Dequantize(const WeightMatrix& m, int64_t row) {
  std::vector<float> out(static_cast<size_t>(m.cols));
  DequantizeRow(m.type, m.Row(row), out.data(), m.cols);
  return out;
}

// ---------------------------------------------------------------------------------------------
// stories260K

TEST(ModelWeightsTest, Stories260K) {
  const std::string path = testing::SharedDataPath("models/stories260K/stories260K.gguf");
  auto w_or = ModelWeights::Open(path);
  ASSERT_TRUE(w_or.ok()) << w_or.status();
  const ModelWeights& w = **w_or;
  const ModelConfig& c = w.config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.name, "llama");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rope_dim, 8);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.context_length, 2048);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);  // absent from the file: the default
  EXPECT_EQ(c.rope_style, RopeStyle::kAdjacentPairs);
  EXPECT_TRUE(c.Validate().ok());
  EXPECT_THAT(c.Summary(), HasSubstr("5 layers"));

  // The classifier is shared in llama2.c, but the file stores it again as output.weight (an
  // identical copy), so the loader uses that tensor: tied_output is about the file's tensors.
  const GgufFile& g = w.gguf();
  ASSERT_NE(g.FindTensor("output.weight"), nullptr);
  EXPECT_FALSE(c.tied_output);
  EXPECT_EQ(w.output().data, g.FindTensor("output.weight")->data);
  EXPECT_EQ(std::memcmp(w.output().data, w.token_embedding().data, 512 * 64 * 4), 0);

  EXPECT_EQ(w.token_embedding().type, WeightType::kF32);
  EXPECT_EQ(w.token_embedding().rows, 512);
  EXPECT_EQ(w.token_embedding().cols, 64);
  EXPECT_EQ(w.token_embedding().data, g.FindTensor("token_embd.weight")->data);
  EXPECT_EQ(w.output().rows, 512);
  EXPECT_EQ(w.output().cols, 64);
  ASSERT_EQ(w.output_norm().size(), 64u);
  EXPECT_EQ(std::memcmp(w.output_norm().data(), g.FindTensor("output_norm.weight")->data, 256), 0);

  int64_t matrix_bytes = 512 * 64 * 4;  // output
  for (int l = 0; l < 5; ++l) {
    SCOPED_TRACE(l);
    const LayerWeights& lw = w.layer(l);
    const std::string p = absl::StrCat("blk.", l, ".");
    EXPECT_EQ(lw.wq.rows, 64);
    EXPECT_EQ(lw.wq.cols, 64);
    EXPECT_EQ(lw.wk.rows, 32);  // 4 KV heads x 8
    EXPECT_EQ(lw.wk.cols, 64);
    EXPECT_EQ(lw.wv.rows, 32);
    EXPECT_EQ(lw.wv.cols, 64);
    EXPECT_EQ(lw.wo.rows, 64);
    EXPECT_EQ(lw.wo.cols, 64);
    EXPECT_EQ(lw.w_gate.rows, 172);
    EXPECT_EQ(lw.w_gate.cols, 64);
    EXPECT_EQ(lw.w_up.rows, 172);
    EXPECT_EQ(lw.w_up.cols, 64);
    EXPECT_EQ(lw.w_down.rows, 64);
    EXPECT_EQ(lw.w_down.cols, 172);
    EXPECT_EQ(lw.wq.data, g.FindTensor(p + "attn_q.weight")->data);
    EXPECT_EQ(lw.wk.data, g.FindTensor(p + "attn_k.weight")->data);
    EXPECT_EQ(lw.wv.data, g.FindTensor(p + "attn_v.weight")->data);
    EXPECT_EQ(lw.wo.data, g.FindTensor(p + "attn_output.weight")->data);
    EXPECT_EQ(lw.w_gate.data, g.FindTensor(p + "ffn_gate.weight")->data);
    EXPECT_EQ(lw.w_up.data, g.FindTensor(p + "ffn_up.weight")->data);
    EXPECT_EQ(lw.w_down.data, g.FindTensor(p + "ffn_down.weight")->data);
    ASSERT_EQ(lw.attn_norm.size(), 64u);
    ASSERT_EQ(lw.ffn_norm.size(), 64u);
    EXPECT_EQ(std::memcmp(lw.attn_norm.data(), g.FindTensor(p + "attn_norm.weight")->data, 256), 0);
    EXPECT_EQ(std::memcmp(lw.ffn_norm.data(), g.FindTensor(p + "ffn_norm.weight")->data, 256), 0);
    matrix_bytes += 4 * (64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 3);
  }
  EXPECT_EQ(w.matrix_bytes(), matrix_bytes);
}

TEST(ModelWeightsTest, OpenMissingFileIsNotFound) {
  auto w = ModelWeights::Open("/nonexistent/model.gguf");
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("/nonexistent/model.gguf"));
}

TEST(ModelWeightsTest, VocabOnlyFilesAreRejected) {
  // A llama vocab GGUF has the hyper-parameters but no tensors.
  auto spm = ModelWeights::Open(
      testing::SharedDataPath("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf"));
  EXPECT_EQ(spm.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spm.status().message()), HasSubstr("token_embd.weight"));
  auto gpt2 = ModelWeights::Open(
      testing::SharedDataPath("tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(gpt2.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(gpt2.status().message()), HasSubstr("'gpt2'"));
}

// ---------------------------------------------------------------------------------------------
// WriteRandomModel

struct TypeCase {
  GgmlType ggml;
  WeightType weight;
  float tolerance;  // of a dequantized weight beyond the ±1/sqrt(fan_in) (or ±1) range
};

class RandomModelTest : public ::testing::TestWithParam<TypeCase> {};

TEST_P(RandomModelTest, WritesAndReopens) {
  const TypeCase tc = GetParam();
  ScopedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "separate output");
    RandomModelSpec spec;
    spec.name = "rnd";
    spec.num_layers = 3;
    spec.dim = 64;
    spec.num_heads = 4;
    spec.num_kv_heads = 2;
    spec.ffn_dim = 96;
    spec.vocab_size = 300;
    spec.context_length = 512;
    spec.rope_theta = 500000.0f;
    spec.tied_output = tied;
    spec.matrix_type = tc.ggml;
    spec.seed = 7;
    const std::string path = absl::StrCat(dir.path(), "/m_", tied, ".gguf");
    ASSERT_TRUE(WriteRandomModel(spec, path).ok());

    auto w_or = ModelWeights::Open(path);
    ASSERT_TRUE(w_or.ok()) << w_or.status();
    const ModelWeights& w = **w_or;
    const ModelConfig& c = w.config();
    EXPECT_EQ(c.name, "rnd");
    EXPECT_EQ(c.architecture, "llama");
    EXPECT_EQ(c.num_layers, 3);
    EXPECT_EQ(c.dim, 64);
    EXPECT_EQ(c.num_heads, 4);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.rope_dim, 16);
    EXPECT_EQ(c.ffn_dim, 96);
    EXPECT_EQ(c.vocab_size, 300);
    EXPECT_EQ(c.context_length, 512);
    EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
    EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
    EXPECT_EQ(c.tied_output, tied);

    const GgufFile& g = w.gguf();
    EXPECT_EQ(g.FindTensor("token_embd.weight")->type, tc.ggml);
    EXPECT_EQ(g.FindTensor("output_norm.weight")->type, GgmlType::kF32);
    EXPECT_EQ(g.FindTensor("output.weight") == nullptr, tied);
    auto tokens = g.GetStringArray("tokenizer.ggml.tokens");
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_EQ(tokens->size(), 300u);
    EXPECT_EQ((*tokens)[1], "<s>");

    EXPECT_EQ(w.token_embedding().type, tc.weight);
    EXPECT_EQ(w.output().type, tc.weight);
    if (tied) {
      EXPECT_EQ(w.output().data, w.token_embedding().data);
    } else {
      EXPECT_EQ(w.output().data, g.FindTensor("output.weight")->data);
    }
    EXPECT_THAT(w.output_norm(), Each(1.0f));
    int64_t matrix_bytes = 300 * RowBytes(tc.weight, 64);
    for (int l = 0; l < 3; ++l) {
      const LayerWeights& lw = w.layer(l);
      for (const WeightMatrix* m :
           {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down}) {
        EXPECT_EQ(m->type, tc.weight);
        matrix_bytes += m->rows * RowBytes(m->type, m->cols);
      }
      EXPECT_EQ(lw.wk.rows, 32);
      EXPECT_EQ(lw.wv.rows, 32);
      EXPECT_EQ(lw.w_down.cols, 96);
      EXPECT_THAT(lw.attn_norm, Each(1.0f));
      EXPECT_THAT(lw.ffn_norm, Each(1.0f));
    }
    EXPECT_EQ(w.matrix_bytes(), matrix_bytes);

    // Weights decode to the promised ranges and are not all zero.
    const std::vector<float> embd = Dequantize(w.token_embedding(), 299);
    const std::vector<float> down = Dequantize(w.layer(2).w_down, 63);
    float embd_max = 0.0f, down_max = 0.0f;
    for (float v : embd) embd_max = std::max(embd_max, std::fabs(v));
    for (float v : down) down_max = std::max(down_max, std::fabs(v));
    EXPECT_GT(embd_max, 0.5f);
    EXPECT_LE(embd_max, 1.0f + tc.tolerance);
    EXPECT_GT(down_max, 0.5f / std::sqrt(96.0f));
    EXPECT_LE(down_max, (1.0f + tc.tolerance) / std::sqrt(96.0f));
  }
}

// The documented streams: matrix t in file order holds UniformAt(seed + t, r * cols + c, bound)
// (what CudaModelRunner::CreateRandom makes on the device), checked element by element in F32.
TEST(RandomModelStreamsTest, MatricesFollowTheDocumentedStreams) {
  ScopedTempDir dir;
  for (bool tied : {false, true}) {
    RandomModelSpec spec;
    spec.num_layers = 2;
    spec.dim = 64;
    spec.num_heads = 4;
    spec.num_kv_heads = 2;
    spec.ffn_dim = 96;
    spec.vocab_size = 300;
    spec.tied_output = tied;
    spec.seed = 11;
    const std::string path = absl::StrCat(dir.path(), "/s_", tied, ".gguf");
    ASSERT_TRUE(WriteRandomModel(spec, path).ok());
    auto w = ModelWeights::Open(path);
    ASSERT_TRUE(w.ok()) << w.status();
    auto expect_stream = [&](const WeightMatrix& m, uint64_t t, float bound, const char* what) {
      for (int64_t r : {int64_t{0}, m.rows / 2, m.rows - 1}) {
        const std::vector<float> row = Dequantize(m, r);
        for (int64_t c = 0; c < m.cols; ++c) {
          ASSERT_EQ(row[static_cast<size_t>(c)],
                    UniformAt(spec.seed + t, static_cast<uint64_t>(r * m.cols + c), bound))
              << what << " row " << r << " col " << c << (tied ? " tied" : "");
        }
      }
    };
    const uint64_t first_layer = tied ? 1 : 2;
    expect_stream((*w)->token_embedding(), 0, 1.0f, "token_embd");
    if (!tied) expect_stream((*w)->output(), 1, RandomMatrixBound(64), "output");
    const LayerWeights& l1 = (*w)->layer(1);
    expect_stream(l1.wq, first_layer + 7, RandomMatrixBound(64), "blk.1.attn_q");
    expect_stream(l1.wv, first_layer + 9, RandomMatrixBound(64), "blk.1.attn_v");
    expect_stream(l1.w_down, first_layer + 13, RandomMatrixBound(96), "blk.1.ffn_down");
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, RandomModelTest,
                         ::testing::Values(TypeCase{GgmlType::kF32, WeightType::kF32, 0.0f},
                                           TypeCase{GgmlType::kF16, WeightType::kF16, 1e-3f},
                                           TypeCase{GgmlType::kBF16, WeightType::kBF16, 1e-2f},
                                           TypeCase{GgmlType::kQ8_0, WeightType::kQ8_0, 1e-2f}),
                         [](const ::testing::TestParamInfo<TypeCase>& info) {
                           return GgmlTypeName(info.param.ggml);
                         });

TEST(RandomModelGqaTest, HeadLayouts) {
  ScopedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  struct Case {
    int heads, kv_heads;
  };
  for (Case cs : {Case{8, 1}, Case{8, 2}, Case{8, 8}, Case{2, 1}}) {
    SCOPED_TRACE(absl::StrCat(cs.heads, "/", cs.kv_heads));
    RandomModelSpec spec;
    spec.num_layers = 1;
    spec.dim = 128;
    spec.num_heads = cs.heads;
    spec.num_kv_heads = cs.kv_heads;
    spec.ffn_dim = 64;
    spec.vocab_size = 259;
    const std::string path = absl::StrCat(dir.path(), "/gqa_", cs.heads, "_", cs.kv_heads);
    ASSERT_TRUE(WriteRandomModel(spec, path).ok());
    auto w = ModelWeights::Open(path);
    ASSERT_TRUE(w.ok()) << w.status();
    const int head_dim = 128 / cs.heads;
    EXPECT_EQ((*w)->config().head_dim, head_dim);
    EXPECT_EQ((*w)->config().num_kv_heads, cs.kv_heads);
    const LayerWeights& l = (*w)->layer(0);
    EXPECT_EQ(l.wq.rows, 128);
    EXPECT_EQ(l.wk.rows, cs.kv_heads * head_dim);
    EXPECT_EQ(l.wv.rows, cs.kv_heads * head_dim);
    EXPECT_EQ(l.wo.cols, 128);
    EXPECT_EQ((*w)->gguf().FindTensor("blk.0.attn_k.weight")->dims,
              (std::vector<int64_t>{128, cs.kv_heads * head_dim}));
  }
}

TEST(RandomModelSpecTest, RejectsBadSpecs) {
  ScopedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  auto bad = [&](auto mutate) {
    RandomModelSpec spec;
    mutate(spec);
    const absl::Status st = WriteRandomModel(spec, dir.path() + "/bad.gguf");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/bad.gguf"));
  };
  bad([](RandomModelSpec& s) { s.matrix_type = GgmlType::kQ8_0; });  // ffn 172 % 32 != 0
  bad([](RandomModelSpec& s) { s.matrix_type = GgmlType::kQ4_K; });
  bad([](RandomModelSpec& s) { s.vocab_size = 258; });
  bad([](RandomModelSpec& s) { s.num_heads = 3; });
  bad([](RandomModelSpec& s) { s.num_kv_heads = 3; });
  bad([](RandomModelSpec& s) { s.num_layers = 0; });
  bad([](RandomModelSpec& s) { s.dim = 4 * 3; });  // odd head_dim
  // Unwritable destination.
  RandomModelSpec spec;
  EXPECT_FALSE(WriteRandomModel(spec, "/nonexistent/dir/m.gguf").ok());
}

// ---------------------------------------------------------------------------------------------
// Hand-built models with defects

struct TinyModel {
  int dim = 64, layers = 2, heads = 4, kv_heads = 2, ffn = 96, vocab = 300;
  std::string architecture = "llama";
  GgmlType matrix_type = GgmlType::kF32;
  GgmlType norm_type = GgmlType::kF32;
  bool tied = false;
  std::map<std::string, std::vector<int64_t>> dims;      // per-tensor shape override
  std::map<std::string, GgmlType> types;                 // per-tensor type override
  std::set<std::string> omit;                            // tensors left out
  std::map<std::string, std::optional<GgufValue>> meta;  // metadata override (nullopt: drop)
};

std::vector<uint8_t> Encode(GgmlType type, const std::vector<int64_t>& dims, float value) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<float> f(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) f[i] = value * static_cast<float>((i % 7) - 3) / 3.0f;
  std::vector<uint8_t> out;
  switch (type) {
    case GgmlType::kF32:
      out.resize(f.size() * 4);
      std::memcpy(out.data(), f.data(), out.size());
      break;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      out.resize(f.size() * 2);
      for (size_t i = 0; i < f.size(); ++i) {
        const uint16_t h = type == GgmlType::kF16 ? Fp32ToFp16(f[i]) : Fp32ToBf16(f[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
      break;
    case GgmlType::kQ8_0:
      out.resize(f.size() / 32 * 34);
      QuantizeRowQ8_0(f.data(), out.data(), n);
      break;
    default:
      out.assign(static_cast<size_t>(std::max<int64_t>(n / 2, 1)), 0x11);
      break;
  }
  return out;
}

std::vector<uint8_t> BuildTiny(const TinyModel& m) {
  GgufWriter w;
  std::vector<std::pair<std::string, GgufValue>> meta = {
      {"general.architecture", GgufValue{GgufValueType::kString, m.architecture}},
      {"general.name", GgufValue{GgufValueType::kString, std::string("tiny")}},
      {m.architecture + ".block_count", GgufValue{GgufValueType::kUint32, uint64_t(m.layers)}},
      {m.architecture + ".embedding_length", GgufValue{GgufValueType::kUint32, uint64_t(m.dim)}},
      {m.architecture + ".feed_forward_length", GgufValue{GgufValueType::kUint32, uint64_t(m.ffn)}},
      {m.architecture + ".attention.head_count",
       GgufValue{GgufValueType::kUint32, uint64_t(m.heads)}},
      {m.architecture + ".attention.head_count_kv",
       GgufValue{GgufValueType::kUint32, uint64_t(m.kv_heads)}},
  };
  for (auto& [key, value] : meta) {
    auto it = m.meta.find(key);
    if (it == m.meta.end()) {
      w.AddValue(key, value);
    } else if (it->second) {
      w.AddValue(key, *it->second);
    }
  }
  for (const auto& [key, value] : m.meta) {
    bool standard = false;
    for (const auto& [k, v] : meta) standard |= k == key;
    if (!standard && value) w.AddValue(key, *value);
  }

  const int64_t head_dim = m.dim / m.heads;
  const int64_t q_dim = head_dim * m.heads, kv_dim = head_dim * m.kv_heads;
  auto add = [&](const std::string& name, std::vector<int64_t> dims, GgmlType type, float value) {
    if (m.omit.count(name)) return;
    if (auto it = m.dims.find(name); it != m.dims.end()) dims = it->second;
    if (auto it = m.types.find(name); it != m.types.end()) type = it->second;
    w.AddTensor(name, dims, type, Encode(type, dims, value));
  };
  add("token_embd.weight", {m.dim, m.vocab}, m.matrix_type, 1.0f);
  add("output_norm.weight", {m.dim}, m.norm_type, 1.5f);
  if (!m.tied) add("output.weight", {m.dim, m.vocab}, m.matrix_type, 0.5f);
  for (int l = 0; l < m.layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    add(p + "attn_norm.weight", {m.dim}, m.norm_type, 2.0f);
    add(p + "attn_q.weight", {m.dim, q_dim}, m.matrix_type, 0.1f);
    add(p + "attn_k.weight", {m.dim, kv_dim}, m.matrix_type, 0.1f);
    add(p + "attn_v.weight", {m.dim, kv_dim}, m.matrix_type, 0.1f);
    add(p + "attn_output.weight", {q_dim, m.dim}, m.matrix_type, 0.1f);
    add(p + "ffn_norm.weight", {m.dim}, m.norm_type, 3.0f);
    add(p + "ffn_gate.weight", {m.dim, m.ffn}, m.matrix_type, 0.1f);
    add(p + "ffn_up.weight", {m.dim, m.ffn}, m.matrix_type, 0.1f);
    add(p + "ffn_down.weight", {m.ffn, m.dim}, m.matrix_type, 0.1f);
  }
  return w.Serialize();
}

absl::StatusOr<std::unique_ptr<ModelWeights>> Load(const TinyModel& m) {
  const std::vector<uint8_t> bytes = BuildTiny(m);
  auto g = GgufFile::FromBytes(bytes);
  if (!g.ok()) return g.status();
  return ModelWeights::FromGguf(std::shared_ptr<const GgufFile>(std::move(*g)));
}

void ExpectLoadError(const TinyModel& m, absl::StatusCode code,
                     std::initializer_list<std::string> parts) {
  auto w = Load(m);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), code) << w.status();
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(w.status().message()), HasSubstr(part));
  }
}

TEST(TinyModelTest, LoadsAndConvertsNorms) {
  for (GgmlType norm : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0}) {
    SCOPED_TRACE(GgmlTypeName(norm));
    TinyModel m;
    m.norm_type = norm;
    m.matrix_type = GgmlType::kBF16;
    auto w = Load(m);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ((*w)->config().name, "tiny");
    EXPECT_EQ((*w)->config().context_length, 2048);  // default when absent
    EXPECT_EQ((*w)->token_embedding().type, WeightType::kBF16);
    // Pattern (i % 7 - 3) / 3 * scale: exactly representable in every norm type but Q8_0.
    const float tol = norm == GgmlType::kQ8_0 ? 0.02f : 0.0f;
    const std::vector<float>& n = (*w)->layer(1).ffn_norm;
    ASSERT_EQ(n.size(), 64u);
    for (int i = 0; i < 64; ++i) {
      const float want = 3.0f * static_cast<float>((i % 7) - 3) / 3.0f;
      EXPECT_NEAR(n[i], want, tol) << i;
    }
    EXPECT_NEAR((*w)->output_norm()[6], 1.5f, tol);
  }
}

TEST(TinyModelTest, MixedMatrixTypesLoad) {
  TinyModel m;
  m.types["blk.0.attn_q.weight"] = GgmlType::kQ8_0;
  m.types["blk.0.attn_k.weight"] = GgmlType::kF16;
  m.types["blk.1.ffn_down.weight"] = GgmlType::kBF16;
  auto w = Load(m);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->layer(0).wq.type, WeightType::kQ8_0);
  EXPECT_EQ((*w)->layer(0).wk.type, WeightType::kF16);
  EXPECT_EQ((*w)->layer(0).wv.type, WeightType::kF32);
  EXPECT_EQ((*w)->layer(1).w_down.type, WeightType::kBF16);
}

TEST(TinyModelTest, WrongShapeNamesTheTensor) {
  {
    TinyModel m;
    m.dims["blk.1.attn_k.weight"] = {64, 64};
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument,
                    {"blk.1.attn_k.weight", "[64, 64]", "expected [64, 32]"});
  }
  {  // transposed
    TinyModel m;
    m.dims["blk.0.ffn_down.weight"] = {64, 96};
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument,
                    {"blk.0.ffn_down.weight", "expected [96, 64]"});
  }
  {  // a norm with an extra dimension
    TinyModel m;
    m.dims["output_norm.weight"] = {64, 1};
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument, {"output_norm.weight", "[64, 1]"});
  }
  {  // output with a different vocabulary than the embedding
    TinyModel m;
    m.dims["output.weight"] = {64, 301};
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument, {"output.weight", "[64, 301]"});
  }
  {  // the embedding must be 2-D
    TinyModel m;
    m.dims["token_embd.weight"] = {64 * 300};
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument, {"token_embd.weight", "2-D"});
  }
}

TEST(TinyModelTest, MissingTensorNamesTheTensor) {
  for (const std::string name :
       {"token_embd.weight", "output_norm.weight", "blk.0.attn_norm.weight", "blk.1.attn_q.weight",
        "blk.1.attn_output.weight", "blk.0.ffn_norm.weight", "blk.1.ffn_up.weight",
        "blk.1.ffn_down.weight"}) {
    SCOPED_TRACE(name);
    TinyModel m;
    m.omit.insert(name);
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument, {"missing tensor " + name});
  }
  // Without output.weight the model is tied, not broken.
  TinyModel m;
  m.tied = true;
  auto w = Load(m);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE((*w)->config().tied_output);
  EXPECT_EQ((*w)->output().data, (*w)->token_embedding().data);
  // A layer beyond block_count is simply not read; a missing one is an error.
  TinyModel more;
  more.meta["llama.block_count"] = GgufValue{GgufValueType::kUint32, uint64_t{3}};
  ExpectLoadError(more, absl::StatusCode::kInvalidArgument, {"missing tensor blk.2."});
}

TEST(TinyModelTest, UnsupportedTypeNamesTheType) {
  {
    TinyModel m;
    m.types["blk.0.attn_q.weight"] = GgmlType::kQ4_K;
    m.dims["blk.0.attn_q.weight"] = {64, 64};
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument,
                    {"blk.0.attn_q.weight", "Q4_K", "supported: F32, F16, BF16, Q8_0"});
  }
  {
    TinyModel m;
    m.types["blk.1.ffn_norm.weight"] = static_cast<GgmlType>(12);
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument, {"blk.1.ffn_norm.weight", "Q4_K"});
  }
  {
    TinyModel m;
    m.types["token_embd.weight"] = GgmlType::kI8;
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument, {"token_embd.weight", "I8"});
  }
  {
    TinyModel m;
    m.types["output.weight"] = static_cast<GgmlType>(77);
    ExpectLoadError(m, absl::StatusCode::kInvalidArgument, {"output.weight", "type(77)"});
  }
}

TEST(TinyModelTest, ArchitectureMustBeLlama) {
  TinyModel m;
  m.architecture = "gpt2";
  ExpectLoadError(m, absl::StatusCode::kInvalidArgument,
                  {"unsupported model architecture 'gpt2'", "llama"});
  TinyModel none;
  none.meta["general.architecture"] = std::nullopt;
  ExpectLoadError(none, absl::StatusCode::kNotFound, {"general.architecture"});
  TinyModel number;
  number.meta["general.architecture"] = GgufValue{GgufValueType::kUint32, uint64_t{1}};
  ExpectLoadError(number, absl::StatusCode::kInvalidArgument, {"general.architecture"});
}

TEST(TinyModelTest, BadHyperParameters) {
  auto with = [](const std::string& key, std::optional<GgufValue> v) {
    TinyModel m;
    m.meta[key] = std::move(v);
    return m;
  };
  auto u32 = [](uint64_t v) { return GgufValue{GgufValueType::kUint32, v}; };
  ExpectLoadError(with("llama.block_count", std::nullopt), absl::StatusCode::kNotFound,
                  {"llama.block_count"});
  ExpectLoadError(with("llama.embedding_length", std::nullopt), absl::StatusCode::kNotFound,
                  {"llama.embedding_length"});
  ExpectLoadError(with("llama.block_count", u32(0)), absl::StatusCode::kInvalidArgument,
                  {"llama.block_count", "out of range"});
  ExpectLoadError(with("llama.block_count", GgufValue{GgufValueType::kInt32, int64_t{-2}}),
                  absl::StatusCode::kInvalidArgument, {"llama.block_count", "out of range"});
  ExpectLoadError(with("llama.block_count", GgufValue{GgufValueType::kUint64, uint64_t{1} << 40}),
                  absl::StatusCode::kInvalidArgument, {"llama.block_count", "out of range"});
  ExpectLoadError(
      with("llama.feed_forward_length", GgufValue{GgufValueType::kString, std::string("96")}),
      absl::StatusCode::kInvalidArgument, {"llama.feed_forward_length"});
  ExpectLoadError(with("llama.attention.head_count", u32(3)), absl::StatusCode::kInvalidArgument,
                  {"not a multiple of 3 heads"});
  ExpectLoadError(with("llama.attention.head_count_kv", u32(3)), absl::StatusCode::kInvalidArgument,
                  {"4 heads are not a multiple of 3 KV heads"});
  ExpectLoadError(with("llama.rope.dimension_count", u32(5)), absl::StatusCode::kInvalidArgument,
                  {"rope dimension 5"});
  ExpectLoadError(with("llama.rope.dimension_count", u32(32)), absl::StatusCode::kInvalidArgument,
                  {"rope dimension 32"});
  ExpectLoadError(with("llama.rope.freq_base", GgufValue{GgufValueType::kFloat32, -1.0}),
                  absl::StatusCode::kInvalidArgument, {"rope theta"});
  ExpectLoadError(
      with("llama.attention.layer_norm_rms_epsilon", GgufValue{GgufValueType::kFloat32, 0.0}),
      absl::StatusCode::kInvalidArgument, {"epsilon"});
  ExpectLoadError(with("llama.context_length", u32(0)), absl::StatusCode::kInvalidArgument,
                  {"llama.context_length"});
  // head_count_kv is optional (defaults to head_count, i.e. MHA).
  TinyModel mha = with("llama.attention.head_count_kv", std::nullopt);
  mha.kv_heads = 4;
  auto w = Load(mha);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->config().num_kv_heads, 4);
  // Partial rotary dims are accepted.
  auto partial = Load(with("llama.rope.dimension_count", u32(8)));
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ((*partial)->config().rope_dim, 8);
}

}  // namespace
}  // namespace funnel
