#include "server/server_metrics.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace funnel {

ServerMetrics::ServerMetrics(std::function<EngineStats()> stats) : stats_(std::move(stats)) {
  MetricsRegistry& r = registry_;
  waiting_ = r.AddGauge("funnel:num_requests_waiting", "Requests queued, not yet running.");
  running_ = r.AddGauge("funnel:num_requests_running", "Requests running on the engine.");
  kv_usage_ = r.AddGauge("funnel:kv_cache_usage_perc",
                         "Fraction of KV pool blocks in use (1 = full), sessions included.");
  compression_ratio_ =
      r.AddGauge("funnel:kv_cache_compression_ratio",
                 "Stored / uncompressed KV entries over running requests and sessions (1 = none).");
  sessions_ = r.AddGauge("funnel:num_sessions", "Live compressed-cache sessions.");
  ttft_ = r.AddHistogram("funnel:time_to_first_token_seconds",
                         "Time from receiving a request to its first token.",
                         {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                          2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0});
  tpot_ = r.AddHistogram("funnel:time_per_output_token_seconds",
                         "Mean time between output tokens of a request.",
                         {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                          0.3, 0.4, 0.5, 0.75, 1.0, 2.5});
  e2e_ = r.AddHistogram("funnel:e2e_request_latency_seconds",
                        "Time from receiving a request to its final message.",
                        {0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                         30.0, 40.0, 50.0, 60.0, 120.0});
  prompt_tokens_ = r.AddCounter("funnel:prompt_tokens_total", "Prompt tokens prefilled.");
  generation_tokens_ = r.AddCounter("funnel:generation_tokens_total", "Tokens generated.");
  preemptions_ = r.AddCounter("funnel:num_preemptions_total",
                              "Preempted requests (0 under reserve-at-admission).");
  rejections_ = r.AddLabeledCounter("funnel:request_rejections_total",
                                    "Requests refused before streaming, by reason.", "reason");
  for (absl::StatusCode code :
       {absl::StatusCode::kResourceExhausted, absl::StatusCode::kInvalidArgument,
        absl::StatusCode::kUnauthenticated, absl::StatusCode::kUnavailable}) {
    rejections_->With(ReasonLabel(code));  // present at 0 from the start
  }
  r.AddCollector([this] { Collect(); });
}

void ServerMetrics::Collect() {
  const EngineStats s = stats_();
  waiting_->Set(static_cast<double>(s.num_waiting));
  running_->Set(static_cast<double>(s.num_running));
  kv_usage_->Set(s.blocks_total > 0
                     ? static_cast<double>(s.blocks_used) / static_cast<double>(s.blocks_total)
                     : 0.0);
  compression_ratio_->Set(s.compression_ratio);
  sessions_->Set(static_cast<double>(s.num_sessions));
  prompt_tokens_->SetTotal(static_cast<double>(s.prompt_tokens_total));
  generation_tokens_->SetTotal(static_cast<double>(s.generation_tokens_total));
  preemptions_->SetTotal(static_cast<double>(s.preemptions_total));
}

void ServerMetrics::RecordRejection(absl::StatusCode code) {
  rejections_->With(ReasonLabel(code)).Increment();
}

void ServerMetrics::RecordRequest(std::optional<double> time_to_first_token_s,
                                  std::optional<double> time_per_output_token_s,
                                  double e2e_latency_s) {
  if (time_to_first_token_s) ttft_->Observe(*time_to_first_token_s);
  if (time_per_output_token_s) tpot_->Observe(*time_per_output_token_s);
  e2e_->Observe(e2e_latency_s);
}

std::string ServerMetrics::ReasonLabel(absl::StatusCode code) {
  // "RESOURCE_EXHAUSTED" → "resource_exhausted".
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

}  // namespace funnel
