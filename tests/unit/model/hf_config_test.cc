// config.json / generation_config.json parsing for the Llama family (real configs of
// Llama 3.1, Llama 2, Mistral and Qwen2), the errors for unsupported or malformed ones, and the
// RoPE inverse frequencies (llama3 scaling against values computed with PyTorch).
#include "runtime/model/hf_config.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/norm_rope_act.h"
#include "tests/unit/model/hf_test_util.h"

namespace funnel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// meta-llama/Llama-3.1-8B-Instruct config.json and generation_config.json.
constexpr char kLlama31Config[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 128256})";
constexpr char kLlama31Generation[] = R"({"bos_token_id": 128000, "do_sample": true,
  "eos_token_id": [128001, 128008, 128009], "temperature": 0.6, "top_p": 0.9,
  "transformers_version": "4.42.3"})";

// mistralai/Mistral-7B-v0.1.
constexpr char kMistralConfig[] = R"({"architectures": ["MistralForCausalLM"],
  "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096,
  "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
  "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
  "sliding_window": 4096, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 32000})";

// Qwen/Qwen2-0.5B-Instruct.
constexpr char kQwen2Config[] = R"({"architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
  "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936})";
constexpr char kQwen2Generation[] = R"({"bos_token_id": 151643, "pad_token_id": 151643,
  "do_sample": true, "eos_token_id": [151645, 151643], "repetition_penalty": 1.1,
  "temperature": 0.7, "top_p": 0.8, "top_k": 20})";

// A small Llama config with one key replaced (or removed when `value` is empty).
std::string TinyConfig(const std::string& key = "", const std::string& value = "") {
  std::vector<std::pair<std::string, std::string>> kv = {
      {"architectures", R"(["LlamaForCausalLM"])"},
      {"hidden_size", "64"},
      {"intermediate_size", "172"},
      {"num_hidden_layers", "2"},
      {"num_attention_heads", "8"},
      {"num_key_value_heads", "4"},
      {"vocab_size", "512"}};
  bool replaced = false;
  for (auto& [k, v] : kv) {
    if (k == key) {
      v = value;
      replaced = true;
    }
  }
  if (!replaced && !key.empty()) kv.emplace_back(key, value);
  std::string out = "{";
  for (const auto& [k, v] : kv) {
    if (v.empty()) continue;
    if (out.size() > 1) out += ",";
    out += "\"" + k + "\":" + v;
  }
  return out + "}";
}

std::string ConfigError(const std::string& config, const std::string& generation = "") {
  auto c = ModelConfigFromHfJson(config, generation, "m");
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  return std::string(c.status().message());
}

TEST(HfConfigTest, Llama31) {
  auto c = ModelConfigFromHfJson(kLlama31Config, kLlama31Generation, "Llama-3.1-8B-Instruct");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "Llama-3.1-8B-Instruct");
  EXPECT_EQ(c->architecture, "llama");
  EXPECT_EQ(c->dim, 4096);
  EXPECT_EQ(c->num_layers, 32);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->rope_dim, 128);
  EXPECT_EQ(c->ffn_dim, 14336);
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->context_length, 131072);
  EXPECT_EQ(c->rope_theta, 500000.0f);
  EXPECT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(c->rope_scaling.factor, 8.0f);
  EXPECT_EQ(c->rope_scaling.low_freq_factor, 1.0f);
  EXPECT_EQ(c->rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c->rope_scaling.original_context_length, 8192);
  EXPECT_FALSE(c->tied_output);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->rope_style, RopeStyle::kAdjacentPairs);  // the loader permutes Q/K
  EXPECT_EQ(c->bos_id, 128000);
  EXPECT_THAT(c->eos_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_THAT(c->Summary(), HasSubstr("scaling llama3"));
}

TEST(HfConfigTest, MistralAndDefaults) {
  auto c = ModelConfigFromHfJson(kMistralConfig, "", "mistral");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "mistral");
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->context_length, 32768);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(c->bos_id, 1);
  EXPECT_THAT(c->eos_ids, ElementsAre(2));  // no generation_config.json: config.json's

  // Family defaults for absent keys (transformers' LlamaConfig).
  auto tiny = ModelConfigFromHfJson(TinyConfig(), "", "tiny");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->name, "tiny");
  EXPECT_EQ(tiny->rope_theta, 10000.0f);
  EXPECT_EQ(tiny->rms_norm_eps, 1e-6f);
  EXPECT_EQ(tiny->context_length, 2048);
  EXPECT_EQ(tiny->bos_id, -1);
  EXPECT_TRUE(tiny->eos_ids.empty());
  auto mha = ModelConfigFromHfJson(TinyConfig("num_key_value_heads", "null"), "", "m");
  ASSERT_TRUE(mha.ok()) << mha.status();
  EXPECT_EQ(mha->num_kv_heads, 8);
}

TEST(HfConfigTest, Qwen2HasBiasesAndTiedEmbeddings) {
  auto c = ModelConfigFromHfJson(kQwen2Config, kQwen2Generation, "qwen");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "qwen2");
  EXPECT_EQ(c->dim, 896);
  EXPECT_EQ(c->num_heads, 14);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->tied_output);
  EXPECT_EQ(c->rope_theta, 1e6f);
  EXPECT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_EQ(c->bos_id, 151643);
  EXPECT_THAT(c->eos_ids, ElementsAre(151645, 151643));  // generation_config.json wins
}

TEST(HfConfigTest, ArchitectureByModelTypeWhenNoArchitectures) {
  auto c = ModelConfigFromHfJson(R"({"model_type":"qwen2", "hidden_size":64,
      "intermediate_size":172, "num_hidden_layers":2, "num_attention_heads":8,
      "vocab_size":512})",
                                 "", "m");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "qwen2");
  EXPECT_TRUE(c->attention_bias);
  EXPECT_EQ(c->context_length, 32768);
}

TEST(HfConfigTest, RopeScalingVariants) {
  auto linear =
      ModelConfigFromHfJson(TinyConfig("rope_scaling", R"({"type":"linear","factor":2})"), "", "m");
  ASSERT_TRUE(linear.ok()) << linear.status();
  EXPECT_EQ(linear->rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_EQ(linear->rope_scaling.factor, 2.0f);
  auto dflt =
      ModelConfigFromHfJson(TinyConfig("rope_scaling", R"({"rope_type":"default"})"), "", "m");
  ASSERT_TRUE(dflt.ok()) << dflt.status();
  EXPECT_EQ(dflt->rope_scaling.type, RopeScalingType::kNone);

  EXPECT_THAT(ConfigError(TinyConfig("rope_scaling", R"({"rope_type":"yarn","factor":4})")),
              HasSubstr("rope_scaling type 'yarn' is not supported (supported: default, linear, "
                        "llama3)"));
  EXPECT_THAT(ConfigError(TinyConfig("rope_scaling", R"({"type":"dynamic","factor":4})")),
              HasSubstr("'dynamic' is not supported"));
  EXPECT_THAT(ConfigError(TinyConfig("rope_scaling",
                                     R"({"rope_type":"llama3","factor":8,"low_freq_factor":1})")),
              HasSubstr("rope_scaling: high_freq_factor is missing"));
  EXPECT_THAT(
      ConfigError(TinyConfig("rope_scaling", R"({"rope_type":"llama3","factor":8,)"
                                             R"("low_freq_factor":4,"high_freq_factor":1,)"
                                             R"("original_max_position_embeddings":8192})")),
      HasSubstr("low_freq_factor < high_freq_factor"));
  EXPECT_THAT(ConfigError(TinyConfig("rope_scaling", R"({"rope_type":"linear","factor":-2})")),
              HasSubstr("factor must be a positive number, got -2"));
  EXPECT_THAT(ConfigError(TinyConfig("rope_scaling", "7")), HasSubstr("must be an object or null"));
}

TEST(HfConfigTest, ErrorsNameTheKey) {
  EXPECT_THAT(ConfigError("{"), HasSubstr("config.json: not valid JSON"));
  EXPECT_THAT(ConfigError("[]"), HasSubstr("config.json: not a JSON object"));
  EXPECT_THAT(ConfigError(TinyConfig("architectures", R"(["GPT2LMHeadModel"])")),
              HasSubstr("architectures 'GPT2LMHeadModel' is not supported (supported: "
                        "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  EXPECT_THAT(ConfigError(TinyConfig("architectures", "")),
              HasSubstr("model_type '' is not supported"));
  EXPECT_THAT(ConfigError(TinyConfig("hidden_size", "")), HasSubstr("hidden_size is missing"));
  EXPECT_THAT(ConfigError(TinyConfig("hidden_size", "\"64\"")),
              HasSubstr("hidden_size must be a positive integer, got \"64\""));
  EXPECT_THAT(ConfigError(TinyConfig("num_hidden_layers", "0")),
              HasSubstr("num_hidden_layers must be a positive integer, got 0"));
  EXPECT_THAT(ConfigError(TinyConfig("vocab_size", "4e9")), HasSubstr("vocab_size must be"));
  EXPECT_THAT(ConfigError(TinyConfig("head_dim", "16")),
              HasSubstr("head_dim 16 differs from hidden_size / num_attention_heads (64 / 8)"));
  EXPECT_THAT(ConfigError(TinyConfig("num_key_value_heads", "3")),
              HasSubstr("8 heads are not a multiple of 3 KV heads"));
  EXPECT_THAT(ConfigError(TinyConfig("hidden_act", "\"gelu\"")),
              HasSubstr("hidden_act 'gelu' is not supported"));
  EXPECT_THAT(ConfigError(TinyConfig("mlp_bias", "true")), HasSubstr("mlp_bias true"));
  EXPECT_THAT(ConfigError(TinyConfig("use_sliding_window", "true")),
              HasSubstr("use_sliding_window true is not supported"));
  EXPECT_THAT(ConfigError(TinyConfig("partial_rotary_factor", "0.5")),
              HasSubstr("partial_rotary_factor"));
  EXPECT_THAT(ConfigError(TinyConfig("tie_word_embeddings", "1")),
              HasSubstr("tie_word_embeddings must be true or false"));
  EXPECT_THAT(ConfigError(TinyConfig("rms_norm_eps", "0")),
              HasSubstr("rms_norm_eps must be a positive number"));
  EXPECT_THAT(ConfigError(TinyConfig("eos_token_id", "512")),
              HasSubstr("EOS id 512 is outside the vocabulary [0, 512)"));
  EXPECT_THAT(ConfigError(TinyConfig("eos_token_id", "[2, \"x\"]")),
              HasSubstr("eos_token_id must be a token id or a list of them"));
  EXPECT_THAT(ConfigError(TinyConfig("bos_token_id", "[1, 2]")),
              HasSubstr("bos_token_id must be a single id"));
  EXPECT_THAT(ConfigError(TinyConfig(), "{"), HasSubstr("generation_config.json: not valid JSON"));
  EXPECT_THAT(ConfigError(TinyConfig(), R"({"eos_token_id": -1})"),
              HasSubstr("generation_config.json: eos_token_id must be"));
}

TEST(HfConfigTest, WrittenConfigReadsBack) {
  auto c = ModelConfigFromHfJson(kLlama31Config, kLlama31Generation, "x");
  ASSERT_TRUE(c.ok()) << c.status();
  auto text = HfConfigJson(*c, "bfloat16");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("\"rms_norm_eps\": 1e-05"));  // shortest float form
  auto back = ModelConfigFromHfJson(*text, HfGenerationConfigJson(*c), "x");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->dim, c->dim);
  EXPECT_EQ(back->num_kv_heads, c->num_kv_heads);
  EXPECT_EQ(back->rms_norm_eps, c->rms_norm_eps);
  EXPECT_EQ(back->rope_theta, c->rope_theta);
  EXPECT_EQ(back->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(back->rope_scaling.original_context_length, 8192);
  EXPECT_EQ(back->eos_ids, c->eos_ids);
  EXPECT_EQ(back->bos_id, c->bos_id);
  EXPECT_EQ(back->context_length, c->context_length);

  ModelConfig partial = *c;
  partial.rope_dim = 64;
  EXPECT_FALSE(HfConfigJson(partial, "float32").ok());
}

TEST(HfConfigTest, ReadsADirectory) {
  testing::ScopedTempDir dir;
  auto missing = ModelConfigFromHfDir(dir.path());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  testing::WriteText(dir.Sub("config.json"), kQwen2Config);
  testing::WriteText(dir.Sub("generation_config.json"), kQwen2Generation);
  auto c = ModelConfigFromHfDir(dir.path() + "/");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, std::filesystem::path(dir.path()).filename().string());
  EXPECT_THAT(c->eos_ids, ElementsAre(151645, 151643));
  testing::WriteText(dir.Sub("config.json"), TinyConfig("hidden_size", "-1"));
  auto bad = ModelConfigFromHfDir(dir.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr(dir.path() + "/config.json: hidden_size"));
}

// ---------------------------------------------------------------------------------------------
// RoPE frequencies

TEST(RopeFrequenciesTest, Llama3MatchesTransformers) {
  auto c = ModelConfigFromHfJson(kLlama31Config, "", "x");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<float> f = RopeInverseFrequencies(*c);
  ASSERT_EQ(f.size(), 64u);
  // transformers' _compute_llama3_parameters for this config, computed with PyTorch 1.13
  // (float32) by tests/unit/model/hf_reference_test.py's inv_freq():
  //   wavelength 2*pi/f below 8192/4 = 2048: kept; above 8192/1: divided by 8; between:
  //   interpolated.
  const std::pair<int, double> expected[] = {
      {0, 1.0},
      {20, 0.016560440883040428},   // wavelength 379: kept
      {28, 0.0032114461064338684},  // 1957: kept
      {29, 0.0021665706299245358},  // 2402: interpolated
      {32, 0.0005248460220173001},  // 4443: interpolated
      {34, 0.0001785077911335975},  // 6695: interpolated
      {35, 9.556212171446532e-05},  // 8219: divided by 8
      {63, 3.068925877869333e-07},  // divided by 8
  };
  for (const auto& [i, want] : expected) {
    EXPECT_NEAR(f[static_cast<size_t>(i)], want, 2e-6 * want) << "pair " << i;
  }
}

TEST(RopeFrequenciesTest, Llama3HandComputed) {
  // head_dim 4, theta 100: base frequencies 1 and 0.1, wavelengths 2*pi and 20*pi.
  ModelConfig c;
  c.rope_dim = 4;
  c.rope_theta = 100.0f;
  c.rope_scaling = {RopeScalingType::kLlama3, 4.0f, 1.0f, 2.0f, 100};
  // low_freq_wavelen 100, high_freq_wavelen 50: 2*pi < 50 kept; 20*pi = 62.83 interpolated with
  // smooth = (100 / 62.83 - 1) / (2 - 1) = 0.59155, f = (1 - s) * 0.1 / 4 + s * 0.1.
  const double smooth = 100.0 / (20.0 * M_PI) - 1.0;
  const std::vector<float> f = RopeInverseFrequencies(c);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_FLOAT_EQ(f[1], static_cast<float>((1.0 - smooth) * 0.1 / 4.0 + smooth * 0.1));
  c.rope_scaling.original_context_length = 20;  // wavelengths: 2*pi below 10 kept, 20*pi divided
  EXPECT_THAT(RopeInverseFrequencies(c), ElementsAre(1.0f, 0.025f));
  c.rope_scaling.original_context_length = 5;  // both above 5: both divided
  EXPECT_THAT(RopeInverseFrequencies(c), ElementsAre(0.25f, 0.025f));
}

TEST(RopeFrequenciesTest, UnscaledAndLinear) {
  ModelConfig c;
  c.rope_dim = 8;
  c.rope_theta = 10000.0f;
  const std::vector<float> f = RopeInverseFrequencies(c);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_FLOAT_EQ(f[1], 0.1f);
  EXPECT_FLOAT_EQ(f[2], 0.01f);
  EXPECT_FLOAT_EQ(f[3], 0.001f);
  c.rope_scaling = {RopeScalingType::kLinear, 4.0f, 1.0f, 4.0f, 0};
  EXPECT_THAT(RopeInverseFrequencies(c), ElementsAre(f[0] / 4, f[1] / 4, f[2] / 4, f[3] / 4));
}

TEST(RopeFrequenciesTest, UnscaledFrequenciesReproduceApplyRopeExactly) {
  // The runner now rotates with RopeInverseFrequencies; for unscaled models that must be
  // bit-identical to ApplyRope(theta), which the golden-logit tests were validated with.
  for (RopeStyle style : {RopeStyle::kAdjacentPairs, RopeStyle::kHalfSplit}) {
    ModelConfig c;
    c.rope_dim = 16;
    c.rope_theta = 500000.0f;
    const int64_t heads = 3, head_dim = 16, tokens = 5;
    std::vector<float> a(static_cast<size_t>(tokens * heads * head_dim));
    for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(static_cast<float>(i) * 0.37f);
    std::vector<float> b = a;
    const std::vector<int32_t> pos = {0, 1, 7, 300, 131071};
    ApplyRope(a.data(), pos.data(), tokens, heads, head_dim, 16, c.rope_theta, style);
    const std::vector<float> f = RopeInverseFrequencies(c);
    ApplyRopeWithFrequencies(b.data(), pos.data(), tokens, heads, head_dim, 16, f.data(), style);
    EXPECT_EQ(a, b);
  }
}

}  // namespace
}  // namespace funnel
