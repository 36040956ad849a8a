#include "server/server_config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/kv/kv_policy.h"
#include "runtime/text/chat_template.h"
#include "runtime/util/status_macros.h"
#include "server/command_line_flags.h"

namespace funnel {

const char kServerUsage[] =
    "usage: funnel-server --model PATH [flags]\n"
    "\n"
    "Serves funnel.v1.Inference (+ grpc.health.v1.Health and reflection) over gRPC, and\n"
    "/health, /ready, /metrics over HTTP on the admin port.\n"
    "\n"
    "  --model PATH              GGUF model file (required)\n"
    "  --host ADDR               listen address for gRPC and admin HTTP (default 127.0.0.1)\n"
    "  --port N                  gRPC port; 0 = ephemeral (default 50051). The bound address is\n"
    "                            printed to stderr as 'listening on HOST:PORT'\n"
    "  --port-file PATH          write the bound gRPC port there once serving\n"
    "  --admin-port N            HTTP port; 0 = ephemeral, -1 = disabled (default 8081)\n"
    "  --admin-port-file PATH    write the bound admin port there once serving\n"
    "  --device cpu|cuda         compute backend (default cpu); cuda needs a build with CUDA\n"
    "                            and a usable GPU, else the server exits with status 2\n"
    "  --weights-dtype f32|bf16|f16  weight matrices on the GPU (default f32); 16 bits halve\n"
    "                            their memory and decode bandwidth. --device cuda only\n"
    "  --kv-dtype f32|bf16|f16   KV cache on the GPU (default f32); 16 bits hold twice the\n"
    "                            tokens in --kv-cache-bytes. --device cuda only\n"
    "  --threads N               CPU compute threads, 1 to 256 (default: all cores)\n"
    "  --kv-method M             default KV policy: full|pyramidkv|snapkv|streamingllm|h2o\n"
    "                            (default full)\n"
    "  --kv-budget B             entries kept per layer on average, window included\n"
    "  --kv-ratio R              alternative to --kv-budget: fraction of the prompt, (0, 1]\n"
    "  --kv-window W             observation window (default 8)\n"
    "  --kv-pooling max|avg      score pooling (default max)\n"
    "  --kv-kernel K             pooling kernel, odd (default 7)\n"
    "  --kv-beta B               PyramidKV steepness, >= 1 (default 20)\n"
    "  --kv-rounding exact|official  per-layer budget rounding (default exact)\n"
    "  --kv-cache-bytes B        KV pool size, e.g. 1G, 512M (default 1G)\n"
    "  --block-size N            KV entries per block, 1 to 1024 (default 16)\n"
    "  --max-num-seqs N          sequences running at once (default 64)\n"
    "  --max-queue N             waiting requests; beyond: RESOURCE_EXHAUSTED (default 256)\n"
    "  --max-prompt-tokens N     longest prompt; 0 = the model's context (default 0)\n"
    "  --max-tokens-per-step N   prompt tokens admitted per engine step (default 2048)\n"
    "  --max-sessions N          live sessions (default 1024)\n"
    "  --session-ttl SECONDS     default session time to live (default 3600)\n"
    "  --session-dir DIR         durable sessions: written there when created or appended,\n"
    "                            reloaded at start (default: none, sessions live in memory)\n"
    "  --api-key-file PATH       one key per line ('#' comments); clients send metadata\n"
    "                            'authorization: Bearer <key>'. Absent: open access\n"
    "  --tls-cert PEM            serve gRPC over TLS with this certificate chain (needs "
    "--tls-key)\n"
    "  --tls-key PEM             the certificate's private key\n"
    "  --tls-client-ca PEM       require client certificates signed by this CA (mutual TLS)\n"
    "  --replica-id ID           replica name embedded in session ids: 1 to 64 of [A-Za-z0-9_.-]\n"
    "                            (default r0)\n"
    "  --served-model-name NAME  model id reported to clients (default: general.name)\n"
    "  --chat-template NAME      chat template instead of the model's own:\n"
    "                            chatml|llama2|llama3|mistral|mistral-v1|mistral-v2|\n"
    "                            mistral-v3|mistral-v7|plain|zephyr\n"
    "  --shutdown-grace SECONDS  on SIGTERM/SIGINT, time in-flight requests get to finish\n"
    "                            before they are cancelled (default 10)\n"
    "  --log-level LEVEL         trace|debug|info|warn|error|critical|off (default info)\n"
    "  --help                    this text\n"
    "\n"
    "Bad flags exit with status 2.\n";

namespace {

const std::set<std::string>& KnownFlags() {
  static const auto* flags = new std::set<std::string>{"model",
                                                       "host",
                                                       "port",
                                                       "port-file",
                                                       "admin-port",
                                                       "admin-port-file",
                                                       "device",
                                                       "weights-dtype",
                                                       "kv-dtype",
                                                       "threads",
                                                       "kv-method",
                                                       "kv-budget",
                                                       "kv-ratio",
                                                       "kv-window",
                                                       "kv-pooling",
                                                       "kv-kernel",
                                                       "kv-beta",
                                                       "kv-rounding",
                                                       "kv-cache-bytes",
                                                       "block-size",
                                                       "max-num-seqs",
                                                       "max-queue",
                                                       "max-prompt-tokens",
                                                       "max-tokens-per-step",
                                                       "max-sessions",
                                                       "session-ttl",
                                                       "session-dir",
                                                       "api-key-file",
                                                       "replica-id",
                                                       "tls-cert",
                                                       "tls-key",
                                                       "tls-client-ca",
                                                       "served-model-name",
                                                       "chat-template",
                                                       "shutdown-grace",
                                                       "log-level"};
  return *flags;
}

absl::Status ParseListen(const CommandLineFlags& f, ServerConfig& c) {
  if (auto v = f.Get("host")) c.host = *v;
  if (c.host.empty()) return absl::InvalidArgumentError("--host is empty");
  ASSIGN_OR_RETURN(c.port, f.GetInt("port", c.port, 0, 65535));
  ASSIGN_OR_RETURN(c.admin_port, f.GetInt("admin-port", c.admin_port, -1, 65535));
  c.port_file = f.Get("port-file").value_or("");
  c.admin_port_file = f.Get("admin-port-file").value_or("");
  if (c.admin_port < 0 && !c.admin_port_file.empty()) {
    return absl::InvalidArgumentError("--admin-port-file needs the admin port (not -1)");
  }
  if (c.port != 0 && c.admin_port == c.port) {
    return absl::InvalidArgumentError("--admin-port must differ from --port");
  }
  return absl::OkStatus();
}

// `parse`'s error, prefixed with the flag's name.
template <typename T, typename Parse>
absl::Status ParseEnumFlag(const CommandLineFlags& f, const std::string& name, Parse parse,
                           T& out) {
  std::optional<std::string> v = f.Get(name);
  if (!v) return absl::OkStatus();
  absl::StatusOr<T> parsed = parse(*v);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", parsed.status().message()));
  }
  out = *parsed;
  return absl::OkStatus();
}

absl::Status ParseKvDefaults(const CommandLineFlags& f, KvPolicy& p) {
  RETURN_IF_ERROR(ParseEnumFlag(f, "kv-method", ParseKvMethod, p.method));
  ASSIGN_OR_RETURN(p.budget, f.GetInt("kv-budget", 0, 1, std::numeric_limits<int32_t>::max()));
  ASSIGN_OR_RETURN(p.ratio, f.GetDouble("kv-ratio", 0.0, 1e-9, 1.0));
  ASSIGN_OR_RETURN(p.window, f.GetInt("kv-window", p.window, 1, 1 << 20));
  RETURN_IF_ERROR(ParseEnumFlag(f, "kv-pooling", ParseKvPooling, p.pooling));
  ASSIGN_OR_RETURN(p.kernel, f.GetInt("kv-kernel", p.kernel, 1, 1023));
  ASSIGN_OR_RETURN(p.beta, f.GetDouble("kv-beta", p.beta, 1.0, 1e6));
  RETURN_IF_ERROR(ParseEnumFlag(f, "kv-rounding", ParseBudgetRounding, p.rounding));
  if (absl::Status s = p.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-*: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status ParseEngine(const CommandLineFlags& f, ServerConfig& c) {
  const int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  // Ranges are RunnerOptions::Validate's, so that the error names the flag.
  ASSIGN_OR_RETURN(c.runner.num_threads,
                   f.GetInt("threads", std::min<int64_t>(cores, 256), 1, 256));
  ASSIGN_OR_RETURN(c.runner.block_size, f.GetInt("block-size", c.runner.block_size, 1, 1024));
  if (auto v = f.Get("kv-cache-bytes")) {
    auto bytes = ParseByteSize(*v);
    if (!bytes.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("--kv-cache-bytes: ", bytes.status().message()));
    c.runner.kv_cache_bytes = *bytes;
  }
  if (absl::Status s = c.runner.Validate(); !s.ok()) return s;
  RETURN_IF_ERROR(ParseEnumFlag(f, "device", ParseDevice, c.device));
  RETURN_IF_ERROR(ParseEnumFlag(f, "weights-dtype", ParseDeviceDtype, c.runner.device_weights));
  RETURN_IF_ERROR(ParseEnumFlag(f, "kv-dtype", ParseDeviceDtype, c.runner.kv_dtype));
  if (c.runner.device_weights != DeviceDtype::kF32 && c.device != Device::kCuda) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--weights-dtype ", DeviceDtypeName(c.runner.device_weights), " needs --device cuda"));
  }
  if (c.runner.kv_dtype != DeviceDtype::kF32 && c.device != Device::kCuda) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-dtype ", DeviceDtypeName(c.runner.kv_dtype), " needs --device cuda"));
  }
  EngineConfig& e = c.engine;
  RETURN_IF_ERROR(ParseKvDefaults(f, e.default_kv_policy));
  ASSIGN_OR_RETURN(e.max_num_seqs, f.GetInt("max-num-seqs", e.max_num_seqs, 1, 1 << 16));
  ASSIGN_OR_RETURN(e.max_queue, f.GetInt("max-queue", e.max_queue, 1, 1 << 20));
  ASSIGN_OR_RETURN(e.max_prompt_tokens, f.GetInt("max-prompt-tokens", 0, 0, kMaxInt));
  ASSIGN_OR_RETURN(e.max_tokens_per_step,
                   f.GetInt("max-tokens-per-step", e.max_tokens_per_step, 1, kMaxInt));
  ASSIGN_OR_RETURN(e.max_sessions, f.GetInt("max-sessions", e.max_sessions, 0, 1 << 20));
  ASSIGN_OR_RETURN(double ttl, f.GetDouble("session-ttl", absl::ToDoubleSeconds(e.session_ttl),
                                           1e-3, 365.0 * 86400));
  e.session_ttl = absl::Seconds(ttl);
  e.session_dir = f.Get("session-dir").value_or("");
  if (f.Get("session-dir") && e.session_dir.empty()) {
    return absl::InvalidArgumentError("--session-dir is empty");
  }
  if (auto v = f.Get("replica-id")) {
    EngineConfig probe;
    probe.replica_id = *v;
    if (absl::Status s = probe.Validate(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--replica-id: ", s.message()));
    }
    e.replica_id = *v;
  }
  return e.Validate();
}

absl::Status ParseTls(const CommandLineFlags& f, ServerConfig& c) {
  c.tls_cert_file = f.Get("tls-cert").value_or("");
  c.tls_key_file = f.Get("tls-key").value_or("");
  c.tls_client_ca_file = f.Get("tls-client-ca").value_or("");
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!c.tls_client_ca_file.empty() && c.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  return absl::OkStatus();
}

absl::Status ParseMisc(const CommandLineFlags& f, ServerConfig& c) {
  RETURN_IF_ERROR(ParseTls(f, c));
  c.api_key_file = f.Get("api-key-file").value_or("");
  c.served_model_name = f.Get("served-model-name").value_or("");
  if (f.Get("served-model-name") && c.served_model_name.empty()) {
    return absl::InvalidArgumentError("--served-model-name is empty");
  }
  c.chat_template = f.Get("chat-template").value_or("");
  if (!c.chat_template.empty()) {
    auto kind = ChatTemplate::KindFromName(c.chat_template);
    if (!kind.ok())
      return absl::InvalidArgumentError(absl::StrCat("--chat-template: ", kind.status().message()));
  }
  ASSIGN_OR_RETURN(double grace, f.GetDouble("shutdown-grace", 10.0, 0.0, 3600.0));
  c.shutdown_grace = absl::Seconds(grace);
  c.log_level = f.Get("log-level").value_or(c.log_level);
  static const std::set<std::string> kLevels = {"trace", "debug",    "info", "warn",
                                                "error", "critical", "off"};
  if (kLevels.count(c.log_level) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--log-level: unknown level '", c.log_level,
                                                   "' (trace|debug|info|warn|error|critical|off)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> ParseByteSize(const std::string& text) {
  std::string digits = text;
  int shift = 0;
  if (!digits.empty()) {
    switch (absl::ascii_toupper(static_cast<unsigned char>(digits.back()))) {
      case 'K':
        shift = 10;
        break;
      case 'M':
        shift = 20;
        break;
      case 'G':
        shift = 30;
        break;
      case 'T':
        shift = 40;
        break;
      default:
        break;
    }
    if (shift != 0) digits.pop_back();
  }
  int64_t n = 0;
  if (!absl::SimpleAtoi(digits, &n) || n <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a positive size (bytes, or with K/M/G/T)"));
  }
  if (n > (std::numeric_limits<int64_t>::max() >> shift)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is too large"));
  }
  return n << shift;
}

absl::StatusOr<ServerConfig> ParseServerFlags(const std::vector<std::string>& args) {
  CommandLineFlags flags(KnownFlags());
  ServerConfig c;
  RETURN_IF_ERROR(flags.Parse(args, c.help));
  if (c.help) return c;
  auto model = flags.Get("model");
  if (!model || model->empty()) return absl::InvalidArgumentError("--model is required");
  c.model_path = *model;
  RETURN_IF_ERROR(ParseListen(flags, c));
  RETURN_IF_ERROR(ParseEngine(flags, c));
  RETURN_IF_ERROR(ParseMisc(flags, c));
  return c;
}

}  // namespace funnel
