// Per-HTTP-request state the routes share: the caller's API key (forwarded to the backends) and
// the metrics record written when the response has ended. A streamed response keeps the scope
// alive (shared_ptr) until its last byte.
//
// Thread rules: used by one request's threads in sequence (the handler, then the body writer).
#pragma once

#include <chrono>
#include <string>
#include <utility>

#include "server/gateway/gateway_metrics.h"

namespace funnel {

class RequestScope {
 public:
  RequestScope(GatewayMetrics* metrics, std::string route, std::string api_key)
      : metrics_(metrics),
        route_(std::move(route)),
        api_key_(std::move(api_key)),
        start_(std::chrono::steady_clock::now()) {
    if (metrics_ != nullptr) metrics_->BeginRequest();
  }
  ~RequestScope() {
    if (metrics_ != nullptr) metrics_->EndRequest(route_, status_, elapsed_seconds());
  }
  RequestScope(const RequestScope&) = delete;
  RequestScope& operator=(const RequestScope&) = delete;

  const std::string& api_key() const { return api_key_; }
  GatewayMetrics* metrics() const { return metrics_; }
  // The status recorded for the request (499: the client went away mid-stream).
  void set_status(int status) { status_ = status; }
  double elapsed_seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  GatewayMetrics* metrics_;
  std::string route_;
  std::string api_key_;
  std::chrono::steady_clock::time_point start_;
  int status_ = 200;
};

}  // namespace funnel
