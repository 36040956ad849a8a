#include "client/remote_args.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/generation_flags.h"
#include "proto/kv_method_conversion.h"
#include "runtime/sample/sampling_params.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const char* flag) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  if (!in || buf.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": cannot read a PEM file at ", path));
  }
  return buf.str();
}

// --tls (system roots), --tls-ca, --tls-cert + --tls-key (mutual TLS), --tls-server-name: any of
// them turns TLS on.
absl::StatusOr<std::optional<TlsOptions>> ParseTlsFlags(const CliArgs& args) {
  const bool any = args.Flag("tls") || args.Has("tls-ca") || args.Has("tls-cert") ||
                   args.Has("tls-key") || args.Has("tls-server-name");
  if (!any) return std::optional<TlsOptions>();
  if (args.Has("tls-cert") != args.Has("tls-key")) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  TlsOptions tls;
  if (auto p = args.Get("tls-ca")) {
    ASSIGN_OR_RETURN(tls.root_certs_pem, ReadPemFile(*p, "tls-ca"));
  }
  if (auto p = args.Get("tls-cert")) {
    ASSIGN_OR_RETURN(tls.client_cert_pem, ReadPemFile(*p, "tls-cert"));
  }
  if (auto p = args.Get("tls-key")) {
    ASSIGN_OR_RETURN(tls.client_key_pem, ReadPemFile(*p, "tls-key"));
  }
  tls.server_name_override = args.Get("tls-server-name").value_or("");
  return std::optional<TlsOptions>(std::move(tls));
}

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

v1::KvMethod MethodToProto(KvMethod m) { return KvMethodToProto(m); }

// An unspecified (or unknown) method reads as full.
KvMethod MethodFromProto(v1::KvMethod m) { return KvMethodFromProto(m).value_or(KvMethod::kFull); }

}  // namespace

void AddConnectionFlags(CliSpec& spec) {
  spec.options.insert({"server", "api-key", "api-key-file", "timeout", "tls-ca", "tls-cert",
                       "tls-key", "tls-server-name"});
  spec.flags.insert("tls");
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
  ASSIGN_OR_RETURN(o.tls, ParseTlsFlags(args));
  return o;
}

absl::StatusOr<v1::SamplingParams> ParseSamplingFlags(const CliArgs& args) {
  // Read exactly as `funnel run` does, checked locally, then sent in full.
  ASSIGN_OR_RETURN(SamplingParams s, ParseSamplingParams(args));
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

absl::StatusOr<std::optional<v1::KvPolicy>> ParseKvFlags(const CliArgs& args) {
  if (!HasKvFlags(args)) return std::optional<v1::KvPolicy>();
  ASSIGN_OR_RETURN(KvPolicy p, ParseKvPolicy(args));
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
