#include "server/gateway/gateway_server.h"

#include <chrono>
#include <functional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "server/gateway/completion_route.h"
#include "server/gateway/http_reply.h"
#include "server/gateway/openai_response.h"
#include "server/gateway/request_scope.h"
#include "server/gateway/resource_routes.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

// Connections are reused for many requests (OpenAI clients keep them alive).
constexpr size_t kKeepAliveMaxCount = 10000;
constexpr time_t kKeepAliveTimeoutS = 5;

bool PrintableAscii(const std::string& s) {
  for (char c : s) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return !s.empty();
}

}  // namespace

std::optional<std::string> BearerToken(const std::string& authorization) {
  absl::string_view value = absl::StripAsciiWhitespace(authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() || !absl::StartsWithIgnoreCase(value, kScheme)) {
    return std::nullopt;
  }
  std::string key(absl::StripAsciiWhitespace(value.substr(kScheme.size())));
  if (!PrintableAscii(key)) return std::nullopt;
  return key;
}

struct GatewayServer::Impl {
  Impl(const GatewayServerOptions& options, BackendPool* pool, const ApiKeyAuth* auth,
       GatewayMetrics* metrics)
      : options(options),
        pool(pool),
        auth(auth),
        metrics(metrics),
        completions(pool, {.max_choices = options.max_choices, .timeout = options.request_timeout}),
        resources(pool) {}

  // The caller's key to forward ("" for none); UNAUTHENTICATED when keys are required and the
  // header does not name one.
  absl::StatusOr<std::string> Authorize(const httplib::Request& req) const;
  // Wraps an authenticated route: metrics scope, auth, then `handle`.
  httplib::Server::Handler Route(std::string route,
                                 std::function<void(const httplib::Request&, httplib::Response&,
                                                    std::shared_ptr<RequestScope>)>
                                     handle);
  void Register();
  void Health(httplib::Response& res) const;
  httplib::Server::HandlerResponse OnError(const httplib::Request& req, httplib::Response& res);

  const GatewayServerOptions options;
  BackendPool* pool;
  const ApiKeyAuth* auth;
  GatewayMetrics* metrics;
  CompletionRoute completions;
  ResourceRoutes resources;
  std::unique_ptr<httplib::Server> server;  // an httplib::SSLServer for HTTPS
};

absl::StatusOr<std::string> GatewayServer::Impl::Authorize(const httplib::Request& req) const {
  const bool present = req.has_header("Authorization");
  const std::string header = present ? req.get_header_value("Authorization") : std::string();
  if (auth->enabled()) {
    absl::StatusOr<std::string> owner = auth->Authenticate(present ? &header : nullptr);
    if (!owner.ok()) {
      return absl::UnauthenticatedError(
          absl::StrCat(owner.status().message(),
                       " (send the header 'Authorization: Bearer <key>' with a valid key)"));
    }
  }
  if (!present) return std::string();
  std::optional<std::string> key = BearerToken(header);
  if (!key) {
    return absl::UnauthenticatedError(
        "the Authorization header must be 'Bearer <key>' with a printable ASCII key");
  }
  return *key;
}

httplib::Server::Handler GatewayServer::Impl::Route(
    std::string route,
    std::function<void(const httplib::Request&, httplib::Response&, std::shared_ptr<RequestScope>)>
        handle) {
  return [this, route = std::move(route), handle = std::move(handle)](const httplib::Request& req,
                                                                      httplib::Response& res) {
    absl::StatusOr<std::string> key = Authorize(req);
    auto scope = std::make_shared<RequestScope>(metrics, route, key.ok() ? *key : std::string());
    if (!key.ok()) return ReplyStatus(res, key.status(), scope.get());
    handle(req, res, std::move(scope));
  };
}

void GatewayServer::Impl::Health(httplib::Response& res) const {
  int up = 0;
  Json backends = Json::array();
  for (const BackendSnapshot& b : pool->Snapshot()) {
    up += b.up ? 1 : 0;
    backends.push_back({{"address", b.address},
                        {"up", b.up},
                        {"replica_id", b.replica_id},
                        {"model", b.model},
                        {"outstanding_requests", b.outstanding}});
  }
  const bool ok = up > 0;
  ReplyJson(res, ok ? 200 : 503,
            {{"status", ok ? "ok" : "unavailable"}, {"backends_up", up}, {"backends", backends}},
            nullptr);
}

httplib::Server::HandlerResponse GatewayServer::Impl::OnError(const httplib::Request& req,
                                                              httplib::Response& res) {
  if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // a route's own
  std::string message;
  if (res.status == 404) {
    message = absl::StrCat("no route for ", req.method, " ", req.path);
  } else if (res.status == 413) {
    message = absl::StrCat("the request body is larger than ", options.max_body_bytes, " bytes");
  } else {
    message = absl::StrCat("the HTTP request was refused (", res.status, ")");
  }
  RequestScope scope(metrics, RouteLabel(req.path), "");
  ReplyError(res, MakeApiError(res.status, std::move(message)), &scope);
  return httplib::Server::HandlerResponse::Handled;
}

void GatewayServer::Impl::Register() {
  using Req = const httplib::Request&;
  using Res = httplib::Response&;
  using Scope = std::shared_ptr<RequestScope>;
  server->Post("/v1/completions", Route("/v1/completions", [this](Req req, Res res, Scope s) {
                 completions.Handle(Endpoint::kCompletions, req, res, std::move(s));
               }));
  server->Post("/v1/chat/completions",
               Route("/v1/chat/completions", [this](Req req, Res res, Scope s) {
                 completions.Handle(Endpoint::kChatCompletions, req, res, std::move(s));
               }));
  server->Get("/v1/models", Route("/v1/models", [this](Req, Res res, Scope s) {
                resources.ListModels(res, *s);
              }));
  server->Get("/v1/models/(.+)", Route("/v1/models/{id}", [this](Req req, Res res, Scope s) {
                resources.GetModel(req.matches[1].str(), res, *s);
              }));
  server->Post("/v1/sessions", Route("/v1/sessions", [this](Req req, Res res, Scope s) {
                 resources.CreateSession(req, res, *s);
               }));
  server->Get("/v1/sessions", Route("/v1/sessions", [this](Req, Res res, Scope s) {
                resources.ListSessions(res, *s);
              }));
  server->Get("/v1/sessions/([^/]+)", Route("/v1/sessions/{id}", [this](Req req, Res res, Scope s) {
                resources.GetSession(req.matches[1].str(), res, *s);
              }));
  server->Delete("/v1/sessions/([^/]+)",
                 Route("/v1/sessions/{id}", [this](Req req, Res res, Scope s) {
                   resources.DeleteSession(req.matches[1].str(), res, *s);
                 }));
  server->Get("/health", [this](Req, Res res) {
    RequestScope scope(metrics, "/health", "");
    Health(res);
    scope.set_status(res.status);
  });
  server->Get("/metrics", [this](Req, Res res) {
    res.set_content(metrics != nullptr ? metrics->Render() : std::string(),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  server->set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) { return OnError(req, res); }));
  server->set_exception_handler(
      [this](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
        spdlog::error("{} {}: unexpected exception in a handler", req.method, req.path);
        RequestScope scope(metrics, RouteLabel(req.path), "");
        ReplyError(res, MakeApiError(500, "internal error"), &scope);
      });
}

GatewayServer::GatewayServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GatewayServer::~GatewayServer() { Stop(); }

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Start(
    const GatewayServerOptions& options, BackendPool* pool, const ApiKeyAuth* auth,
    GatewayMetrics* metrics) {
  auto impl = std::make_unique<Impl>(options, pool, auth, metrics);
  Impl* p = impl.get();
  absl::StatusOr<std::unique_ptr<httplib::Server>> http = MakeHttpServer(options.https);
  if (!http.ok()) return http.status();
  p->server = std::move(*http);
  p->Register();
  const size_t threads = static_cast<size_t>(options.http_threads);
  p->server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  p->server->set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  p->server->set_tcp_nodelay(true);  // SSE chunks are small: no Nagle delay
  p->server->set_keep_alive_max_count(kKeepAliveMaxCount);
  p->server->set_keep_alive_timeout(kKeepAliveTimeoutS);
  int bound = -1;
  if (options.port == 0) {
    bound = p->server->bind_to_any_port(options.host);
  } else if (p->server->bind_to_port(options.host, options.port)) {
    bound = options.port;
  }
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.host, ":", options.port));
  }
  std::unique_ptr<GatewayServer> server(new GatewayServer(std::move(impl)));
  server->port_ = bound;
  server->thread_ = std::thread([p] { p->server->listen_after_bind(); });
  // cpp-httplib 0.11 has no wait_until_ready(): poll is_running (bounded).
  for (int i = 0; i < 2000 && !p->server->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return server;
}

void GatewayServer::Stop() {
  if (impl_ == nullptr) return;
  impl_->server->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace funnel
