#include "server/gateway/gateway_metrics.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace funnel {
namespace {

const std::vector<double>& LatencyBounds() {
  static const auto* bounds = new std::vector<double>{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  return *bounds;
}

void AppendHeader(std::string& out, const char* name, const char* help, const char* type) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void AppendHistogram(std::string& out, const std::string& name, const std::string& labels,
                     const Histogram& h) {
  const Histogram::Snapshot s = h.Read();
  for (size_t i = 0; i < s.bounds.size(); ++i) {
    absl::StrAppend(&out, name, "_bucket{", labels, ",le=\"", FormatMetricValue(s.bounds[i]),
                    "\"} ", s.cumulative[i], "\n");
  }
  absl::StrAppend(&out, name, "_bucket{", labels, ",le=\"+Inf\"} ", s.cumulative.back(), "\n");
  absl::StrAppend(&out, name, "_sum{", labels, "} ", FormatMetricValue(s.sum), "\n");
  absl::StrAppend(&out, name, "_count{", labels, "} ", s.count, "\n");
}

}  // namespace

std::string RouteLabel(const std::string& path) {
  static const char* const kExact[] = {"/v1/completions", "/v1/chat/completions",
                                       "/v1/models",      "/v1/sessions",
                                       "/health",         "/metrics"};
  for (const char* route : kExact) {
    if (path == route) return route;
  }
  if (absl::StartsWith(path, "/v1/sessions/")) return "/v1/sessions/{id}";
  if (absl::StartsWith(path, "/v1/models/")) return "/v1/models/{id}";
  return "other";
}

GatewayMetrics::GatewayMetrics(std::function<std::vector<BackendSnapshot>()> backends)
    : backends_(std::move(backends)) {
  in_flight_ = registry_.AddGauge("funnel_gateway:requests_in_flight",
                                  "HTTP requests being served (streams until their last byte)");
  ttft_ = registry_.AddHistogram("funnel_gateway:time_to_first_token_seconds",
                                 "Streaming requests: time from arrival to the first token",
                                 LatencyBounds());
  disconnects_ = registry_.AddCounter("funnel_gateway:stream_disconnects_total",
                                      "Streams whose client went away before the end (upstream "
                                      "generation cancelled)");
  retries_ = registry_.AddCounter("funnel_gateway:upstream_retries_total",
                                  "Generations retried on another backend after UNAVAILABLE");
}

void GatewayMetrics::EndRequest(const std::string& route, int http_status, double seconds) {
  in_flight_->Set(in_flight_count_.fetch_sub(1) - 1);
  std::lock_guard<std::mutex> lock(mu_);
  requests_[{route, http_status}] += 1;
  std::unique_ptr<Histogram>& h = durations_[route];
  if (h == nullptr) h = std::make_unique<Histogram>(LatencyBounds());
  h->Observe(seconds);
}

std::string GatewayMetrics::Render() const {
  std::string out = registry_.Render();
  {
    std::lock_guard<std::mutex> lock(mu_);
    AppendHeader(out, "funnel_gateway:requests_total", "HTTP requests by route and status",
                 "counter");
    for (const auto& [key, count] : requests_) {
      absl::StrAppend(&out, "funnel_gateway:requests_total{route=\"", EscapeLabelValue(key.first),
                      "\",status=\"", key.second, "\"} ", FormatMetricValue(count), "\n");
    }
    AppendHeader(out, "funnel_gateway:request_duration_seconds",
                 "HTTP request latency by route, to the last byte of the body", "histogram");
    for (const auto& [route, h] : durations_) {
      AppendHistogram(out, "funnel_gateway:request_duration_seconds",
                      absl::StrCat("route=\"", EscapeLabelValue(route), "\""), *h);
    }
  }
  const std::vector<BackendSnapshot> backends =
      backends_ ? backends_() : std::vector<BackendSnapshot>();
  AppendHeader(out, "funnel_gateway:backend_up", "1 when the backend answers its health probe",
               "gauge");
  for (const BackendSnapshot& b : backends) {
    absl::StrAppend(&out, "funnel_gateway:backend_up{backend=\"", EscapeLabelValue(b.address),
                    "\"} ", b.up ? 1 : 0, "\n");
  }
  AppendHeader(out, "funnel_gateway:backend_outstanding_requests",
               "Requests the gateway has in flight on the backend", "gauge");
  for (const BackendSnapshot& b : backends) {
    absl::StrAppend(&out, "funnel_gateway:backend_outstanding_requests{backend=\"",
                    EscapeLabelValue(b.address), "\"} ", b.outstanding, "\n");
  }
  return out;
}

}  // namespace funnel
