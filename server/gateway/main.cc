// funnel-gateway: flags → GatewayConfig → API keys → backend pool (channels + health prober) →
// HTTP server → wait for SIGTERM/SIGINT → stop accepting, let streams finish → exit 0.
//
// Exit status: 0 after a clean shutdown, 1 when the port cannot be bound, 2 for bad flags
// (including an unusable --api-key-file and unreadable or invalid TLS files).
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/auth.h"
#include "server/gateway/backend_pool.h"
#include "server/gateway/gateway_config.h"
#include "server/gateway/gateway_metrics.h"
#include "server/gateway/gateway_server.h"
#include "server/gateway/gateway_tls.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

// The first key of a key file (the same lines ApiKeyAuth::FromFile reads); "" when none.
std::string FirstKey(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view key = absl::StripAsciiWhitespace(line);
    if (!key.empty() && key[0] != '#') return std::string(key);
  }
  return "";
}

const char* HttpScheme(const HttpsFiles& https) {
  if (!https.enabled()) return "HTTP";
  return https.client_ca_file.empty() ? "HTTPS" : "HTTPS with client certificates";
}

std::string HostPort(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos && host.front() != '[';
  return v6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

// Writes "PORT\n" atomically (temp file + rename), so a reader never sees a partial file.
bool WritePortFile(const std::string& path, int port) {
  if (path.empty()) return true;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.good()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

int BadStartup(const absl::Status& status) {
  std::fprintf(stderr, "funnel-gateway: %s\n", std::string(status.message()).c_str());
  return 2;
}

int Serve(const GatewayConfig& config, const sigset_t& signals) {
  absl::StatusOr<ApiKeyAuth> auth = ApiKeyAuth();
  if (!config.api_key_file.empty()) auth = ApiKeyAuth::FromFile(config.api_key_file);
  if (!auth.ok()) return BadStartup(auth.status());
  absl::StatusOr<std::optional<HttpsCredentials>> https = LoadHttpsCredentials(config.https);
  if (!https.ok()) return BadStartup(https.status());
  absl::StatusOr<std::optional<TlsOptions>> backend_tls = LoadBackendTls(config.backend_tls);
  if (!backend_tls.ok()) return BadStartup(backend_tls.status());
  BackendPool::Options pool_options;
  pool_options.tls = std::move(*backend_tls);
  pool_options.probe_interval = config.probe_interval;
  pool_options.max_backoff = config.max_probe_backoff;
  if (!config.api_key_file.empty()) pool_options.probe_api_key = FirstKey(config.api_key_file);
  BackendPool pool(config.backends, pool_options);
  GatewayMetrics metrics([&pool] { return pool.Snapshot(); });
  pool.StartProber();

  GatewayServerOptions options;
  options.host = config.host;
  options.port = config.port;
  options.max_body_bytes = config.max_body_bytes;
  options.http_threads = config.http_threads;
  options.max_choices = config.max_choices;
  options.request_timeout = config.request_timeout;
  options.https = std::move(*https);
  auto server = GatewayServer::Start(options, &pool, &*auth, &metrics);
  if (!server.ok()) {
    if (absl::IsInvalidArgument(server.status())) return BadStartup(server.status());
    spdlog::critical("{}", server.status().ToString());
    return 1;
  }
  if (!WritePortFile(config.port_file, (*server)->port())) {
    spdlog::critical("cannot write {}", config.port_file);
    return 1;
  }
  std::fprintf(stderr, "listening on %s\n", HostPort(config.host, (*server)->port()).c_str());
  spdlog::info("serving the OpenAI API over {} for {} backend(s) ({}): {}; auth {}",
               HttpScheme(config.https), config.backends.size(),
               config.backend_tls.enabled ? "gRPC over TLS" : "plaintext gRPC",
               absl::StrJoin(config.backends, ", "), auth->enabled() ? "on" : "off");

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}: stopping (streams in progress finish first)",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Stop();
  pool.StopProber();
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace funnel

int main(int argc, char** argv) {
  // Block the shutdown signals in every thread (threads inherit the mask); main takes them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client gone mid-stream is a failed write, not a crash

  spdlog::set_default_logger(spdlog::stderr_color_mt("funnel-gateway"));
  std::vector<std::string> args(argv + 1, argv + argc);
  auto config = funnel::ParseGatewayFlags(args);
  if (!config.ok()) {
    std::fprintf(stderr, "funnel-gateway: %s\n(see funnel-gateway --help)\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
  if (config->help) {
    std::fputs(funnel::kGatewayUsage, stdout);
    return 0;
  }
  spdlog::set_level(spdlog::level::from_str(config->log_level));
  return funnel::Serve(*config, signals);
}
