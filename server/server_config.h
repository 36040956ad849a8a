// funnel-server's configuration: every command-line flag, parsed and validated once into typed
// values (kServerUsage lists them). Nothing below main reads flags or the environment.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/engine/engine_config.h"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/exec/model_runner_factory.h"

namespace funnel {

struct ServerConfig {
  std::string model_path;          // GGUF file
  std::string host = "127.0.0.1";  // gRPC and admin listen address
  int32_t port = 50051;            // gRPC; 0 = ephemeral
  std::string port_file;           // when set: the bound gRPC port is written there
  int32_t admin_port = 8081;       // HTTP /health /ready /metrics; 0 = ephemeral; -1 = off
  std::string admin_port_file;
  Device device = Device::kCpu;  // compute backend (--device cpu|cuda)
  RunnerOptions runner;          // threads, block size, KV pool bytes
  EngineConfig engine;           // default KV policy, queue and batch limits, sessions
  std::string api_key_file;      // empty: open access
  // gRPC over TLS when tls_cert_file is set (PEM files; the admin HTTP port stays plaintext).
  // tls_client_ca_file set: clients must present a certificate signed by it (mutual TLS).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  std::string served_model_name;  // empty: the model's general.name
  std::string chat_template;      // empty: the model's own template
  absl::Duration shutdown_grace = absl::Seconds(10);
  std::string log_level = "info";
  bool help = false;  // --help: print kServerUsage and exit 0
};

extern const char kServerUsage[];

// Parses argv[1..] ("--name value" or "--name=value"). InvalidArgument naming the flag for
// unknown, repeated, missing or out-of-range flags and for invalid combinations.
absl::StatusOr<ServerConfig> ParseServerFlags(const std::vector<std::string>& args);

// "1073741824", "512M", "2G", "64k" (binary multiples) → bytes.
absl::StatusOr<int64_t> ParseByteSize(const std::string& text);

}  // namespace funnel
