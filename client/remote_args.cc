#include "client/remote_args.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "runtime/sample/sampling_params.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr const char* kKvFlags[] = {"kv-method",  "kv-budget", "kv-ratio",   "kv-window",
                                    "kv-pooling", "kv-kernel", "kv-rounding"};

absl::StatusOr<std::string> ReadApiKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read --api-key-file ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  std::string key(absl::StripAsciiWhitespace(buf.str()));
  if (key.empty())
    return absl::InvalidArgumentError(absl::StrCat("--api-key-file ", path, " is empty"));
  return key;
}

v1::KvMethod MethodToProto(KvMethod m) {
  switch (m) {
    case KvMethod::kFull:
      return v1::KV_METHOD_FULL;
    case KvMethod::kPyramidKv:
      return v1::KV_METHOD_PYRAMIDKV;
    case KvMethod::kSnapKv:
      return v1::KV_METHOD_SNAPKV;
    case KvMethod::kStreamingLlm:
      return v1::KV_METHOD_STREAMINGLLM;
    case KvMethod::kH2o:
      return v1::KV_METHOD_H2O;
  }
  return v1::KV_METHOD_UNSPECIFIED;
}

KvMethod MethodFromProto(v1::KvMethod m) {
  switch (m) {
    case v1::KV_METHOD_PYRAMIDKV:
      return KvMethod::kPyramidKv;
    case v1::KV_METHOD_SNAPKV:
      return KvMethod::kSnapKv;
    case v1::KV_METHOD_STREAMINGLLM:
      return KvMethod::kStreamingLlm;
    case v1::KV_METHOD_H2O:
      return KvMethod::kH2o;
    default:
      return KvMethod::kFull;
  }
}

}  // namespace

void AddConnectionFlags(CliSpec& spec) {
  spec.options.insert({"server", "api-key", "api-key-file", "timeout"});
}

absl::StatusOr<ClientOptions> ParseConnectionFlags(const CliArgs& args) {
  ClientOptions o;
  ASSIGN_OR_RETURN(o.target, args.Require("server"));
  if (args.Has("api-key") && args.Has("api-key-file")) {
    return absl::InvalidArgumentError("give at most one of --api-key and --api-key-file");
  }
  if (auto key = args.Get("api-key")) o.api_key = *key;
  if (auto path = args.Get("api-key-file")) {
    ASSIGN_OR_RETURN(o.api_key, ReadApiKeyFile(*path));
  }
  if (args.Has("timeout")) {
    ASSIGN_OR_RETURN(double seconds, args.GetDouble("timeout", 0.0, 1e-3, 1e7));
    o.unary_timeout = absl::Seconds(seconds);
    o.generate_timeout = absl::Seconds(seconds);
  }
  return o;
}

void AddSamplingFlags(CliSpec& spec) {
  spec.options.insert({"max-tokens", "temperature", "top-p", "top-k", "min-p", "repetition-penalty",
                       "presence-penalty", "frequency-penalty", "seed"});
  spec.flags.insert("ignore-eos");
  spec.repeated.insert("stop");
}

absl::StatusOr<v1::SamplingParams> ParseSamplingFlags(const CliArgs& args) {
  // Read exactly as `funnel run` does, checked locally, then sent in full.
  SamplingParams s;
  ASSIGN_OR_RETURN(s.max_tokens, args.GetInt("max-tokens", 128, 0, 1 << 24));
  ASSIGN_OR_RETURN(double temperature, args.GetDouble("temperature", 0.0, 0.0, 100.0));
  ASSIGN_OR_RETURN(double top_p, args.GetDouble("top-p", 1.0, 0.0, 1.0));
  ASSIGN_OR_RETURN(s.top_k, args.GetInt("top-k", 0, -1, 1 << 24));
  ASSIGN_OR_RETURN(double min_p, args.GetDouble("min-p", 0.0, 0.0, 1.0));
  ASSIGN_OR_RETURN(double rep, args.GetDouble("repetition-penalty", 1.0, 0.0, 100.0));
  ASSIGN_OR_RETURN(double pres, args.GetDouble("presence-penalty", 0.0, -2.0, 2.0));
  ASSIGN_OR_RETURN(double freq, args.GetDouble("frequency-penalty", 0.0, -2.0, 2.0));
  s.temperature = static_cast<float>(temperature);
  s.top_p = static_cast<float>(top_p);
  s.min_p = static_cast<float>(min_p);
  s.repetition_penalty = static_cast<float>(rep);
  s.presence_penalty = static_cast<float>(pres);
  s.frequency_penalty = static_cast<float>(freq);
  if (args.Has("seed")) {
    ASSIGN_OR_RETURN(int64_t seed, args.GetInt("seed", 0, 0, INT64_MAX));
    s.seed = static_cast<uint64_t>(seed);
  }
  s.stop = args.GetAll("stop");
  s.ignore_eos = args.Flag("ignore-eos");
  RETURN_IF_ERROR(s.Validate());

  v1::SamplingParams p;
  p.set_max_tokens(s.max_tokens);
  p.set_temperature(s.temperature);
  p.set_top_p(s.top_p);
  p.set_top_k(s.top_k);
  p.set_min_p(s.min_p);
  p.set_repetition_penalty(s.repetition_penalty);
  p.set_presence_penalty(s.presence_penalty);
  p.set_frequency_penalty(s.frequency_penalty);
  if (s.seed) p.set_seed(*s.seed);
  for (const std::string& stop : s.stop) p.add_stop(stop);
  p.set_ignore_eos(s.ignore_eos);
  return p;
}

void AddKvFlags(CliSpec& spec) {
  for (const char* f : kKvFlags) spec.options.insert(f);
}

absl::StatusOr<std::optional<v1::KvPolicy>> ParseKvFlags(const CliArgs& args) {
  bool any = false;
  for (const char* f : kKvFlags) any = any || args.Has(f);
  if (!any) return std::optional<v1::KvPolicy>();
  KvPolicy p;
  ASSIGN_OR_RETURN(p.method, ParseKvMethod(args.Get("kv-method").value_or("full")));
  ASSIGN_OR_RETURN(p.budget, args.GetInt("kv-budget", 0, 1, INT32_MAX));
  ASSIGN_OR_RETURN(p.ratio, args.GetDouble("kv-ratio", 0.0, 1e-9, 1.0));
  ASSIGN_OR_RETURN(p.window, args.GetInt("kv-window", p.window, 1, 1 << 20));
  ASSIGN_OR_RETURN(p.kernel, args.GetInt("kv-kernel", p.kernel, 1, 1023));
  if (auto v = args.Get("kv-pooling")) {
    ASSIGN_OR_RETURN(p.pooling, ParseKvPooling(*v));
  }
  if (auto v = args.Get("kv-rounding")) {
    ASSIGN_OR_RETURN(p.rounding, ParseBudgetRounding(*v));
  }
  RETURN_IF_ERROR(p.Validate());
  return std::optional<v1::KvPolicy>(KvPolicyToProto(p));
}

v1::KvPolicy KvPolicyToProto(const KvPolicy& policy) {
  v1::KvPolicy p;
  p.set_method(MethodToProto(policy.method));
  p.set_budget(policy.budget);
  p.set_ratio(policy.ratio);
  p.set_window(policy.window);
  p.set_pooling(policy.pooling == KvPooling::kAvg ? v1::KV_POOLING_AVG : v1::KV_POOLING_MAX);
  p.set_kernel(policy.kernel);
  p.set_beta(policy.beta);
  p.set_official_rounding(policy.rounding == BudgetRounding::kOfficial);
  return p;
}

KvPolicy KvPolicyFromProto(const v1::KvPolicy& p) {
  KvPolicy policy;
  policy.method = MethodFromProto(p.method());
  policy.budget = p.budget();
  policy.ratio = p.ratio();
  if (p.window() > 0) policy.window = p.window();
  policy.pooling = p.pooling() == v1::KV_POOLING_AVG ? KvPooling::kAvg : KvPooling::kMax;
  if (p.kernel() > 0) policy.kernel = p.kernel();
  if (p.beta() > 0.0) policy.beta = p.beta();
  policy.rounding = p.official_rounding() ? BudgetRounding::kOfficial : BudgetRounding::kExact;
  return policy;
}

KvPolicy EffectiveKvPolicy(const v1::KvPolicy* request_policy, const v1::KvPolicy& server_default) {
  KvPolicy p = KvPolicyFromProto(server_default);
  if (request_policy == nullptr) return p;
  const v1::KvPolicy& r = *request_policy;
  if (r.method() != v1::KV_METHOD_UNSPECIFIED) p.method = MethodFromProto(r.method());
  if (r.budget() != 0 || r.ratio() != 0.0) {
    p.budget = r.budget();
    p.ratio = r.ratio();
  } else if (p.method == KvMethod::kFull) {
    p.budget = 0;
    p.ratio = 0.0;
  }
  if (r.window() > 0) p.window = r.window();
  if (r.pooling() != v1::KV_POOLING_UNSPECIFIED) {
    p.pooling = r.pooling() == v1::KV_POOLING_AVG ? KvPooling::kAvg : KvPooling::kMax;
  }
  if (r.kernel() > 0) p.kernel = r.kernel();
  if (r.beta() > 0.0) p.beta = r.beta();
  if (r.official_rounding()) p.rounding = BudgetRounding::kOfficial;
  return p;
}

absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text, const std::string& flag) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not an integer"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is empty"));
  return ids;
}

absl::Status WithCodeName(const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(
      status.code(), absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message()));
}

nlohmann::json SessionJson(const v1::Session& s, bool detail) {
  nlohmann::json j = {{"session_id", s.session_id()},
                      {"tokens", s.tokens()},
                      {"per_layer_tokens", std::vector<int64_t>(s.per_layer_tokens().begin(),
                                                                s.per_layer_tokens().end())},
                      {"kv_bytes", s.kv_bytes()}};
  if (detail) {
    const KvPolicy p = KvPolicyFromProto(s.kv_policy());
    nlohmann::json kv = {{"method", KvMethodName(p.method)}};
    if (p.compresses()) {
      kv["budget"] = p.budget;
      if (p.ratio > 0.0) kv["ratio"] = p.ratio;
      kv["window"] = p.window;
    }
    j["kv_policy"] = kv;
    j["created_unix_ms"] = s.created_unix_ms();
    j["expires_unix_ms"] = s.expires_unix_ms();
    j["active_requests"] = s.active_requests();
  }
  return j;
}

void PrintJson(const nlohmann::json& j) {
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  std::fflush(stdout);
}

}  // namespace funnel
