// The gateway's Prometheus metrics (text format 0.0.4), served on its own /metrics:
//   funnel_gateway:requests_total{route,status}            counter
//   funnel_gateway:request_duration_seconds{route}         histogram (to the end of the body,
//                                                          streams included)
//   funnel_gateway:time_to_first_token_seconds             histogram (streams: to the first token)
//   funnel_gateway:requests_in_flight                      gauge
//   funnel_gateway:stream_disconnects_total                counter (clients gone mid-stream)
//   funnel_gateway:upstream_retries_total                  counter (retried on another backend)
//   funnel_gateway:backend_up{backend}                     gauge (1 up, 0 down)
//   funnel_gateway:backend_outstanding_requests{backend}   gauge
// Routes are the fixed route patterns (e.g. "/v1/sessions/{id}"), or "other".
//
// Thread rules: every method is thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "server/gateway/backend_pool.h"
#include "server/metrics.h"

namespace funnel {

class GatewayMetrics {
 public:
  // `backends` is called on every scrape.
  explicit GatewayMetrics(std::function<std::vector<BackendSnapshot>()> backends);

  void BeginRequest() { in_flight_->Set(in_flight_count_.fetch_add(1) + 1); }
  void EndRequest(const std::string& route, int http_status, double seconds);
  void RecordTimeToFirstToken(double seconds) { ttft_->Observe(seconds); }
  void RecordStreamDisconnect() { disconnects_->Increment(); }
  void RecordRetry() { retries_->Increment(); }

  std::string Render() const;

 private:
  std::function<std::vector<BackendSnapshot>()> backends_;
  MetricsRegistry registry_;
  Gauge* in_flight_;
  std::atomic<int64_t> in_flight_count_{0};
  Histogram* ttft_;
  Counter* disconnects_;
  Counter* retries_;

  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, double> requests_;       // (route, status) → count
  std::map<std::string, std::unique_ptr<Histogram>> durations_;  // route → histogram
};

// The route label of a request path: the pattern it matched, or "other".
std::string RouteLabel(const std::string& path);

}  // namespace funnel
