#include "server/gateway/gateway_config.h"

#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "runtime/util/status_macros.h"
#include "server/command_line_flags.h"

namespace funnel {

const char kGatewayUsage[] =
    "usage: funnel-gateway --backend HOST:PORT [--backend HOST:PORT ...] [flags]\n"
    "\n"
    "Serves the OpenAI API over HTTP (/v1/completions, /v1/chat/completions with SSE streaming,\n"
    "/v1/models, /v1/sessions) plus /health and /metrics, and calls funnel-server replicas over\n"
    "gRPC: plain requests go to the least-loaded healthy replica, session requests to the replica\n"
    "that owns the session.\n"
    "\n"
    "  --backend ADDR            funnel-server gRPC address; repeat (or comma-separate) for\n"
    "                            several replicas (required)\n"
    "  --host ADDR               HTTP listen address (default 127.0.0.1)\n"
    "  --port N                  HTTP port; 0 = ephemeral (default 8080). The bound address is\n"
    "                            printed to stderr as 'listening on HOST:PORT'\n"
    "  --port-file PATH          write the bound HTTP port there once serving\n"
    "  --api-key-file PATH       one key per line ('#' comments); clients send\n"
    "                            'Authorization: Bearer <key>'. Absent: open access. Keys are\n"
    "                            forwarded to the servers (sessions stay per key); the first key\n"
    "                            also authenticates the health probes\n"
    "  --max-body-bytes B        largest request body, e.g. 1M (default 8M); larger: 413\n"
    "  --threads N               HTTP requests served at once; a stream holds one (default 64)\n"
    "  --max-choices N           most choices (n x prompts) of one request (default 16)\n"
    "  --request-timeout SECONDS deadline of each generation; 0 = none (default 0); then 504\n"
    "  --probe-interval SECONDS  health probe period of a healthy backend (default 2)\n"
    "  --max-probe-backoff SECONDS  longest wait between probes of a down backend (default 10)\n"
    "  --tls-cert PEM            serve HTTPS with this certificate chain (needs --tls-key);\n"
    "                            every route, /health and /metrics included\n"
    "  --tls-key PEM             the certificate's private key (unencrypted)\n"
    "  --tls-client-ca PEM       require client certificates signed by this CA (mutual TLS)\n"
    "  --backend-tls             call the backends over TLS (system roots); implied by any\n"
    "                            --backend-tls-* flag\n"
    "  --backend-tls-ca PEM      roots that sign the backends' certificates\n"
    "  --backend-tls-cert PEM    client certificate for the backends (mutual TLS; needs\n"
    "                            --backend-tls-key)\n"
    "  --backend-tls-key PEM     its private key\n"
    "  --backend-tls-server-name NAME  the name the backends' certificates hold, when not the\n"
    "                            host of --backend\n"
    "  --log-level LEVEL         trace|debug|info|warn|error|critical|off (default info)\n"
    "  --help                    this text\n"
    "\n"
    "Bad flags, and unreadable or invalid key or TLS files, exit with status 2.\n";

namespace {

const std::set<std::string>& KnownFlags() {
  static const auto* flags = new std::set<std::string>{"backend",
                                                       "host",
                                                       "port",
                                                       "port-file",
                                                       "api-key-file",
                                                       "max-body-bytes",
                                                       "threads",
                                                       "max-choices",
                                                       "request-timeout",
                                                       "probe-interval",
                                                       "max-probe-backoff",
                                                       "log-level",
                                                       "tls-cert",
                                                       "tls-key",
                                                       "tls-client-ca",
                                                       "backend-tls",
                                                       "backend-tls-ca",
                                                       "backend-tls-cert",
                                                       "backend-tls-key",
                                                       "backend-tls-server-name"};
  return *flags;
}

// The value of flag `name` (absent: ""); InvalidArgument when given empty.
absl::StatusOr<std::string> NonEmpty(const CommandLineFlags& f, const std::string& name) {
  std::optional<std::string> v = f.Get(name);
  if (v && v->empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is empty"));
  return v.value_or("");
}

absl::Status ParseHttps(const CommandLineFlags& f, HttpsFiles& https) {
  ASSIGN_OR_RETURN(https.cert_file, NonEmpty(f, "tls-cert"));
  ASSIGN_OR_RETURN(https.key_file, NonEmpty(f, "tls-key"));
  ASSIGN_OR_RETURN(https.client_ca_file, NonEmpty(f, "tls-client-ca"));
  if (https.cert_file.empty() != https.key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!https.client_ca_file.empty() && !https.enabled()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  return absl::OkStatus();
}

absl::Status ParseBackendTls(const CommandLineFlags& f, BackendTlsFiles& tls) {
  ASSIGN_OR_RETURN(tls.ca_file, NonEmpty(f, "backend-tls-ca"));
  ASSIGN_OR_RETURN(tls.cert_file, NonEmpty(f, "backend-tls-cert"));
  ASSIGN_OR_RETURN(tls.key_file, NonEmpty(f, "backend-tls-key"));
  ASSIGN_OR_RETURN(tls.server_name, NonEmpty(f, "backend-tls-server-name"));
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("--backend-tls-cert and --backend-tls-key go together");
  }
  tls.enabled = f.Get("backend-tls").has_value() || !tls.ca_file.empty() ||
                !tls.cert_file.empty() || !tls.server_name.empty();
  return absl::OkStatus();
}

// "1048576", "512K", "8M", "1G" (binary multiples) → bytes.
absl::StatusOr<int64_t> ParseSize(const std::string& text) {
  std::string digits = text;
  int shift = 0;
  if (!digits.empty()) {
    const char unit = digits.back();
    if (unit == 'k' || unit == 'K') shift = 10;
    if (unit == 'm' || unit == 'M') shift = 20;
    if (unit == 'g' || unit == 'G') shift = 30;
    if (shift != 0) digits.pop_back();
  }
  int64_t n = 0;
  if (!absl::SimpleAtoi(digits, &n) || n <= 0 || n > (int64_t{1} << 40) >> shift) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-body-bytes: '", text, "' is not a size in (0, 1T] (bytes, or K/M/G)"));
  }
  return n << shift;
}

absl::Status ParseBackends(const CommandLineFlags& f, GatewayConfig& c) {
  for (const std::string& value : f.All("backend")) {
    for (absl::string_view part : absl::StrSplit(value, ',')) {
      part = absl::StripAsciiWhitespace(part);
      if (part.empty()) return absl::InvalidArgumentError("--backend: empty address");
      for (const std::string& seen : c.backends) {
        if (seen == part) {
          return absl::InvalidArgumentError(absl::StrCat("--backend ", part, " given twice"));
        }
      }
      c.backends.emplace_back(part);
    }
  }
  if (c.backends.empty()) return absl::InvalidArgumentError("--backend is required");
  return absl::OkStatus();
}

absl::Status ParseLimits(const CommandLineFlags& f, GatewayConfig& c) {
  if (auto v = f.Get("max-body-bytes")) {
    ASSIGN_OR_RETURN(c.max_body_bytes, ParseSize(*v));
  }
  ASSIGN_OR_RETURN(c.http_threads, f.GetInt("threads", c.http_threads, 1, 4096));
  ASSIGN_OR_RETURN(c.max_choices, f.GetInt("max-choices", c.max_choices, 1, 1024));
  ASSIGN_OR_RETURN(const double timeout, f.GetDouble("request-timeout", 0.0, 0.0, 7 * 86400.0));
  c.request_timeout = timeout <= 0.0 ? absl::InfiniteDuration() : absl::Seconds(timeout);
  ASSIGN_OR_RETURN(const double interval, f.GetDouble("probe-interval", 2.0, 0.01, 3600.0));
  c.probe_interval = absl::Seconds(interval);
  ASSIGN_OR_RETURN(const double backoff, f.GetDouble("max-probe-backoff", 10.0, 0.01, 3600.0));
  c.max_probe_backoff = absl::Seconds(backoff);
  return absl::OkStatus();
}

absl::Status ParseMisc(const CommandLineFlags& f, GatewayConfig& c) {
  if (auto v = f.Get("host")) c.host = *v;
  if (c.host.empty()) return absl::InvalidArgumentError("--host is empty");
  ASSIGN_OR_RETURN(c.port, f.GetInt("port", c.port, 0, 65535));
  c.port_file = f.Get("port-file").value_or("");
  c.api_key_file = f.Get("api-key-file").value_or("");
  if (f.Get("api-key-file") && c.api_key_file.empty()) {
    return absl::InvalidArgumentError("--api-key-file is empty");
  }
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

absl::StatusOr<GatewayConfig> ParseGatewayFlags(const std::vector<std::string>& args) {
  CommandLineFlags flags(KnownFlags(), {"backend"}, {"backend-tls"});
  GatewayConfig c;
  RETURN_IF_ERROR(flags.Parse(args, c.help));
  if (c.help) return c;
  RETURN_IF_ERROR(ParseBackends(flags, c));
  RETURN_IF_ERROR(ParseLimits(flags, c));
  RETURN_IF_ERROR(ParseMisc(flags, c));
  RETURN_IF_ERROR(ParseHttps(flags, c.https));
  RETURN_IF_ERROR(ParseBackendTls(flags, c.backend_tls));
  return c;
}

}  // namespace funnel
