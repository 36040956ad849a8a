// A small Prometheus metrics registry: counters (optionally with one label), gauges and
// histograms, rendered in the text exposition format 0.0.4.
//
// Thread rules: every metric method is thread-safe (atomics or a per-metric mutex). Metrics are
// registered once at startup, before any other thread uses the registry; the registry owns them
// and returned pointers stay valid for its lifetime. Render may run concurrently with updates.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace funnel {

class Counter {
 public:
  void Increment(double by = 1.0);
  // Mirrors a monotonic total kept elsewhere (e.g. the engine's token counts).
  void SetTotal(double total) { value_.store(total, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A counter family with one label (e.g. rejections by reason); children are created on use.
class LabeledCounter {
 public:
  explicit LabeledCounter(std::string label) : label_(std::move(label)) {}
  Counter& With(const std::string& value);
  const std::string& label() const { return label_; }
  // Sorted by label value.
  std::vector<std::pair<std::string, double>> Snapshot() const;

 private:
  std::string label_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Counter>> children_;
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `bounds`: strictly increasing upper bounds; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    double sum = 0.0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), last = +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

class MetricsRegistry {
 public:
  Counter* AddCounter(const std::string& name, const std::string& help);
  LabeledCounter* AddLabeledCounter(const std::string& name, const std::string& help,
                                    const std::string& label);
  Gauge* AddGauge(const std::string& name, const std::string& help);
  Histogram* AddHistogram(const std::string& name, const std::string& help,
                          std::vector<double> bounds);
  // Runs before every Render (refreshes gauges mirrored from elsewhere).
  void AddCollector(std::function<void()> collect);

  // The text exposition of every metric, in registration order.
  std::string Render() const;

 private:
  struct Family {
    std::string name;
    std::string help;
    std::string type;  // "counter", "gauge", "histogram"
    std::unique_ptr<Counter> counter;
    std::unique_ptr<LabeledCounter> labeled;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  Family& Add(const std::string& name, const std::string& help, const std::string& type);

  std::vector<std::unique_ptr<Family>> families_;
  std::vector<std::function<void()>> collectors_;
};

// Prometheus sample value: integers without a fraction, "+Inf"/"-Inf"/"NaN", else the shortest
// decimal that reads back exactly.
std::string FormatMetricValue(double v);
// Escapes a label value (backslash, double quote, newline).
std::string EscapeLabelValue(const std::string& v);
// Escapes HELP text (backslash, newline).
std::string EscapeHelp(const std::string& help);

}  // namespace funnel
