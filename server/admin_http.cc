#include "server/admin_http.h"

#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace funnel {

struct AdminHttpServer::Impl {
  httplib::Server server;
  AdminHandlers handlers;
};

AdminHttpServer::AdminHttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AdminHttpServer::~AdminHttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<AdminHttpServer>> AdminHttpServer::Start(const std::string& host,
                                                                        int port,
                                                                        AdminHandlers handlers) {
  auto impl = std::make_unique<Impl>();
  impl->handlers = std::move(handlers);
  Impl* p = impl.get();
  p->server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  p->server.Get("/ready", [p](const httplib::Request&, httplib::Response& res) {
    const bool ready = p->handlers.ready && p->handlers.ready();
    res.status = ready ? 200 : 503;
    res.set_content(ready ? "ready\n" : "not ready\n", "text/plain");
  });
  p->server.Get("/metrics", [p](const httplib::Request&, httplib::Response& res) {
    res.set_content(p->handlers.metrics ? p->handlers.metrics() : std::string(),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  int bound = -1;
  if (port == 0) {
    bound = p->server.bind_to_any_port(host);
  } else if (p->server.bind_to_port(host, port)) {
    bound = port;
  }
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("admin HTTP: cannot listen on ", host, ":", port));
  }
  std::unique_ptr<AdminHttpServer> server(new AdminHttpServer(std::move(impl)));
  server->port_ = bound;
  server->thread_ = std::thread([p] { p->server.listen_after_bind(); });
  // cpp-httplib 0.11 has no wait_until_ready(): poll is_running (bounded).
  for (int i = 0; i < 2000 && !p->server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return server;
}

void AdminHttpServer::Stop() {
  if (impl_ == nullptr) return;
  impl_->server.stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace funnel
