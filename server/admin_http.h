// The admin HTTP listener (cpp-httplib): GET /health (200 while the process serves), /ready
// (200 when ready() is true, else 503) and /metrics (Prometheus text from metrics()).
//
// Thread rules: Start/Stop from the main thread; the handlers run on httplib's worker threads
// and must be thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace funnel {

struct AdminHandlers {
  std::function<bool()> ready;
  std::function<std::string()> metrics;
};

class AdminHttpServer {
 public:
  // Binds host:port (0 = ephemeral) and starts serving on a thread of its own. Unavailable when
  // the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<AdminHttpServer>> Start(const std::string& host, int port,
                                                                AdminHandlers handlers);
  ~AdminHttpServer();  // Stop()

  int port() const { return port_; }
  void Stop();

 private:
  struct Impl;
  explicit AdminHttpServer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace funnel
