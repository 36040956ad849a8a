// Command-line pieces shared by the commands that talk to funnel-server (generate, session,
// bench): connection flags, the sampling and KV flags of `funnel run`, proto conversions and the
// JSON shapes they print.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli_args.h"
#include "client/funnel_client.h"
#include "client/generation_flags.h"
#include "nlohmann/json.hpp"
#include "runtime/kv/kv_policy.h"

namespace funnel {

// --server ADDR --api-key KEY | --api-key-file F, --timeout SECONDS (unary calls and streams),
// TLS: --tls (system roots) | --tls-ca PEM, --tls-cert PEM --tls-key PEM (mutual TLS),
// --tls-server-name NAME (the name the server's certificate must hold, when not the host).
void AddConnectionFlags(CliSpec& spec);
absl::StatusOr<ClientOptions> ParseConnectionFlags(const CliArgs& args);

// The sampling flags of `funnel run` (client/generation_flags.h: AddSamplingFlags) as a proto.
absl::StatusOr<v1::SamplingParams> ParseSamplingFlags(const CliArgs& args);

// The KV flags of `funnel run` (--kv-method, --kv-budget, --kv-ratio, --kv-window, --kv-pooling,
// --kv-kernel, --kv-rounding). nullopt when none is given (the server's default applies); else
// the policy as `funnel run` reads it (method defaults to full), validated.
// (AddKvFlags in client/generation_flags.h declares them.)
absl::StatusOr<std::optional<v1::KvPolicy>> ParseKvFlags(const CliArgs& args);

v1::KvPolicy KvPolicyToProto(const KvPolicy& policy);
// UNSPECIFIED fields take the engine defaults (an unspecified method reads as full).
KvPolicy KvPolicyFromProto(const v1::KvPolicy& policy);
// The policy the server applies to a request: its default, overridden by the request's policy
// field by field where one is given (the server's rules; unset fields keep the default).
KvPolicy EffectiveKvPolicy(const v1::KvPolicy* request_policy, const v1::KvPolicy& server_default);

// "1,2,3" → ids (InvalidArgument naming `flag` when malformed or empty).
absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text, const std::string& flag);

// A server-side failure as printed by the commands: "<CODE>: <message>", same code.
absl::Status WithCodeName(const absl::Status& status);

// {"session_id","tokens","per_layer_tokens","kv_bytes"} (+ policy, times, active requests
// when `detail`).
nlohmann::json SessionJson(const v1::Session& session, bool detail);

// Prints `j` on one line to stdout (invalid UTF-8 replaced, as `funnel run --json` does).
void PrintJson(const nlohmann::json& j);

}  // namespace funnel
