// funnel-gateway's configuration: every command-line flag, parsed and validated once into typed
// values (kGatewayUsage lists them). Nothing below main reads flags or the environment.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace funnel {

// HTTPS on the gateway's listener (every route, /health and /metrics included). PEM files;
// empty cert_file: plain HTTP.
struct HttpsFiles {
  std::string cert_file;       // certificate chain, leaf first (needs key_file)
  std::string key_file;        // the leaf's private key (unencrypted)
  std::string client_ca_file;  // set: clients must present a certificate it signed (mutual TLS)

  bool enabled() const { return !cert_file.empty(); }
};

// TLS on the gRPC channels to every backend. PEM files; empty ones take gRPC's defaults.
struct BackendTlsFiles {
  bool enabled = false;     // false: plaintext (then every other field is empty)
  std::string ca_file;      // roots that sign the servers' certificates; empty: system roots
  std::string cert_file;    // with key_file: the gateway's client certificate (mutual TLS)
  std::string key_file;     // its private key (unencrypted)
  std::string server_name;  // the name the servers' certificates must hold, when not the host
};

struct GatewayConfig {
  std::vector<std::string> backends;  // funnel-server gRPC addresses ("host:port"), at least one
  std::string host = "127.0.0.1";     // HTTP listen address
  int32_t port = 8080;                // 0 = ephemeral
  std::string port_file;              // when set: the bound HTTP port is written there
  std::string api_key_file;           // empty: open access (keys are still forwarded)
  int64_t max_body_bytes = 8 << 20;   // larger request bodies: 413
  int32_t http_threads = 64;          // requests served at once (a stream holds one)
  int32_t max_choices = 16;           // n x prompts of one request
  absl::Duration request_timeout = absl::InfiniteDuration();  // per Generate; then 504
  absl::Duration probe_interval = absl::Seconds(2);           // health probe of an up backend
  absl::Duration max_probe_backoff = absl::Seconds(10);       // longest wait between probes of a
                                                              // down backend
  HttpsFiles https;
  BackendTlsFiles backend_tls;
  std::string log_level = "info";
  bool help = false;  // --help: print kGatewayUsage and exit 0
};

extern const char kGatewayUsage[];

// Parses argv[1..] ("--name value" or "--name=value"; --backend may repeat and also takes a comma
// list). InvalidArgument naming the flag for unknown, repeated, missing or out-of-range flags and
// for invalid combinations (the TLS files are only named here; gateway_tls.h reads them).
absl::StatusOr<GatewayConfig> ParseGatewayFlags(const std::vector<std::string>& args);

}  // namespace funnel
