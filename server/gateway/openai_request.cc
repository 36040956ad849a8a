#include "server/gateway/openai_request.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

constexpr char kParamPayloadUrl[] = "type.funnel.dev/gateway.param";
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int kMaxTopLogprobs = 20;
constexpr int kMaxStopStrings = 16;

// The parsed body as an object, or InvalidArgument. Exceptions of the JSON library stay here.
absl::StatusOr<Json> ParseJsonObject(absl::string_view body) {
  if (JsonNestingDepth(body) > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body nests deeper than ", kMaxJsonDepth, " levels"));
  }
  Json json;
  try {
    json = Json::parse(body.begin(), body.end());
  } catch (const Json::exception& e) {
    // what() reads "[json.exception.parse_error.101] parse error at ..."; keep the readable part.
    std::string what = e.what();
    const size_t bracket = what.find("] ");
    if (bracket != std::string::npos) what = what.substr(bracket + 2);
    return absl::InvalidArgumentError(absl::StrCat("the request body is not valid JSON: ", what));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError("the request body must be a JSON object");
  }
  return json;
}

// Typed access to the members of one JSON object; `prefix` names it in errors ("" at the top).
class Fields {
 public:
  Fields(const Json& object, std::string prefix) : object_(object), prefix_(std::move(prefix)) {}

  // The member, or null when it is absent or JSON null.
  const Json* Find(const char* key) const {
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  std::string Param(const char* key) const { return absl::StrCat(prefix_, key); }

  absl::StatusOr<std::optional<std::string>> String(const char* key) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_string())
      return InvalidParam(Param(key), absl::StrCat(Param(key), " must be a string"));
    return std::optional<std::string>(v->get<std::string>());
  }

  absl::StatusOr<std::optional<bool>> Bool(const char* key) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<bool>();
    if (!v->is_boolean()) {
      return InvalidParam(Param(key), absl::StrCat(Param(key), " must be a boolean"));
    }
    return std::optional<bool>(v->get<bool>());
  }

  absl::StatusOr<std::optional<double>> Number(const char* key) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<double>();
    if (!v->is_number() || !std::isfinite(v->get<double>())) {
      return InvalidParam(Param(key), absl::StrCat(Param(key), " must be a number"));
    }
    return std::optional<double>(v->get<double>());
  }

  // An integer in [lo, hi]; a float with an integral value is accepted.
  absl::StatusOr<std::optional<int64_t>> Integer(const char* key, int64_t lo, int64_t hi) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<int64_t>();
    std::optional<int64_t> x = AsInteger(*v);
    if (!x) return InvalidParam(Param(key), absl::StrCat(Param(key), " must be an integer"));
    if (*x < lo || *x > hi) {
      return InvalidParam(Param(key),
                          absl::StrCat(Param(key), " must be in [", lo, ", ", hi, "], got ", *x));
    }
    return x;
  }

  // An integer that is not representable as int64 (beyond ±2^63) is rejected.
  static std::optional<int64_t> AsInteger(const Json& v) {
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return static_cast<int64_t>(u);
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > 9.0e15) return std::nullopt;
      return static_cast<int64_t>(d);
    }
    return std::nullopt;
  }

 private:
  const Json& object_;
  std::string prefix_;
};

absl::Status Unsupported(const char* param, absl::string_view what) {
  return InvalidParam(param, absl::StrCat(what, " is not supported by this server"));
}

// Refuses the OpenAI fields whose meaning we cannot honour (silently ignoring them would return
// something other than what was asked for).
absl::Status CheckUnsupported(const Fields& f) {
  if (const Json* v = f.Find("echo"); v != nullptr && !(v->is_boolean() && !v->get<bool>())) {
    return Unsupported("echo", "echo");
  }
  // (Json::empty() is false for every string, "" included: compare the string itself.)
  if (const Json* v = f.Find("suffix");
      v != nullptr && !(v->is_string() && v->get_ref<const std::string&>().empty())) {
    return Unsupported("suffix", "suffix");
  }
  if (const Json* v = f.Find("logit_bias"); v != nullptr && !(v->is_object() && v->empty())) {
    return Unsupported("logit_bias", "logit_bias");
  }
  for (const char* key : {"tools", "functions"}) {
    if (const Json* v = f.Find(key); v != nullptr && !(v->is_array() && v->empty())) {
      return Unsupported(key, key);
    }
  }
  if (const Json* v = f.Find("response_format"); v != nullptr) {
    const bool text = v->is_object() && v->contains("type") && (*v)["type"] == "text";
    if (!text) return Unsupported("response_format", "a response_format other than text");
  }
  if (const Json* v = f.Find("best_of"); v != nullptr) {
    const std::optional<int64_t> best_of = Fields::AsInteger(*v);
    const Json* n = f.Find("n");
    const int64_t choices = n == nullptr ? 1 : Fields::AsInteger(*n).value_or(1);
    if (!best_of || *best_of != choices) return Unsupported("best_of", "best_of other than n");
  }
  return absl::OkStatus();
}

absl::Status ParseStop(const Fields& f, v1::SamplingParams& s) {
  const Json* v = f.Find("stop");
  if (v == nullptr) return absl::OkStatus();
  if (v->is_string()) {
    s.add_stop(v->get<std::string>());
    return absl::OkStatus();
  }
  if (!v->is_array() || v->size() > kMaxStopStrings) {
    return InvalidParam("stop", absl::StrCat("stop must be a string or a list of at most ",
                                             kMaxStopStrings, " strings"));
  }
  for (const Json& item : *v) {
    if (!item.is_string()) return InvalidParam("stop", "stop must hold strings only");
    s.add_stop(item.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseMaxTokens(Endpoint endpoint, const Fields& f, v1::SamplingParams& s) {
  ASSIGN_OR_RETURN(const std::optional<int64_t> max_tokens, f.Integer("max_tokens", 0, kInt32Max));
  ASSIGN_OR_RETURN(const std::optional<int64_t> max_completion,
                   f.Integer("max_completion_tokens", 0, kInt32Max));
  if (max_completion) {
    s.set_max_tokens(static_cast<int32_t>(*max_completion));
  } else if (max_tokens) {
    s.set_max_tokens(static_cast<int32_t>(*max_tokens));
  } else {
    // OpenAI's defaults: 16 for completions; chat runs to the end of the context (the server
    // caps the reservation there).
    s.set_max_tokens(endpoint == Endpoint::kCompletions ? 16 : static_cast<int32_t>(kInt32Max));
  }
  return absl::OkStatus();
}

// Sets a float proto field from an optional number.
template <typename Setter>
absl::Status SetNumber(const Fields& f, const char* key, Setter set) {
  ASSIGN_OR_RETURN(const std::optional<double> v, f.Number(key));
  if (v) set(static_cast<float>(*v));
  return absl::OkStatus();
}

absl::Status ParseSampling(Endpoint endpoint, const Fields& f, v1::SamplingParams& s) {
  RETURN_IF_ERROR(SetNumber(f, "temperature", [&](float x) { s.set_temperature(x); }));
  RETURN_IF_ERROR(SetNumber(f, "top_p", [&](float x) { s.set_top_p(x); }));
  RETURN_IF_ERROR(SetNumber(f, "min_p", [&](float x) { s.set_min_p(x); }));
  RETURN_IF_ERROR(SetNumber(f, "presence_penalty", [&](float x) { s.set_presence_penalty(x); }));
  RETURN_IF_ERROR(SetNumber(f, "frequency_penalty", [&](float x) { s.set_frequency_penalty(x); }));
  RETURN_IF_ERROR(
      SetNumber(f, "repetition_penalty", [&](float x) { s.set_repetition_penalty(x); }));
  ASSIGN_OR_RETURN(const std::optional<int64_t> top_k, f.Integer("top_k", -1, kInt32Max));
  if (top_k) s.set_top_k(*top_k < 0 ? 0 : static_cast<int32_t>(*top_k));  // -1: off (vLLM)
  RETURN_IF_ERROR(ParseMaxTokens(endpoint, f, s));
  RETURN_IF_ERROR(ParseStop(f, s));
  ASSIGN_OR_RETURN(const std::optional<bool> ignore_eos, f.Bool("ignore_eos"));
  s.set_ignore_eos(ignore_eos.value_or(false));
  return absl::OkStatus();
}

// Seeds are 64-bit; negative ones wrap (the same bits every time).
absl::StatusOr<std::optional<uint64_t>> ParseSeed(const Fields& f) {
  const Json* v = f.Find("seed");
  if (v == nullptr) return std::optional<uint64_t>();
  if (v->is_number_unsigned()) return std::optional<uint64_t>(v->get<uint64_t>());
  if (v->is_number_integer()) {
    return std::optional<uint64_t>(static_cast<uint64_t>(v->get<int64_t>()));
  }
  return InvalidParam("seed", "seed must be an integer");
}

// Chat: logprobs (bool) + top_logprobs; completions: logprobs (number of alternatives).
absl::StatusOr<int32_t> ParseLogprobs(Endpoint endpoint, const Fields& f) {
  if (endpoint == Endpoint::kCompletions) {
    ASSIGN_OR_RETURN(const std::optional<int64_t> n, f.Integer("logprobs", 0, kMaxTopLogprobs));
    return n ? static_cast<int32_t>(*n) : -1;
  }
  ASSIGN_OR_RETURN(const std::optional<bool> logprobs, f.Bool("logprobs"));
  ASSIGN_OR_RETURN(const std::optional<int64_t> top, f.Integer("top_logprobs", 0, kMaxTopLogprobs));
  if (top && !logprobs.value_or(false)) {
    return InvalidParam("top_logprobs", "top_logprobs needs logprobs set to true");
  }
  if (!logprobs.value_or(false)) return -1;
  return static_cast<int32_t>(top.value_or(0));
}

absl::Status ParseKvPooling(const Fields& f, v1::KvPolicy& p) {
  ASSIGN_OR_RETURN(const std::optional<std::string> pooling, f.String("pooling"));
  if (!pooling) return absl::OkStatus();
  if (*pooling == "max") {
    p.set_pooling(v1::KV_POOLING_MAX);
  } else if (*pooling == "avg") {
    p.set_pooling(v1::KV_POOLING_AVG);
  } else {
    return InvalidParam(f.Param("pooling"), "kv_compression.pooling must be \"max\" or \"avg\"");
  }
  return absl::OkStatus();
}

absl::Status ParseKvMethodField(const Fields& f, v1::KvPolicy& p) {
  ASSIGN_OR_RETURN(const std::optional<std::string> method, f.String("method"));
  if (!method) return absl::OkStatus();
  std::optional<v1::KvMethod> m = KvMethodFromApiName(*method);
  if (!m) {
    return InvalidParam(f.Param("method"),
                        absl::StrCat("kv_compression.method: unknown method '", *method,
                                     "' (full|pyramidkv|snapkv|streamingllm|h2o)"));
  }
  p.set_method(*m);
  return absl::OkStatus();
}

// kv_compression: {method, budget, ratio, window, pooling, kernel, beta, rounding}. Unknown keys
// are refused (a misspelt budget would otherwise silently fall back to the default).
absl::StatusOr<std::optional<v1::KvPolicy>> ParseKvCompression(const Fields& top) {
  const Json* v = top.Find("kv_compression");
  if (v == nullptr) return std::optional<v1::KvPolicy>();
  if (!v->is_object()) return InvalidParam("kv_compression", "kv_compression must be an object");
  static const char* const kKeys[] = {"method",  "budget", "ratio", "window",
                                      "pooling", "kernel", "beta",  "rounding"};
  for (auto it = v->begin(); it != v->end(); ++it) {
    bool known = false;
    for (const char* k : kKeys) known = known || it.key() == k;
    if (!known) {
      return InvalidParam(absl::StrCat("kv_compression.", it.key()),
                          absl::StrCat("kv_compression: unknown field '", it.key(), "'"));
    }
  }
  const Fields f(*v, "kv_compression.");
  v1::KvPolicy p;
  RETURN_IF_ERROR(ParseKvMethodField(f, p));
  ASSIGN_OR_RETURN(const std::optional<int64_t> budget,
                   f.Integer("budget", 1, std::numeric_limits<int64_t>::max()));
  if (budget) p.set_budget(*budget);
  ASSIGN_OR_RETURN(const std::optional<double> ratio, f.Number("ratio"));
  if (ratio) p.set_ratio(*ratio);
  ASSIGN_OR_RETURN(const std::optional<int64_t> window, f.Integer("window", 1, kInt32Max));
  if (window) p.set_window(static_cast<int32_t>(*window));
  RETURN_IF_ERROR(ParseKvPooling(f, p));
  ASSIGN_OR_RETURN(const std::optional<int64_t> kernel, f.Integer("kernel", 1, kInt32Max));
  if (kernel) p.set_kernel(static_cast<int32_t>(*kernel));
  ASSIGN_OR_RETURN(const std::optional<double> beta, f.Number("beta"));
  if (beta) p.set_beta(*beta);
  ASSIGN_OR_RETURN(const std::optional<std::string> rounding, f.String("rounding"));
  if (rounding && *rounding != "exact" && *rounding != "official") {
    return InvalidParam("kv_compression.rounding",
                        "kv_compression.rounding must be \"exact\" or \"official\"");
  }
  p.set_official_rounding(rounding.value_or("") == "official");
  return std::optional<v1::KvPolicy>(p);
}

// One message's content: a string, null, or a list of {"type": "text", "text": ...} parts
// (joined with newlines).
absl::StatusOr<std::string> ParseContent(const Json& content, const std::string& param) {
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    return InvalidParam(param, absl::StrCat(param, " must be a string or a list of text parts"));
  }
  std::vector<std::string> texts;
  for (size_t i = 0; i < content.size(); ++i) {
    const Json& part = content[i];
    const std::string part_param = absl::StrCat(param, "[", i, "]");
    if (!part.is_object() || !part.contains("type") || part["type"] != "text") {
      return InvalidParam(part_param,
                          absl::StrCat(part_param, ": only parts of type \"text\" are supported"));
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      return InvalidParam(part_param, absl::StrCat(part_param, ".text must be a string"));
    }
    texts.push_back(part["text"].get<std::string>());
  }
  return absl::StrJoin(texts, "\n");
}

absl::StatusOr<v1::ChatMessages> ParseMessages(const Fields& f) {
  const Json* v = f.Find("messages");
  if (v == nullptr) return InvalidParam("messages", "messages is required");
  if (!v->is_array() || v->empty()) {
    return InvalidParam("messages", "messages must be a non-empty list of messages");
  }
  v1::ChatMessages out;
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& m = (*v)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return InvalidParam(param, absl::StrCat(param, " must be an object"));
    if (!m.contains("role") || !m["role"].is_string()) {
      return InvalidParam(absl::StrCat(param, ".role"), absl::StrCat(param, ".role is required"));
    }
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for system
    if (role != "system" && role != "user" && role != "assistant") {
      return InvalidParam(absl::StrCat(param, ".role"),
                          absl::StrCat(param, ".role '", role,
                                       "' is not supported (system, developer, user, assistant)"));
    }
    const Json content = m.contains("content") ? m["content"] : Json();
    ASSIGN_OR_RETURN(std::string text, ParseContent(content, absl::StrCat(param, ".content")));
    v1::ChatMessage* msg = out.add_messages();
    msg->set_role(std::move(role));
    msg->set_content(std::move(text));
  }
  return out;
}

// A list of token ids (each in [0, 2^31)).
absl::StatusOr<v1::PromptIds> ParseIds(const Json& v, const std::string& param) {
  v1::PromptIds ids;
  for (const Json& item : v) {
    const std::optional<int64_t> id = Fields::AsInteger(item);
    if (!id || *id < 0 || *id > kInt32Max) {
      return InvalidParam(param, absl::StrCat(param, " must hold token ids (integers >= 0)"));
    }
    ids.add_ids(static_cast<int32_t>(*id));
  }
  return ids;
}

// One prompt: text or token ids.
struct Prompt {
  std::optional<std::string> text;
  v1::PromptIds ids;
};

// prompt: a string, a list of strings, a list of token ids, or a list of lists of token ids.
absl::StatusOr<std::vector<Prompt>> ParsePrompts(const Fields& f) {
  const Json* v = f.Find("prompt");
  if (v == nullptr) return InvalidParam("prompt", "prompt is required");
  if (v->is_string()) return std::vector<Prompt>{{v->get<std::string>(), {}}};
  const char* kShape = "prompt must be a string, a list of strings or a list of token ids";
  if (!v->is_array() || v->empty()) return InvalidParam("prompt", kShape);
  std::vector<Prompt> prompts;
  if ((*v)[0].is_number()) {
    ASSIGN_OR_RETURN(v1::PromptIds ids, ParseIds(*v, "prompt"));
    prompts.push_back({std::nullopt, std::move(ids)});
    return prompts;
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& item = (*v)[i];
    if (item.is_string()) {
      prompts.push_back({item.get<std::string>(), {}});
    } else if (item.is_array() && !item.empty()) {
      ASSIGN_OR_RETURN(v1::PromptIds ids, ParseIds(item, absl::StrCat("prompt[", i, "]")));
      prompts.push_back({std::nullopt, std::move(ids)});
    } else {
      return InvalidParam("prompt", kShape);
    }
  }
  return prompts;
}

// Everything of a GenerateRequest except its input: sampling, KV policy, session.
absl::Status ParseCommon(Endpoint endpoint, const Fields& f, v1::GenerateRequest& base) {
  RETURN_IF_ERROR(ParseSampling(endpoint, f, *base.mutable_sampling()));
  ASSIGN_OR_RETURN(const std::optional<v1::KvPolicy> kv, ParseKvCompression(f));
  if (kv) *base.mutable_kv_policy() = *kv;
  ASSIGN_OR_RETURN(const std::optional<std::string> session_id, f.String("session_id"));
  base.set_session_id(session_id.value_or(""));
  ASSIGN_OR_RETURN(const std::optional<std::string> mode, f.String("session_mode"));
  if (mode && *mode != "fork" && *mode != "append") {
    return InvalidParam("session_mode", "session_mode must be \"fork\" or \"append\"");
  }
  if (mode == "append") {
    if (base.session_id().empty()) {
      return InvalidParam("session_mode", "session_mode \"append\" needs a session_id");
    }
    base.set_session_mode(v1::SESSION_MODE_APPEND);
  }
  return absl::OkStatus();
}

absl::Status ParseHeader(const Fields& f, CompletionRequest& r) {
  ASSIGN_OR_RETURN(const std::optional<std::string> model, f.String("model"));
  if (!model || model->empty()) return InvalidParam("model", "model is required");
  r.model = *model;
  ASSIGN_OR_RETURN(const std::optional<bool> stream, f.Bool("stream"));
  r.stream = stream.value_or(false);
  if (const Json* opts = f.Find("stream_options"); opts != nullptr && r.stream) {
    if (!opts->is_object()) {
      return InvalidParam("stream_options", "stream_options must be an object");
    }
    ASSIGN_OR_RETURN(const std::optional<bool> usage,
                     Fields(*opts, "stream_options.").Bool("include_usage"));
    r.include_usage = usage.value_or(false);
  }
  ASSIGN_OR_RETURN(const std::optional<std::string> user, f.String("user"));
  r.user = user.value_or("");
  return absl::OkStatus();
}

// The inputs of every prompt: completions' prompt list, or chat's one message list.
absl::StatusOr<std::vector<v1::GenerateRequest>> ParseInputs(Endpoint endpoint, const Fields& f,
                                                             const v1::GenerateRequest& base) {
  std::vector<v1::GenerateRequest> inputs;
  if (endpoint == Endpoint::kChatCompletions) {
    ASSIGN_OR_RETURN(v1::ChatMessages messages, ParseMessages(f));
    ASSIGN_OR_RETURN(const std::optional<std::string> tmpl, f.String("chat_template"));
    v1::GenerateRequest req = base;
    *req.mutable_messages() = std::move(messages);
    req.set_chat_template(tmpl.value_or(""));
    inputs.push_back(std::move(req));
    return inputs;
  }
  ASSIGN_OR_RETURN(std::vector<Prompt> prompts, ParsePrompts(f));
  for (Prompt& p : prompts) {
    v1::GenerateRequest req = base;
    if (p.text) {
      req.set_prompt(std::move(*p.text));
    } else {
      *req.mutable_prompt_ids() = std::move(p.ids);
    }
    inputs.push_back(std::move(req));
  }
  return inputs;
}

// prompts x n choices; sample j of every prompt gets seed + j.
absl::Status FanOut(const Fields& f, std::vector<v1::GenerateRequest> inputs,
                    const ParseOptions& options, CompletionRequest& r) {
  ASSIGN_OR_RETURN(const std::optional<int64_t> n, f.Integer("n", 1, options.max_choices));
  r.n = static_cast<int32_t>(n.value_or(1));
  const int64_t total = static_cast<int64_t>(inputs.size()) * r.n;
  if (total > options.max_choices) {
    return InvalidParam("n", absl::StrCat("n x the number of prompts is ", total, "; at most ",
                                          options.max_choices, " are allowed"));
  }
  if (r.n > 1 && !r.session_id.empty() &&
      inputs.front().session_mode() == v1::SESSION_MODE_APPEND) {
    return InvalidParam("n", "session_mode \"append\" needs n = 1");
  }
  ASSIGN_OR_RETURN(const std::optional<uint64_t> seed, ParseSeed(f));
  for (const v1::GenerateRequest& input : inputs) {
    for (int32_t j = 0; j < r.n; ++j) {
      v1::GenerateRequest req = input;
      if (seed) req.mutable_sampling()->set_seed(*seed + static_cast<uint64_t>(j));
      r.choices.push_back(std::move(req));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status InvalidParam(absl::string_view param, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kParamPayloadUrl, absl::Cord(param));
  return status;
}

std::optional<std::string> ParamOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kParamPayloadUrl);
  if (!payload) return std::nullopt;
  return std::string(*payload);
}

int JsonNestingDepth(absl::string_view body) {
  int depth = 0;
  int max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return max_depth;
}

std::optional<v1::KvMethod> KvMethodFromApiName(absl::string_view name) {
  v1::KvMethod method;
  const std::string enum_name = absl::StrCat("KV_METHOD_", absl::AsciiStrToUpper(name));
  if (name.empty() || absl::AsciiStrToLower(name) != name ||
      !v1::KvMethod_Parse(enum_name, &method) || method == v1::KV_METHOD_UNSPECIFIED) {
    return std::nullopt;
  }
  return method;
}

std::string KvMethodApiName(v1::KvMethod method) {
  if (method == v1::KV_METHOD_UNSPECIFIED || !v1::KvMethod_IsValid(method)) return "";
  std::string name = v1::KvMethod_Name(method).substr(std::string("KV_METHOD_").size());
  absl::AsciiStrToLower(&name);
  return name;
}

absl::StatusOr<CompletionRequest> ParseCompletionRequest(Endpoint endpoint, absl::string_view body,
                                                         const ParseOptions& options) {
  ASSIGN_OR_RETURN(const Json json, ParseJsonObject(body));
  const Fields f(json, "");
  CompletionRequest r;
  r.endpoint = endpoint;
  RETURN_IF_ERROR(CheckUnsupported(f));
  RETURN_IF_ERROR(ParseHeader(f, r));
  ASSIGN_OR_RETURN(r.top_logprobs, ParseLogprobs(endpoint, f));
  v1::GenerateRequest base;
  RETURN_IF_ERROR(ParseCommon(endpoint, f, base));
  if (r.top_logprobs >= 0) base.mutable_sampling()->set_top_logprobs(r.top_logprobs);
  r.session_id = base.session_id();
  ASSIGN_OR_RETURN(std::vector<v1::GenerateRequest> inputs, ParseInputs(endpoint, f, base));
  RETURN_IF_ERROR(FanOut(f, std::move(inputs), options, r));
  return r;
}

absl::StatusOr<SessionCreateRequest> ParseSessionCreateRequest(absl::string_view body) {
  ASSIGN_OR_RETURN(const Json json, ParseJsonObject(body));
  const Fields f(json, "");
  SessionCreateRequest r;
  ASSIGN_OR_RETURN(const std::optional<std::string> model, f.String("model"));
  if (!model || model->empty()) return InvalidParam("model", "model is required");
  r.model = *model;
  const bool has_prompt = f.Find("prompt") != nullptr;
  const bool has_messages = f.Find("messages") != nullptr;
  if (has_prompt == has_messages) {
    return InvalidParam(has_prompt ? "messages" : "prompt",
                        "exactly one of prompt or messages is required");
  }
  v1::CreateSessionRequest& req = r.request;
  if (has_messages) {
    ASSIGN_OR_RETURN(*req.mutable_messages(), ParseMessages(f));
    ASSIGN_OR_RETURN(const std::optional<std::string> tmpl, f.String("chat_template"));
    req.set_chat_template(tmpl.value_or(""));
  } else {
    ASSIGN_OR_RETURN(std::vector<Prompt> prompts, ParsePrompts(f));
    if (prompts.size() != 1) return InvalidParam("prompt", "a session has one prompt");
    if (prompts[0].text) {
      req.set_prompt(std::move(*prompts[0].text));
    } else {
      *req.mutable_prompt_ids() = std::move(prompts[0].ids);
    }
  }
  ASSIGN_OR_RETURN(const std::optional<v1::KvPolicy> kv, ParseKvCompression(f));
  if (kv) *req.mutable_kv_policy() = *kv;
  ASSIGN_OR_RETURN(const std::optional<int64_t> ttl, f.Integer("ttl_seconds", 0, 365LL * 86400));
  req.set_ttl_seconds(ttl.value_or(0));
  return r;
}

}  // namespace funnel
