// The gateway's HTTP listener (cpp-httplib): registers the routes, authenticates callers, limits
// request bodies, and answers every failure in OpenAI's error shape.
//
// Transport: plain HTTP, or HTTPS when the options carry credentials (every route below, /health
// and /metrics included, is served on that one listener).
//
// Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /v1/models/{id},
// POST|GET /v1/sessions, GET|DELETE /v1/sessions/{id} (all behind the API key when the gateway
// has keys), GET /health (200 while some backend is up, else 503) and GET /metrics (open).
// Unknown paths: 404; bodies over max_body_bytes: 413; anything the HTTP layer refuses gets an
// OpenAI error body too.
//
// Auth: with keys, "Authorization: Bearer <key>" must name one of them (else 401). The caller's
// key is forwarded to the backends either way, so their sessions stay per key.
//
// Thread rules: Start/Stop from one thread; handlers run on the HTTP worker threads. The pool,
// auth and metrics must outlive the server.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/gateway/backend_pool.h"
#include "server/gateway/gateway_metrics.h"
#include "server/gateway/gateway_tls.h"

namespace funnel {

struct GatewayServerOptions {
  std::string host = "127.0.0.1";
  int32_t port = 0;  // 0: ephemeral
  int64_t max_body_bytes = 8 << 20;
  int32_t http_threads = 64;
  int32_t max_choices = 16;
  absl::Duration request_timeout = absl::InfiniteDuration();
  std::optional<HttpsCredentials> https;  // set: HTTPS (optionally mutual TLS); else plain HTTP
};

// The key of an "Authorization: Bearer <key>" value ("bearer" in any case, spaces trimmed);
// nullopt when the value has another shape or the key is not printable ASCII.
std::optional<std::string> BearerToken(const std::string& authorization);

class GatewayServer {
 public:
  // Binds and starts serving on threads of its own. UNAVAILABLE when the port cannot be bound;
  // INVALID_ARGUMENT when OpenSSL refuses the HTTPS credentials.
  static absl::StatusOr<std::unique_ptr<GatewayServer>> Start(const GatewayServerOptions& options,
                                                              BackendPool* pool,
                                                              const ApiKeyAuth* auth,
                                                              GatewayMetrics* metrics);
  ~GatewayServer();  // Stop()

  int port() const { return port_; }
  // Stops accepting; returns once the requests in progress (streams included) have ended.
  void Stop();

 private:
  struct Impl;
  explicit GatewayServer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace funnel
