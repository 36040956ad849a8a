// GGUF -> HF conversion and HF model directory loading:
//   - stories260K.gguf converted to an HF directory and loaded back gives the GGUF's logits (and
//     llama2.c's golden ones) through the CPU model runner, from one file and from two shards;
//   - the HF files hold HF's half-split Q/K row order (the GGUF permutation undone) and the
//     loader re-permutes it;
//   - the tokenizer files written for SentencePiece vocabularies (stories' 512 pieces, Llama 2's
//     32000) tokenize the llama.cpp test strings exactly as the reference did;
//   - the loader's errors: missing tensors, shapes that disagree with config.json, dtypes,
//     unsupported biases; Qwen2-style q/k/v biases load permuted like their rows.
// (tests/unit/model/hf_reference_test.py checks the same files against PyTorch.)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/convert.h"
#include "nlohmann/json.hpp"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/model/hf_converter.h"
#include "runtime/model/hf_tokenizer_writer.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/qk_permutation.h"
#include "runtime/model/random_model.h"
#include "runtime/model/safetensors_writer.h"
#include "runtime/text/tokenizer_loader.h"
#include "tests/testing/golden.h"
#include "tests/unit/model/hf_test_util.h"

namespace funnel {
namespace {

namespace fs = std::filesystem;
using ::funnel::testing::ScopedTempDir;
using ::testing::HasSubstr;

constexpr char kSpmVocab[] = "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf";
constexpr char kTinyRandom[] = "models/random-weights/llama-2-tiny-random.gguf";

std::unique_ptr<ModelWeights> MustOpen(const std::string& path) {
  auto w = OpenModel(path);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? std::move(*w) : nullptr;
}

// Logits of every position of `tokens`, fed as one prefill.
std::vector<float> AllLogits(const ModelWeights& w, std::span<const int32_t> tokens) {
  RunnerOptions o;
  o.num_threads = 2;
  o.block_size = 16;
  o.kv_cache_bytes = int64_t{16} << 20;
  auto runner = CpuModelRunner::Create(w, o);
  EXPECT_TRUE(runner.ok()) << runner.status();
  if (!runner.ok()) return {};
  SequenceKv kv = (*runner)->NewSequence();
  StepSequence s{&kv, tokens, true};
  std::vector<float> logits;
  absl::Status st = (*runner)->Step({&s, 1}, logits);
  EXPECT_TRUE(st.ok()) << st;
  (*runner)->Release(kv);
  return logits;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0.0f;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

bool SameRows(const WeightMatrix& a, int64_t ra, const WeightMatrix& b, int64_t rb) {
  const int64_t bytes = RowBytes(a.type, a.cols);
  return a.type == b.type && a.cols == b.cols &&
         std::memcmp(a.Row(ra), b.Row(rb), static_cast<size_t>(bytes)) == 0;
}

bool SameMatrix(const WeightMatrix& a, const WeightMatrix& b) {
  if (a.rows != b.rows) return false;
  for (int64_t r = 0; r < a.rows; ++r) {
    if (!SameRows(a, r, b, r)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// A converted stories260K, shared by the tests of this suite.

class Stories260KHfTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScopedTempDir();
    auto c = ConvertGgufToHf(testing::Stories260KPath(), HfDir());
    ASSERT_TRUE(c.ok()) << c.status();
    conversion_ = new HfConversion(*c);
  }
  static void TearDownTestSuite() {
    delete conversion_;
    delete dir_;
  }
  static std::string HfDir() { return dir_->Sub("stories260K-hf"); }

  static ScopedTempDir* dir_;
  static HfConversion* conversion_;
};
ScopedTempDir* Stories260KHfTest::dir_ = nullptr;
HfConversion* Stories260KHfTest::conversion_ = nullptr;

TEST_F(Stories260KHfTest, ConverterWritesAnHfDirectory) {
  EXPECT_THAT(conversion_->files,
              ::testing::UnorderedElementsAre("model.safetensors", "config.json",
                                              "generation_config.json", "tokenizer.json",
                                              "tokenizer_config.json", "special_tokens_map.json"));
  // 5 layers x 9 + embedding, final norm and lm_head (the GGUF stores output.weight).
  EXPECT_EQ(conversion_->num_tensors, 48);
  auto file = SafetensorsFile::Open(HfDir() + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  for (const char* name :
       {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
        "model.layers.4.self_attn.q_proj.weight", "model.layers.4.self_attn.k_proj.weight",
        "model.layers.4.self_attn.v_proj.weight", "model.layers.4.self_attn.o_proj.weight",
        "model.layers.4.mlp.gate_proj.weight", "model.layers.4.mlp.up_proj.weight",
        "model.layers.4.mlp.down_proj.weight", "model.layers.4.input_layernorm.weight",
        "model.layers.4.post_attention_layernorm.weight"}) {
    const SafetensorsTensor* t = (*file)->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, SafetensorsDtype::kF32) << name;
  }
  EXPECT_EQ((*file)->Find("model.layers.0.self_attn.k_proj.weight")->shape,
            (std::vector<int64_t>{32, 64}));
  EXPECT_EQ((*file)->Find("model.layers.0.mlp.down_proj.weight")->shape,
            (std::vector<int64_t>{64, 172}));

  const auto config = nlohmann::json::parse(testing::ReadText(HfDir() + "/config.json"));
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config["num_key_value_heads"], 4);
  EXPECT_EQ(config["tie_word_embeddings"], false);
  EXPECT_EQ(config["torch_dtype"], "float32");
  const auto gen = nlohmann::json::parse(testing::ReadText(HfDir() + "/generation_config.json"));
  EXPECT_EQ(gen["eos_token_id"], 2);
  EXPECT_EQ(gen["bos_token_id"], 1);
}

TEST_F(Stories260KHfTest, QkRowsAreInHalfSplitOrderInTheFile) {
  auto gguf = GgufFile::Open(testing::Stories260KPath());
  ASSERT_TRUE(gguf.ok());
  auto file = SafetensorsFile::Open(HfDir() + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  const int64_t head_dim = 8, half = 4, row_bytes = 64 * 4;
  for (const auto& [hf, gg, heads] : std::vector<std::tuple<std::string, std::string, int>>{
           {"model.layers.2.self_attn.q_proj.weight", "blk.2.attn_q.weight", 8},
           {"model.layers.2.self_attn.k_proj.weight", "blk.2.attn_k.weight", 4}}) {
    const uint8_t* h = (*file)->Find(hf)->data;
    const uint8_t* g = (*gguf)->FindTensor(gg)->data;
    // llama.cpp: gguf_row(head, 2i + j) = hf_row(head, j * half + i).
    for (int head = 0; head < heads; ++head) {
      for (int64_t i = 0; i < half; ++i) {
        for (int64_t j = 0; j < 2; ++j) {
          const int64_t hf_row = head * head_dim + j * half + i;
          const int64_t gg_row = head * head_dim + 2 * i + j;
          EXPECT_EQ(std::memcmp(h + hf_row * row_bytes, g + gg_row * row_bytes, row_bytes), 0)
              << hf << " head " << head << " i " << i << " j " << j;
        }
      }
    }
    EXPECT_NE(std::memcmp(h, g, static_cast<size_t>(heads * head_dim * row_bytes)), 0);
  }
  // Other tensors are byte copies.
  EXPECT_EQ(std::memcmp((*file)->Find("model.layers.2.self_attn.v_proj.weight")->data,
                        (*gguf)->FindTensor("blk.2.attn_v.weight")->data, 32 * 64 * 4),
            0);
}

TEST_F(Stories260KHfTest, LoadsBackAsTheSameModel) {
  auto gguf = MustOpen(testing::Stories260KPath());
  auto hf = MustOpen(HfDir());
  ASSERT_TRUE(gguf && hf);
  EXPECT_FALSE(hf->has_gguf());
  const ModelConfig& a = gguf->config();
  const ModelConfig& b = hf->config();
  EXPECT_EQ(b.name, "stories260K-hf");
  EXPECT_EQ(b.architecture, "llama");
  EXPECT_EQ(std::tie(a.num_layers, a.dim, a.ffn_dim, a.num_heads, a.num_kv_heads, a.head_dim,
                     a.rope_dim, a.vocab_size, a.context_length, a.tied_output),
            std::tie(b.num_layers, b.dim, b.ffn_dim, b.num_heads, b.num_kv_heads, b.head_dim,
                     b.rope_dim, b.vocab_size, b.context_length, b.tied_output));
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(b.bos_id, 1);
  EXPECT_EQ(b.eos_ids, std::vector<int32_t>{2});
  EXPECT_EQ(hf->rope_inv_freq(), gguf->rope_inv_freq());
  // The loader re-permutes Q/K into exactly the GGUF's rows.
  for (int32_t l = 0; l < a.num_layers; ++l) {
    const LayerWeights& x = gguf->layer(l);
    const LayerWeights& y = hf->layer(l);
    for (auto [m, n] : {std::pair{&x.wq, &y.wq},
                        {&x.wk, &y.wk},
                        {&x.wv, &y.wv},
                        {&x.wo, &y.wo},
                        {&x.w_gate, &y.w_gate},
                        {&x.w_up, &y.w_up},
                        {&x.w_down, &y.w_down}}) {
      EXPECT_TRUE(SameMatrix(*m, *n)) << "layer " << l;
    }
    EXPECT_EQ(x.attn_norm, y.attn_norm);
    EXPECT_EQ(x.ffn_norm, y.ffn_norm);
    EXPECT_TRUE(y.bq.empty() && y.bk.empty() && y.bv.empty());
  }
  EXPECT_TRUE(SameMatrix(gguf->token_embedding(), hf->token_embedding()));
  EXPECT_TRUE(SameMatrix(gguf->output(), hf->output()));
  EXPECT_EQ(gguf->output_norm(), hf->output_norm());
  EXPECT_EQ(gguf->matrix_bytes(), hf->matrix_bytes());
}

TEST_F(Stories260KHfTest, SameLogitsAsTheGgufAndTheGolden) {
  const auto golden = testing::LoadStories260KGolden();
  ASSERT_EQ(golden.logits.size(), 48u);
  std::span<const int32_t> fed(golden.full_sequence.data(), 48);
  auto gguf = MustOpen(testing::Stories260KPath());
  auto hf = MustOpen(HfDir());
  ASSERT_TRUE(gguf && hf);
  const std::vector<float> a = AllLogits(*gguf, fed);
  const std::vector<float> b = AllLogits(*hf, fed);
  ASSERT_EQ(b.size(), 48u * 512u);
  const float diff = MaxAbsDiff(a, b);
  std::printf("stories260K HF vs GGUF: max |logit diff| over 48 positions = %g\n", diff);
  EXPECT_LE(diff, 1e-4f);
  std::vector<float> ref;
  for (const auto& row : golden.logits) ref.insert(ref.end(), row.begin(), row.end());
  EXPECT_LT(MaxAbsDiff(b, ref), 1e-3f);
}

TEST_F(Stories260KHfTest, ShardedCopyLoadsIdentically) {
  // Split model.safetensors into two shards (by tensor) with an index, as transformers does.
  const std::string sharded = dir_->Sub("sharded");
  fs::create_directories(sharded);
  auto single = SafetensorsFile::Open(HfDir() + "/model.safetensors");
  ASSERT_TRUE(single.ok());
  const auto& tensors = (*single)->tensors();
  const size_t split = tensors.size() / 2;
  nlohmann::json weight_map = nlohmann::json::object();
  for (int shard = 0; shard < 2; ++shard) {
    const std::string name =
        shard == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    std::vector<SafetensorsWriteEntry> entries;
    for (size_t i = shard == 0 ? 0 : split; i < (shard == 0 ? split : tensors.size()); ++i) {
      const SafetensorsTensor& t = tensors[i];
      entries.push_back(SafetensorsBytesEntry(t.name, t.dtype, t.shape,
                                              {t.data, static_cast<size_t>(t.num_bytes())}));
      weight_map[t.name] = name;
    }
    ASSERT_TRUE(WriteSafetensorsFile(sharded + "/" + name, entries, {{"format", "pt"}}).ok());
  }
  nlohmann::json index = {{"metadata", {{"total_size", 1171200}}}, {"weight_map", weight_map}};
  testing::WriteText(sharded + "/model.safetensors.index.json", index.dump(2));
  fs::copy_file(HfDir() + "/config.json", sharded + "/config.json");

  auto hf = MustOpen(HfDir());
  auto sh = MustOpen(sharded);
  ASSERT_TRUE(hf && sh);
  const auto golden = testing::LoadStories260KGolden();
  std::span<const int32_t> fed(golden.full_sequence.data(), 48);
  EXPECT_EQ(AllLogits(*hf, fed), AllLogits(*sh, fed));
}

TEST_F(Stories260KHfTest, TokenizerFilesReproduceTheGgufTokenizer) {
  auto loaded = LoadTokenizerAndTemplate(HfDir());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer& tok = *loaded->tokenizer;
  const auto golden = testing::LoadStories260KGolden();
  EXPECT_EQ(tok.Encode("Once upon a time"), golden.prompt_ids);
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer files against the llama.cpp test vectors

std::vector<std::string> VectorInputs() {
  const std::string raw =
      testing::ReadText(testing::SharedDataPath(std::string(kSpmVocab) + ".inp"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    inputs.push_back(raw.substr(pos, next == std::string::npos ? next : next - pos));
    if (next == std::string::npos) break;
    pos = next + sep.size();
  }
  return inputs;
}

std::vector<std::vector<int32_t>> VectorOutputs(const std::string& relative) {
  std::istringstream in(testing::ReadText(testing::SharedDataPath(relative)));
  std::vector<std::vector<int32_t>> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    out.emplace_back();
    for (int32_t id; ls >> id;) out.back().push_back(id);
  }
  return out;
}

// Writes the tokenizer files of `gguf_relative` to a directory and counts the vectors that its
// HF tokenizer reproduces.
int MatchingVectors(const std::string& gguf_relative, const std::string& out_relative) {
  ScopedTempDir dir;
  auto gguf = GgufFile::Open(testing::SharedDataPath(gguf_relative));
  EXPECT_TRUE(gguf.ok());
  if (!gguf.ok()) return -1;
  auto files = HfTokenizerFiles(**gguf, 4096);
  EXPECT_TRUE(files.ok()) << files.status();
  if (!files.ok()) return -1;
  for (const auto& [name, text] : *files) testing::WriteText(dir.Sub(name), text);
  auto tok = LoadTokenizer(dir.path());
  EXPECT_TRUE(tok.ok()) << tok.status();
  if (!tok.ok()) return -1;
  const auto inputs = VectorInputs();
  const auto outputs = VectorOutputs(out_relative);
  EXPECT_EQ(inputs.size(), 46u);
  EXPECT_EQ(outputs.size(), 46u);
  int matches = 0;
  for (size_t i = 0; i < inputs.size() && i < outputs.size(); ++i) {
    const std::vector<int32_t> ids = (*tok)->Encode(inputs[i], {.add_bos = false});
    EXPECT_EQ(ids, outputs[i]) << "input " << i;
    matches += ids == outputs[i];
  }
  return matches;
}

TEST(HfTokenizerFilesTest, Stories260KVocabularyVectors) {
  EXPECT_EQ(
      MatchingVectors("models/stories260K/stories260K.gguf", "models/stories260K/tok512.test.out"),
      46);
}

TEST(HfTokenizerFilesTest, Llama2VocabularyVectors) {
  EXPECT_EQ(MatchingVectors(kSpmVocab, std::string(kSpmVocab) + ".out"), 46);
}

TEST(HfTokenizerFilesTest, TokenizerJsonLayout) {
  auto gguf = GgufFile::Open(testing::SharedDataPath(kSpmVocab));
  ASSERT_TRUE(gguf.ok());
  auto files = HfTokenizerFiles(**gguf, 4096);
  ASSERT_TRUE(files.ok()) << files.status();
  const auto j = nlohmann::json::parse(files->at("tokenizer.json"));
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["model"]["byte_fallback"], true);
  EXPECT_EQ(j["model"]["unk_token"], "<unk>");
  EXPECT_EQ(j["model"]["vocab"].size(), 32000u);
  EXPECT_EQ(j["model"]["vocab"]["<0x0A>"], 13);
  EXPECT_EQ(j["pre_tokenizer"]["type"], "Metaspace");
  EXPECT_EQ(j["pre_tokenizer"]["prepend_scheme"], "first");
  // transformers' Llama 2 tokenizer.json starts its merges with "▁ t", "e r", "i n".
  ASSERT_GT(j["model"]["merges"].size(), 3u);
  EXPECT_EQ(j["model"]["merges"][0], "\xE2\x96\x81 t");
  EXPECT_EQ(j["model"]["merges"][1], "e r");
  EXPECT_EQ(j["model"]["merges"][2], "i n");
  ASSERT_EQ(j["added_tokens"].size(), 3u);
  EXPECT_EQ(j["added_tokens"][1]["content"], "<s>");
  EXPECT_EQ(j["added_tokens"][1]["special"], true);
  EXPECT_EQ(j["post_processor"]["single"][0]["SpecialToken"]["id"], "<s>");
  const auto config = nlohmann::json::parse(files->at("tokenizer_config.json"));
  EXPECT_EQ(config["add_bos_token"], true);
  EXPECT_EQ(config["bos_token"], "<s>");
  EXPECT_EQ(config["eos_token"], "</s>");
  EXPECT_EQ(config["model_max_length"], 4096);
}

TEST(HfTokenizerFilesTest, ByteLevelVocabulariesAreRefused) {
  auto gguf =
      GgufFile::Open(testing::SharedDataPath("tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf"));
  ASSERT_TRUE(gguf.ok());
  auto files = HfTokenizerFiles(**gguf, 1024);
  ASSERT_FALSE(files.ok());
  EXPECT_THAT(files.status().message(), HasSubstr("tokenizer model 'gpt2'"));
}

// ---------------------------------------------------------------------------------------------
// Other GGUF types

TEST(HfConvertTest, F16ModelKeepsF16AndLogits) {
  ScopedTempDir dir;
  auto c = ConvertGgufToHf(testing::SharedDataPath(kTinyRandom), dir.Sub("hf"));
  ASSERT_TRUE(c.ok()) << c.status();
  const auto config = nlohmann::json::parse(testing::ReadText(dir.Sub("hf/config.json")));
  EXPECT_EQ(config["torch_dtype"], "float16");
  auto file = SafetensorsFile::Open(dir.Sub("hf/model.safetensors"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->Find("model.layers.0.self_attn.q_proj.weight")->dtype, SafetensorsDtype::kF16);
  EXPECT_EQ((*file)->Find("model.norm.weight")->dtype, SafetensorsDtype::kF32);
  auto gguf = MustOpen(testing::SharedDataPath(kTinyRandom));
  auto hf = MustOpen(dir.Sub("hf"));
  ASSERT_TRUE(gguf && hf);
  const std::vector<int32_t> ids = {1, 15043, 3186, 29892, 920, 526, 366, 29973};
  EXPECT_EQ(AllLogits(*gguf, ids), AllLogits(*hf, ids));
  auto tok = LoadTokenizer(dir.Sub("hf"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("Hello world"), (std::vector<int32_t>{1, 15043, 3186}));
}

TEST(HfConvertTest, Q8_0IsDequantizedToF32) {
  ScopedTempDir dir;
  RandomModelSpec spec;
  spec.matrix_type = GgmlType::kQ8_0;
  spec.ffn_dim = 192;  // Q8_0 rows are multiples of 32
  spec.tied_output = true;
  absl::Status written = WriteRandomModel(spec, dir.Sub("q8.gguf"));
  ASSERT_TRUE(written.ok()) << written;
  auto c = ConvertGgufToHf(dir.Sub("q8.gguf"), dir.Sub("hf"));
  ASSERT_TRUE(c.ok()) << c.status();
  auto file = SafetensorsFile::Open(dir.Sub("hf/model.safetensors"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->Find("model.layers.0.mlp.up_proj.weight")->dtype, SafetensorsDtype::kF32);
  EXPECT_EQ((*file)->Find("lm_head.weight"), nullptr);  // tied
  const auto config = nlohmann::json::parse(testing::ReadText(dir.Sub("hf/config.json")));
  EXPECT_EQ(config["tie_word_embeddings"], true);
  auto gguf = MustOpen(dir.Sub("q8.gguf"));
  auto hf = MustOpen(dir.Sub("hf"));
  ASSERT_TRUE(gguf && hf);
  // Same values; Q8_0 and F32 matmuls round differently.
  for (int64_t r : {0, 7, 31}) {  // wk: 2 KV heads x 16 rows
    std::vector<float> a(64), b(64);
    DequantizeRow(gguf->layer(1).wk.type, gguf->layer(1).wk.Row(r), a.data(), 64);
    DequantizeRow(hf->layer(1).wk.type, hf->layer(1).wk.Row(r), b.data(), 64);
    EXPECT_EQ(a, b) << r;
  }
  const std::vector<int32_t> ids = {1, 300, 301, 302, 303, 304};
  EXPECT_LT(MaxAbsDiff(AllLogits(*gguf, ids), AllLogits(*hf, ids)), 1e-3f);
}

TEST(HfConvertTest, Errors) {
  ScopedTempDir dir;
  auto missing = ConvertGgufToHf(dir.Sub("none.gguf"), dir.Sub("out"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(dir.Sub("out")));  // nothing written on failure

  auto vocab_only = ConvertGgufToHf(testing::SharedDataPath(kSpmVocab), dir.Sub("out"));
  ASSERT_FALSE(vocab_only.ok());
  EXPECT_THAT(vocab_only.status().message(), HasSubstr("missing"));

  fs::create_directories(dir.Sub("full"));
  testing::WriteText(dir.Sub("full/config.json"), "{}");
  auto full = ConvertGgufToHf(testing::Stories260KPath(), dir.Sub("full"));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(full.status().message(), HasSubstr("already holds config.json"));
}

// ---------------------------------------------------------------------------------------------
// Loader checks, on edited copies of the converted stories260K

using EntryMap = std::map<std::string, std::pair<SafetensorsDtype, std::vector<uint8_t>>>;

class HfLoaderTest : public Stories260KHfTest {
 protected:
  void SetUp() override {
    auto file = SafetensorsFile::Open(HfDir() + "/model.safetensors");
    ASSERT_TRUE(file.ok());
    shapes_.clear();
    tensors_.clear();
    for (const SafetensorsTensor& t : (*file)->tensors()) {
      shapes_[t.name] = t.shape;
      tensors_[t.name] = {t.dtype, std::vector<uint8_t>(t.data, t.data + t.num_bytes())};
    }
    config_ = nlohmann::json::parse(testing::ReadText(HfDir() + "/config.json"));
  }

  // Writes the (edited) tensors, in the order of `first` then the rest, and config.json.
  std::string Write(const std::vector<std::string>& first = {}) {
    const std::string d = out_.Sub("m" + std::to_string(count_++));
    fs::create_directories(d);
    std::vector<SafetensorsWriteEntry> entries;
    std::vector<std::string> order = first;
    for (const auto& [name, unused] : tensors_) {
      if (std::find(first.begin(), first.end(), name) == first.end()) order.push_back(name);
    }
    for (const std::string& name : order) {
      const auto& [dtype, bytes] = tensors_.at(name);
      entries.push_back(SafetensorsBytesEntry(name, dtype, shapes_.at(name), bytes));
    }
    EXPECT_TRUE(WriteSafetensorsFile(d + "/model.safetensors", entries, {}).ok());
    testing::WriteText(d + "/config.json", config_.dump());
    return d;
  }

  std::string LoadError(const std::string& d) {
    auto w = OpenModel(d);
    return w.ok() ? "" : std::string(w.status().message());
  }

  void AddVector(const std::string& name, const std::vector<float>& v) {
    shapes_[name] = {static_cast<int64_t>(v.size())};
    tensors_[name] = {SafetensorsDtype::kF32, testing::FloatBytes(v)};
  }

  ScopedTempDir out_;
  int count_ = 0;
  std::map<std::string, std::vector<int64_t>> shapes_;
  EntryMap tensors_;
  nlohmann::json config_;
};

TEST_F(HfLoaderTest, MissingTensorAndWrongShape) {
  tensors_.erase("model.layers.3.mlp.up_proj.weight");
  EXPECT_THAT(LoadError(Write()), HasSubstr("missing tensor model.layers.3.mlp.up_proj.weight"));
  SetUp();
  shapes_["model.layers.1.self_attn.k_proj.weight"] = {64, 32};
  EXPECT_THAT(LoadError(Write()),
              HasSubstr("tensor model.layers.1.self_attn.k_proj.weight has shape [64, 32], "
                        "config.json implies [32, 64]"));
  SetUp();
  config_["num_hidden_layers"] = 6;
  EXPECT_THAT(LoadError(Write()), HasSubstr("missing tensor model.layers.5.input_layernorm.weight "
                                            "(6 layers declared)"));
  SetUp();
  config_["num_hidden_layers"] = 1 << 30;  // must not allocate 2^30 layers first
  EXPECT_THAT(LoadError(Write()), HasSubstr("layers declared"));
  SetUp();
  config_["vocab_size"] = 500;
  EXPECT_THAT(LoadError(Write()), HasSubstr("model.embed_tokens.weight has shape [512, 64], "
                                            "config.json implies [500, 64]"));
}

TEST_F(HfLoaderTest, DtypesAndUnsupportedBias) {
  auto& [dtype, bytes] = tensors_.at("model.layers.0.mlp.gate_proj.weight");
  dtype = SafetensorsDtype::kI32;  // same byte size
  EXPECT_THAT(LoadError(Write()),
              HasSubstr("model.layers.0.mlp.gate_proj.weight has dtype I32; supported: F32, F16, "
                        "BF16"));
  SetUp();
  AddVector("model.layers.0.self_attn.o_proj.bias", std::vector<float>(64, 0.0f));
  EXPECT_THAT(LoadError(Write()), HasSubstr("o_proj.bias (an output projection bias) is not "
                                            "supported"));
  SetUp();
  config_["attention_bias"] = true;  // but no bias tensors
  EXPECT_THAT(LoadError(Write()), HasSubstr("missing tensor model.layers.0.self_attn.q_proj.bias"));
}

TEST_F(HfLoaderTest, Bf16AndMisalignedTensorsLoad) {
  // Convert one matrix to BF16 and put an odd-length F16 tensor first, so every F32 tensor after
  // it starts 2 bytes off alignment; the loader copies those.
  auto& [dtype, bytes] = tensors_.at("model.layers.0.mlp.up_proj.weight");
  std::vector<uint8_t> bf16(bytes.size() / 2);
  for (size_t i = 0; i < bytes.size() / 4; ++i) {
    float f;
    std::memcpy(&f, bytes.data() + 4 * i, 4);
    const uint16_t b = Fp32ToBf16(f);
    std::memcpy(bf16.data() + 2 * i, &b, 2);
  }
  dtype = SafetensorsDtype::kBF16;
  bytes = bf16;
  shapes_["odd"] = {1};
  tensors_["odd"] = {SafetensorsDtype::kF16, {0, 0}};
  const std::string d = Write({"odd"});
  auto w = OpenModel(d);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->layer(0).w_up.type, WeightType::kBF16);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*w)->layer(0).wv.data) % 4, 0u);
  auto gguf = MustOpen(testing::Stories260KPath());
  EXPECT_TRUE(SameMatrix(gguf->layer(3).w_down, (*w)->layer(3).w_down));
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378};
  EXPECT_LT(MaxAbsDiff(AllLogits(*gguf, ids), AllLogits(**w, ids)), 0.05f);
}

TEST_F(HfLoaderTest, QkvBiasesArePermutedLikeTheirRows) {
  config_["architectures"] = {"Qwen2ForCausalLM"};
  config_["model_type"] = "qwen2";
  std::vector<float> bq(64), bk(32), bv(32);
  for (size_t i = 0; i < bq.size(); ++i) bq[i] = static_cast<float>(i);
  for (size_t i = 0; i < bk.size(); ++i) bk[i] = 100.0f + static_cast<float>(i);
  for (size_t i = 0; i < bv.size(); ++i) bv[i] = 200.0f + static_cast<float>(i);
  for (int l = 0; l < 5; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    AddVector(p + "q_proj.bias", bq);
    AddVector(p + "k_proj.bias", bk);
    AddVector(p + "v_proj.bias", bv);
  }
  auto w = OpenModel(Write());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE((*w)->config().attention_bias);
  const LayerWeights& l = (*w)->layer(2);
  ASSERT_EQ(l.bq.size(), 64u);
  ASSERT_EQ(l.bk.size(), 32u);
  EXPECT_EQ(l.bv, bv);  // V is not rotated
  // Adjacent row (head, 2i + j) holds HF row (head, j * 4 + i), head_dim 8.
  for (int head = 0; head < 8; ++head) {
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 2; ++j) {
        EXPECT_EQ(l.bq[static_cast<size_t>(head * 8 + 2 * i + j)],
                  static_cast<float>(head * 8 + j * 4 + i));
        if (head < 4) {
          EXPECT_EQ(l.bk[static_cast<size_t>(head * 8 + 2 * i + j)],
                    100.0f + static_cast<float>(head * 8 + j * 4 + i));
        }
      }
    }
  }
}

TEST(OpenModelTest, PathsThatAreNotModels) {
  ScopedTempDir dir;
  auto none = OpenModel(dir.Sub("nothing.gguf"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  auto empty_dir = OpenModel(dir.path());
  ASSERT_FALSE(empty_dir.ok());
  EXPECT_EQ(empty_dir.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(empty_dir.status().message(), HasSubstr("config.json"));
  for (const char* f : {"model.safetensors", "model.safetensors.index.json", "config.json"}) {
    auto one_file = OpenModel(dir.Sub(f));
    ASSERT_FALSE(one_file.ok());
    EXPECT_THAT(one_file.status().message(), HasSubstr("pass the directory")) << f;
  }
  testing::WriteText(dir.Sub("config.json"), R"({"architectures":["LlamaForCausalLM"],
      "hidden_size":64,"intermediate_size":172,"num_hidden_layers":2,"num_attention_heads":8,
      "vocab_size":512})");
  auto no_weights = OpenModel(dir.path());
  ASSERT_FALSE(no_weights.ok());
  EXPECT_THAT(no_weights.status().message(), HasSubstr("no model.safetensors.index.json or "
                                                       "model.safetensors"));
}

TEST(QkPermutationTest, DirectionsAreInverse) {
  for (int64_t head_dim : {2, 8, 64, 128}) {
    for (int64_t r = 0; r < 3 * head_dim; ++r) {
      const int64_t a = QkSourceRow(QkPermutation::kHalfSplitToAdjacent, r, head_dim);
      EXPECT_EQ(QkSourceRow(QkPermutation::kAdjacentToHalfSplit, a, head_dim), r);
      EXPECT_EQ(a / head_dim, r / head_dim);  // stays within its head
    }
  }
  // head_dim 4: adjacent rows (x0, y0, x1, y1) come from half-split rows (x0, x1, y0, y1).
  std::vector<float> hf = {10, 11, 20, 21};
  EXPECT_EQ(PermuteQkVector(QkPermutation::kHalfSplitToAdjacent, hf, 4),
            (std::vector<float>{10, 20, 11, 21}));
}

}  // namespace
}  // namespace funnel
