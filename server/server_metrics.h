// The funnel:* metrics (DESIGN.md section 10): engine gauges and counters mirrored from
// Engine::Stats() at scrape time, request latency histograms and rejections observed by the
// service.
//
// Thread rules: thread-safe; RPC threads record, the admin HTTP thread renders.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "runtime/engine/engine.h"
#include "server/metrics.h"

namespace funnel {

class ServerMetrics {
 public:
  // `stats` is called on every scrape.
  explicit ServerMetrics(std::function<EngineStats()> stats);

  // A request refused before it streamed (validation, auth, queue full, draining); the reason
  // label is the status code in snake case ("resource_exhausted", "invalid_argument", ...).
  void RecordRejection(absl::StatusCode code);
  // A request that streamed to its end. `time_per_output_token_s` is absent with < 2 tokens.
  void RecordRequest(std::optional<double> time_to_first_token_s,
                     std::optional<double> time_per_output_token_s, double e2e_latency_s);

  std::string Render() const { return registry_.Render(); }

  static std::string ReasonLabel(absl::StatusCode code);

 private:
  void Collect();

  std::function<EngineStats()> stats_;
  MetricsRegistry registry_;
  Gauge* waiting_;
  Gauge* running_;
  Gauge* kv_usage_;
  Gauge* compression_ratio_;
  Gauge* sessions_;
  Histogram* ttft_;
  Histogram* tpot_;
  Histogram* e2e_;
  Counter* prompt_tokens_;
  Counter* generation_tokens_;
  Counter* preemptions_;
  LabeledCounter* rejections_;
};

}  // namespace funnel
