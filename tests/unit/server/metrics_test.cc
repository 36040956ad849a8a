// Prometheus text exposition (format 0.0.4) of the metrics registry and of the funnel:* server
// metrics, checked against hand-written expected text.
#include "server/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "server/server_metrics.h"

namespace funnel {
namespace {

TEST(ServerMetricsRegistryTest, RendersEveryKindInRegistrationOrder) {
  MetricsRegistry r;
  Counter* c = r.AddCounter("a_total", "A things.");
  Gauge* g = r.AddGauge("g", "A gauge.");
  LabeledCounter* rej = r.AddLabeledCounter("rej_total", "Rejections.", "reason");
  Histogram* h = r.AddHistogram("h_seconds", "Latency.", {0.125, 0.5, 1.0});
  c->Increment(3);
  c->Increment(0.5);
  g->Set(-2.25);
  rej->With("b").Increment(2);
  rej->With("a\"x\\y\nz").Increment();
  for (double v : {0.0625, 0.125, 0.25, 2.0, 8.0}) h->Observe(v);  // 0.125 is on a bound
  const std::string expected =
      "# HELP a_total A things.\n"
      "# TYPE a_total counter\n"
      "a_total 3.5\n"
      "# HELP g A gauge.\n"
      "# TYPE g gauge\n"
      "g -2.25\n"
      "# HELP rej_total Rejections.\n"
      "# TYPE rej_total counter\n"
      "rej_total{reason=\"a\\\"x\\\\y\\nz\"} 1\n"
      "rej_total{reason=\"b\"} 2\n"
      "# HELP h_seconds Latency.\n"
      "# TYPE h_seconds histogram\n"
      "h_seconds_bucket{le=\"0.125\"} 2\n"
      "h_seconds_bucket{le=\"0.5\"} 3\n"
      "h_seconds_bucket{le=\"1\"} 3\n"
      "h_seconds_bucket{le=\"+Inf\"} 5\n"
      "h_seconds_sum 10.4375\n"
      "h_seconds_count 5\n";
  EXPECT_EQ(r.Render(), expected);
}

TEST(ServerMetricsRegistryTest, FreshMetricsRenderZeros) {
  MetricsRegistry r;
  r.AddCounter("c_total", "C.");
  r.AddLabeledCounter("l_total", "L.", "kind");  // no children yet: no samples
  r.AddHistogram("h", "H.", {1.0, 10.0});
  EXPECT_EQ(r.Render(),
            "# HELP c_total C.\n"
            "# TYPE c_total counter\n"
            "c_total 0\n"
            "# HELP l_total L.\n"
            "# TYPE l_total counter\n"
            "# HELP h H.\n"
            "# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 0\n"
            "h_bucket{le=\"10\"} 0\n"
            "h_bucket{le=\"+Inf\"} 0\n"
            "h_sum 0\n"
            "h_count 0\n");
}

TEST(ServerMetricsRegistryTest, HelpTextIsEscaped) {
  MetricsRegistry r;
  r.AddGauge("g", "back\\slash and\nnewline \"quotes\" stay");
  EXPECT_EQ(r.Render(),
            "# HELP g back\\\\slash and\\nnewline \"quotes\" stay\n"
            "# TYPE g gauge\n"
            "g 0\n");
}

TEST(ServerMetricsRegistryTest, CollectorsRunBeforeEveryRender) {
  MetricsRegistry r;
  Gauge* g = r.AddGauge("g", "G.");
  int calls = 0;
  r.AddCollector([&] { g->Set(++calls * 10); });
  EXPECT_EQ(r.Render(), "# HELP g G.\n# TYPE g gauge\ng 10\n");
  EXPECT_EQ(r.Render(), "# HELP g G.\n# TYPE g gauge\ng 20\n");
}

TEST(ServerMetricsRegistryTest, CountersNeverGoDown) {
  Counter c;
  c.Increment(2);
  c.Increment(-1);
  c.Increment(std::nan(""));
  EXPECT_EQ(c.value(), 2);
  c.SetTotal(40);  // a mirrored total
  EXPECT_EQ(c.value(), 40);
}

TEST(ServerMetricsRegistryTest, HistogramBucketsAreCumulativeAndInclusive) {
  Histogram h({1, 2, 4});
  for (double v : {-3.0, 1.0, 1.5, 2.0, 4.0, 4.5, std::nan("")}) h.Observe(v);
  const Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.bounds, (std::vector<double>{1, 2, 4}));
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 4, 5, 6}));  // NaN is dropped
  EXPECT_EQ(s.count, 6u);
  EXPECT_EQ(s.sum, -3.0 + 1.0 + 1.5 + 2.0 + 4.0 + 4.5);
  h.Observe(std::numeric_limits<double>::infinity());
  EXPECT_EQ(h.Read().cumulative.back(), 7u);
  EXPECT_EQ(h.Read().cumulative[2], 5u);
}

TEST(ServerMetricsRegistryTest, ConcurrentUpdatesAreAllCounted) {
  MetricsRegistry r;
  Counter* c = r.AddCounter("c_total", "C.");
  LabeledCounter* l = r.AddLabeledCounter("l_total", "L.", "t");
  Histogram* h = r.AddHistogram("h", "H.", {0.5});
  constexpr int kThreads = 4;
  constexpr int kEach = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        c->Increment();
        l->With(t % 2 == 0 ? "even" : "odd").Increment();
        h->Observe(i % 2 == 0 ? 0.25 : 1.0);
        if (i % 100 == 0) r.Render();  // rendering concurrently with updates is allowed
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->value(), kThreads * kEach);
  EXPECT_EQ(l->Snapshot(), (std::vector<std::pair<std::string, double>>{
                               {"even", kThreads / 2 * kEach}, {"odd", kThreads / 2 * kEach}}));
  const Histogram::Snapshot s = h->Read();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{kThreads * kEach / 2, kThreads * kEach}));
  EXPECT_EQ(s.sum, kThreads * kEach / 2 * (0.25 + 1.0));
}

TEST(ServerMetricsRegistryTest, SampleValues) {
  // Expected strings: Python's repr (the shortest round-trip form) with C's exponent style.
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(-0.0), "0");
  EXPECT_EQ(FormatMetricValue(42), "42");
  EXPECT_EQ(FormatMetricValue(-7), "-7");
  EXPECT_EQ(FormatMetricValue(1e15), "1000000000000000");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(0.005), "0.005");
  EXPECT_EQ(FormatMetricValue(2.5e-7), "2.5e-07");
  EXPECT_EQ(FormatMetricValue(1.0 / 3.0), "0.3333333333333333");
  EXPECT_EQ(FormatMetricValue(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(FormatMetricValue(1e300), "1e+300");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
}

TEST(ServerMetricsRegistryTest, LabelValueEscaping) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(EscapeLabelValue("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(EscapeLabelValue("two\nlines"), "two\\nlines");
  EXPECT_EQ(EscapeLabelValue("tab\tstays"), "tab\tstays");
}

// Lines of `text` that start with `prefix` (samples of one metric family).
std::vector<std::string> Lines(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
    start = end + 1;
  }
  return out;
}

TEST(ServerMetricsTest, EngineStatsAreMirroredAtScrapeTime) {
  EngineStats stats;
  ServerMetrics m([&stats] { return stats; });
  stats.num_waiting = 3;
  stats.num_running = 5;
  stats.num_sessions = 2;
  stats.blocks_total = 200;
  stats.blocks_used = 50;
  stats.compression_ratio = 0.5;
  stats.prompt_tokens_total = 1234;
  stats.generation_tokens_total = 99;
  stats.preemptions_total = 0;
  const std::string text = m.Render();
  EXPECT_EQ(Lines(text, "funnel:num_requests_waiting "),
            std::vector<std::string>{"funnel:num_requests_waiting 3"});
  EXPECT_EQ(Lines(text, "funnel:num_requests_running "),
            std::vector<std::string>{"funnel:num_requests_running 5"});
  EXPECT_EQ(Lines(text, "funnel:kv_cache_usage_perc "),
            std::vector<std::string>{"funnel:kv_cache_usage_perc 0.25"});
  EXPECT_EQ(Lines(text, "funnel:kv_cache_compression_ratio "),
            std::vector<std::string>{"funnel:kv_cache_compression_ratio 0.5"});
  EXPECT_EQ(Lines(text, "funnel:num_sessions "), std::vector<std::string>{"funnel:num_sessions 2"});
  EXPECT_EQ(Lines(text, "funnel:prompt_tokens_total "),
            std::vector<std::string>{"funnel:prompt_tokens_total 1234"});
  EXPECT_EQ(Lines(text, "funnel:generation_tokens_total "),
            std::vector<std::string>{"funnel:generation_tokens_total 99"});
  EXPECT_EQ(Lines(text, "funnel:num_preemptions_total "),
            std::vector<std::string>{"funnel:num_preemptions_total 0"});
  stats.blocks_used = 0;
  stats.blocks_total = 0;  // no pool: usage reads 0, not NaN
  EXPECT_EQ(Lines(m.Render(), "funnel:kv_cache_usage_perc "),
            std::vector<std::string>{"funnel:kv_cache_usage_perc 0"});
}

TEST(ServerMetricsTest, RejectionsByReasonStartAtZero) {
  ServerMetrics m([] { return EngineStats{}; });
  EXPECT_EQ(
      Lines(m.Render(), "funnel:request_rejections_total{"),
      (std::vector<std::string>{"funnel:request_rejections_total{reason=\"invalid_argument\"} 0",
                                "funnel:request_rejections_total{reason=\"resource_exhausted\"} 0",
                                "funnel:request_rejections_total{reason=\"unauthenticated\"} 0",
                                "funnel:request_rejections_total{reason=\"unavailable\"} 0"}));
  m.RecordRejection(absl::StatusCode::kResourceExhausted);
  m.RecordRejection(absl::StatusCode::kResourceExhausted);
  m.RecordRejection(absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(
      Lines(m.Render(), "funnel:request_rejections_total{"),
      (std::vector<std::string>{"funnel:request_rejections_total{reason=\"already_exists\"} 1",
                                "funnel:request_rejections_total{reason=\"invalid_argument\"} 0",
                                "funnel:request_rejections_total{reason=\"resource_exhausted\"} 2",
                                "funnel:request_rejections_total{reason=\"unauthenticated\"} 0",
                                "funnel:request_rejections_total{reason=\"unavailable\"} 0"}));
  EXPECT_EQ(ServerMetrics::ReasonLabel(absl::StatusCode::kDeadlineExceeded), "deadline_exceeded");
}

TEST(ServerMetricsTest, RequestLatenciesGoToTheirHistograms) {
  ServerMetrics m([] { return EngineStats{}; });
  m.RecordRequest(0.03, 0.002, 0.2);
  m.RecordRequest(std::nullopt, std::nullopt, 12.0);  // no token: only end-to-end
  const std::string text = m.Render();
  EXPECT_EQ(Lines(text, "funnel:time_to_first_token_seconds_count "),
            std::vector<std::string>{"funnel:time_to_first_token_seconds_count 1"});
  EXPECT_EQ(Lines(text, "funnel:time_to_first_token_seconds_sum "),
            std::vector<std::string>{"funnel:time_to_first_token_seconds_sum 0.03"});
  // TTFT buckets: ..., 0.02, 0.04, ...: 0.03 first counts at le="0.04".
  EXPECT_EQ(Lines(text, "funnel:time_to_first_token_seconds_bucket{le=\"0.02\"}"),
            std::vector<std::string>{"funnel:time_to_first_token_seconds_bucket{le=\"0.02\"} 0"});
  EXPECT_EQ(Lines(text, "funnel:time_to_first_token_seconds_bucket{le=\"0.04\"}"),
            std::vector<std::string>{"funnel:time_to_first_token_seconds_bucket{le=\"0.04\"} 1"});
  EXPECT_EQ(Lines(text, "funnel:time_per_output_token_seconds_count "),
            std::vector<std::string>{"funnel:time_per_output_token_seconds_count 1"});
  EXPECT_EQ(Lines(text, "funnel:e2e_request_latency_seconds_count "),
            std::vector<std::string>{"funnel:e2e_request_latency_seconds_count 2"});
  EXPECT_EQ(Lines(text, "funnel:e2e_request_latency_seconds_sum "),
            std::vector<std::string>{"funnel:e2e_request_latency_seconds_sum 12.2"});
  EXPECT_EQ(Lines(text, "funnel:e2e_request_latency_seconds_bucket{le=\"10\"}"),
            std::vector<std::string>{"funnel:e2e_request_latency_seconds_bucket{le=\"10\"} 1"});
  EXPECT_EQ(Lines(text, "funnel:e2e_request_latency_seconds_bucket{le=\"15\"}"),
            std::vector<std::string>{"funnel:e2e_request_latency_seconds_bucket{le=\"15\"} 2"});
  for (const char* family :
       {"funnel:num_requests_waiting", "funnel:num_requests_running", "funnel:kv_cache_usage_perc",
        "funnel:kv_cache_compression_ratio", "funnel:num_sessions"}) {
    EXPECT_EQ(Lines(text, std::string("# TYPE ") + family + " ").size(), 1u) << family;
    EXPECT_EQ(Lines(text, std::string("# TYPE ") + family + " gauge").size(), 1u) << family;
  }
  for (const char* family :
       {"funnel:time_to_first_token_seconds", "funnel:time_per_output_token_seconds",
        "funnel:e2e_request_latency_seconds"}) {
    EXPECT_EQ(Lines(text, std::string("# TYPE ") + family + " histogram").size(), 1u) << family;
  }
  for (const char* family : {"funnel:prompt_tokens_total", "funnel:generation_tokens_total",
                             "funnel:num_preemptions_total", "funnel:request_rejections_total"}) {
    EXPECT_EQ(Lines(text, std::string("# TYPE ") + family + " counter").size(), 1u) << family;
  }
}

}  // namespace
}  // namespace funnel
