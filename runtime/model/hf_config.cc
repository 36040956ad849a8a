#include "runtime/model/hf_config.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// transformers' per-family defaults for keys a config.json may omit.
struct Family {
  const char* architecture;  // "architectures" entry
  const char* model_type;
  float rms_norm_eps;
  int32_t max_position_embeddings;
  bool qkv_bias;  // always has q/k/v biases (Qwen2)
};

constexpr Family kFamilies[] = {
    {"LlamaForCausalLM", "llama", 1e-6f, 2048, false},
    {"MistralForCausalLM", "mistral", 1e-6f, 4096 * 32, false},
    {"Qwen2ForCausalLM", "qwen2", 1e-6f, 32768, true},
};

std::string SupportedArchitectures() {
  std::vector<std::string> names;
  for (const Family& f : kFamilies) names.push_back(f.architecture);
  return absl::StrJoin(names, ", ");
}

// Typed, error-naming access to the keys of one JSON object. Absent and null keys are the same.
class JsonFields {
 public:
  JsonFields(const Json& object, std::string where) : j_(object), where_(std::move(where)) {}

  bool Has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }
  const Json& operator[](const std::string& key) const { return j_[key]; }

  absl::Status Error(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(where_, ": ", key, " ", what));
  }

  absl::StatusOr<int32_t> PositiveInt(const std::string& key) const {
    if (!Has(key)) return Error(key, "is missing");
    const Json& v = j_[key];
    if (v.is_number_integer() && v.get<int64_t>() > 0 && v.get<int64_t>() <= (int64_t{1} << 30)) {
      return static_cast<int32_t>(v.get<int64_t>());
    }
    return Error(key, absl::StrCat("must be a positive integer, got ", v.dump()));
  }
  absl::StatusOr<int32_t> PositiveIntOr(const std::string& key, int32_t fallback) const {
    return Has(key) ? PositiveInt(key) : fallback;
  }

  absl::StatusOr<float> PositiveFloat(const std::string& key) const {
    if (!Has(key)) return Error(key, "is missing");
    const Json& v = j_[key];
    if (v.is_number()) {
      const double d = v.get<double>();
      if (d > 0.0 && d < static_cast<double>(std::numeric_limits<float>::max())) {
        return static_cast<float>(d);
      }
    }
    return Error(key, absl::StrCat("must be a positive number, got ", v.dump()));
  }
  absl::StatusOr<float> PositiveFloatOr(const std::string& key, float fallback) const {
    return Has(key) ? PositiveFloat(key) : fallback;
  }

  absl::StatusOr<bool> BoolOr(const std::string& key, bool fallback) const {
    if (!Has(key)) return fallback;
    if (!j_[key].is_boolean())
      return Error(key, absl::StrCat("must be true or false, got ", j_[key].dump()));
    return j_[key].get<bool>();
  }

  absl::StatusOr<std::string> StringOr(const std::string& key, const std::string& fallback) const {
    if (!Has(key)) return fallback;
    if (!j_[key].is_string())
      return Error(key, absl::StrCat("must be a string, got ", j_[key].dump()));
    return j_[key].get<std::string>();
  }

  // A token id or a list of them; {} when absent.
  absl::StatusOr<std::vector<int32_t>> Ids(const std::string& key) const {
    std::vector<int32_t> ids;
    if (!Has(key)) return ids;
    const Json& v = j_[key];
    const Json list = v.is_array() ? v : Json::array({v});
    for (const Json& id : list) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return Error(key, absl::StrCat("must be a token id or a list of them, got ", v.dump()));
      }
      ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    return ids;
  }

 private:
  const Json& j_;
  std::string where_;
};

absl::StatusOr<Json> ParseObject(std::string_view text, const std::string& file) {
  Json j;
  try {
    j = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(file, ": not a JSON object"));
  return j;
}

absl::StatusOr<const Family*> FindFamily(const JsonFields& f) {
  std::vector<std::string> named;
  if (f.Has("architectures")) {
    if (!f["architectures"].is_array()) return f.Error("architectures", "must be a list");
    for (const Json& a : f["architectures"]) {
      if (!a.is_string()) return f.Error("architectures", "must be a list of strings");
      named.push_back(a.get<std::string>());
      for (const Family& family : kFamilies) {
        if (named.back() == family.architecture) return &family;
      }
    }
  }
  ASSIGN_OR_RETURN(std::string model_type, f.StringOr("model_type", ""));
  if (named.empty()) {
    for (const Family& family : kFamilies) {
      if (model_type == family.model_type) return &family;
    }
  }
  return f.Error(named.empty() ? "model_type" : "architectures",
                 absl::StrCat("'", named.empty() ? model_type : absl::StrJoin(named, ", "),
                              "' is not supported (supported: ", SupportedArchitectures(), ")"));
}

absl::StatusOr<RopeScaling> ParseRopeScaling(const JsonFields& f) {
  RopeScaling s;
  if (!f.Has("rope_scaling")) return s;
  if (!f["rope_scaling"].is_object()) return f.Error("rope_scaling", "must be an object or null");
  JsonFields r(f["rope_scaling"], "config.json: rope_scaling");
  ASSIGN_OR_RETURN(std::string type, r.StringOr("rope_type", ""));
  if (type.empty()) {
    ASSIGN_OR_RETURN(type, r.StringOr("type", ""));
  }
  if (type == "default") return s;
  if (type == "linear") {
    s.type = RopeScalingType::kLinear;
    ASSIGN_OR_RETURN(s.factor, r.PositiveFloat("factor"));
    return s;
  }
  if (type == "llama3") {
    s.type = RopeScalingType::kLlama3;
    ASSIGN_OR_RETURN(s.factor, r.PositiveFloat("factor"));
    ASSIGN_OR_RETURN(s.low_freq_factor, r.PositiveFloat("low_freq_factor"));
    ASSIGN_OR_RETURN(s.high_freq_factor, r.PositiveFloat("high_freq_factor"));
    ASSIGN_OR_RETURN(s.original_context_length, r.PositiveInt("original_max_position_embeddings"));
    return s;
  }
  return f.Error("rope_scaling", absl::StrCat("type '", type,
                                              "' is not supported (supported: default, linear, "
                                              "llama3)"));
}

// Features this loader does not implement: an error rather than a wrong model.
absl::Status CheckUnsupported(const JsonFields& f, const Family& family) {
  ASSIGN_OR_RETURN(std::string act, f.StringOr("hidden_act", "silu"));
  if (act != "silu")
    return f.Error("hidden_act", absl::StrCat("'", act, "' is not supported (silu)"));
  ASSIGN_OR_RETURN(bool mlp_bias, f.BoolOr("mlp_bias", false));
  if (mlp_bias) return f.Error("mlp_bias", "true is not supported");
  if (f.Has("partial_rotary_factor")) {
    ASSIGN_OR_RETURN(float partial, f.PositiveFloat("partial_rotary_factor"));
    if (partial != 1.0f) return f.Error("partial_rotary_factor", "other than 1 is not supported");
  }
  ASSIGN_OR_RETURN(bool sliding, f.BoolOr("use_sliding_window", false));
  if (sliding) return f.Error("use_sliding_window", "true is not supported");
  if (std::string(family.model_type) == "mistral" && f.Has("sliding_window")) {
    spdlog::warn("config.json: sliding_window {} is ignored (full attention is used)",
                 f["sliding_window"].dump());
  }
  return absl::OkStatus();
}

absl::Status ReadShape(const JsonFields& f, ModelConfig& c) {
  ASSIGN_OR_RETURN(c.dim, f.PositiveInt("hidden_size"));
  ASSIGN_OR_RETURN(c.num_layers, f.PositiveInt("num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_heads, f.PositiveInt("num_attention_heads"));
  ASSIGN_OR_RETURN(c.num_kv_heads, f.PositiveIntOr("num_key_value_heads", c.num_heads));
  ASSIGN_OR_RETURN(c.ffn_dim, f.PositiveInt("intermediate_size"));
  ASSIGN_OR_RETURN(c.vocab_size, f.PositiveInt("vocab_size"));
  c.head_dim = c.dim / c.num_heads;
  ASSIGN_OR_RETURN(int32_t head_dim, f.PositiveIntOr("head_dim", c.head_dim));
  if (head_dim != c.head_dim || c.dim % c.num_heads != 0) {
    return f.Error("head_dim", absl::StrFormat("%d differs from hidden_size / num_attention_heads "
                                               "(%d / %d); not supported",
                                               head_dim, c.dim, c.num_heads));
  }
  c.rope_dim = c.head_dim;
  return absl::OkStatus();
}

absl::Status ReadSpecialIds(const JsonFields& config, std::string_view generation_text,
                            ModelConfig& c) {
  ASSIGN_OR_RETURN(std::vector<int32_t> bos, config.Ids("bos_token_id"));
  ASSIGN_OR_RETURN(c.eos_ids, config.Ids("eos_token_id"));
  if (!generation_text.empty()) {
    ASSIGN_OR_RETURN(Json g, ParseObject(generation_text, "generation_config.json"));
    JsonFields gen(g, "generation_config.json");
    ASSIGN_OR_RETURN(std::vector<int32_t> gen_bos, gen.Ids("bos_token_id"));
    ASSIGN_OR_RETURN(std::vector<int32_t> gen_eos, gen.Ids("eos_token_id"));
    if (!gen_bos.empty()) bos = gen_bos;
    if (!gen_eos.empty()) c.eos_ids = gen_eos;
  }
  if (bos.size() > 1) return config.Error("bos_token_id", "must be a single id");
  c.bos_id = bos.empty() ? -1 : bos[0];
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// `f` printed as its shortest float representation (1e-05, not 9.999999747378752e-06).
double ShortestDouble(float f) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), f);
  if (ec != std::errc()) return f;
  *end = '\0';
  return std::strtod(buf, nullptr);
}

nlohmann::ordered_json IdsJson(const std::vector<int32_t>& ids) {
  if (ids.empty()) return nullptr;
  if (ids.size() == 1) return ids[0];
  return ids;
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfigFromHfJson(std::string_view config_json,
                                                  std::string_view generation_config_json,
                                                  const std::string& name) {
  ASSIGN_OR_RETURN(Json j, ParseObject(config_json, "config.json"));
  JsonFields f(j, "config.json");
  ASSIGN_OR_RETURN(const Family* family, FindFamily(f));
  RETURN_IF_ERROR(CheckUnsupported(f, *family));
  ModelConfig c;
  c.architecture = family->model_type;
  ASSIGN_OR_RETURN(c.name, f.StringOr("_name_or_path", ""));
  if (c.name.empty()) c.name = name;
  RETURN_IF_ERROR(ReadShape(f, c));
  ASSIGN_OR_RETURN(c.context_length,
                   f.PositiveIntOr("max_position_embeddings", family->max_position_embeddings));
  ASSIGN_OR_RETURN(c.rope_theta, f.PositiveFloatOr("rope_theta", 10000.0f));
  ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(f));
  ASSIGN_OR_RETURN(c.rms_norm_eps, f.PositiveFloatOr("rms_norm_eps", family->rms_norm_eps));
  ASSIGN_OR_RETURN(c.tied_output, f.BoolOr("tie_word_embeddings", false));
  ASSIGN_OR_RETURN(c.attention_bias, f.BoolOr("attention_bias", family->qkv_bias));
  if (family->qkv_bias) c.attention_bias = true;
  RETURN_IF_ERROR(ReadSpecialIds(f, generation_config_json, c));
  if (absl::Status st = c.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", st.message()));
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfigFromHfDir(const std::string& dir) {
  const fs::path d(dir);
  ASSIGN_OR_RETURN(std::string config, ReadText((d / "config.json").string()));
  std::string generation;
  std::error_code ec;
  if (fs::exists(d / "generation_config.json", ec)) {
    ASSIGN_OR_RETURN(generation, ReadText((d / "generation_config.json").string()));
  }
  std::string name = fs::path(dir).lexically_normal().filename().string();
  if (name.empty()) name = fs::path(dir).lexically_normal().parent_path().filename().string();
  auto c = ModelConfigFromHfJson(config, generation, name.empty() ? "model" : name);
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(dir, "/", c.status().message()));
  }
  return c;
}

absl::StatusOr<std::string> HfConfigJson(const ModelConfig& c, const std::string& torch_dtype) {
  if (c.rope_dim != c.head_dim) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "HF Llama has no partial rotary: rope dimension %d differs from head_dim %d", c.rope_dim,
        c.head_dim));
  }
  nlohmann::ordered_json rope_scaling = nullptr;
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScalingType::kLinear) {
    rope_scaling = {{"rope_type", "linear"}, {"factor", ShortestDouble(s.factor)}};
  } else if (s.type == RopeScalingType::kLlama3) {
    rope_scaling = {{"rope_type", "llama3"},
                    {"factor", ShortestDouble(s.factor)},
                    {"low_freq_factor", ShortestDouble(s.low_freq_factor)},
                    {"high_freq_factor", ShortestDouble(s.high_freq_factor)},
                    {"original_max_position_embeddings", s.original_context_length}};
  }
  nlohmann::ordered_json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", c.dim},
      {"intermediate_size", c.ffn_dim},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.context_length},
      {"rms_norm_eps", ShortestDouble(c.rms_norm_eps)},
      {"rope_theta", ShortestDouble(c.rope_theta)},
      {"rope_scaling", rope_scaling},
      {"hidden_act", "silu"},
      {"attention_bias", c.attention_bias},
      {"mlp_bias", false},
      {"tie_word_embeddings", c.tied_output},
      {"bos_token_id", c.bos_id >= 0 ? nlohmann::ordered_json(c.bos_id) : nullptr},
      {"eos_token_id", IdsJson(c.eos_ids)},
      {"torch_dtype", torch_dtype},
  };
  return j.dump(2) + "\n";
}

std::string HfGenerationConfigJson(const ModelConfig& c) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (c.bos_id >= 0) j["bos_token_id"] = c.bos_id;
  if (!c.eos_ids.empty()) j["eos_token_id"] = IdsJson(c.eos_ids);
  return j.dump(2) + "\n";
}

}  // namespace funnel
