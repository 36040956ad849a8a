#include "server/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace funnel {

void Counter::Increment(double by) {
  if (!(by >= 0)) return;  // counters never go down (NaN is dropped too)
  value_.fetch_add(by, std::memory_order_relaxed);
}

Counter& LabeledCounter::With(const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<Counter>& child = children_[value];
  if (child == nullptr) child = std::make_unique<Counter>();
  return *child;
}

std::vector<std::pair<std::string, double>> LabeledCounter::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, double>> out;
  out.reserve(children_.size());
  for (const auto& [value, child] : children_) out.emplace_back(value, child->value());
  return out;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  const size_t bucket =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += v;
  ++count_;
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    s.cumulative.push_back(running);
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

MetricsRegistry::Family& MetricsRegistry::Add(const std::string& name, const std::string& help,
                                              const std::string& type) {
  auto family = std::make_unique<Family>();
  family->name = name;
  family->help = help;
  family->type = type;
  families_.push_back(std::move(family));
  return *families_.back();
}

Counter* MetricsRegistry::AddCounter(const std::string& name, const std::string& help) {
  Family& f = Add(name, help, "counter");
  f.counter = std::make_unique<Counter>();
  return f.counter.get();
}

LabeledCounter* MetricsRegistry::AddLabeledCounter(const std::string& name, const std::string& help,
                                                   const std::string& label) {
  Family& f = Add(name, help, "counter");
  f.labeled = std::make_unique<LabeledCounter>(label);
  return f.labeled.get();
}

Gauge* MetricsRegistry::AddGauge(const std::string& name, const std::string& help) {
  Family& f = Add(name, help, "gauge");
  f.gauge = std::make_unique<Gauge>();
  return f.gauge.get();
}

Histogram* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> bounds) {
  Family& f = Add(name, help, "histogram");
  f.histogram = std::make_unique<Histogram>(std::move(bounds));
  return f.histogram.get();
}

void MetricsRegistry::AddCollector(std::function<void()> collect) {
  collectors_.push_back(std::move(collect));
}

namespace {

void RenderHistogram(const std::string& name, const Histogram& h, std::string& out) {
  const Histogram::Snapshot s = h.Read();
  for (size_t i = 0; i < s.bounds.size(); ++i) {
    absl::StrAppend(&out, name, "_bucket{le=\"", FormatMetricValue(s.bounds[i]), "\"} ",
                    s.cumulative[i], "\n");
  }
  absl::StrAppend(&out, name, "_bucket{le=\"+Inf\"} ", s.cumulative.back(), "\n");
  absl::StrAppend(&out, name, "_sum ", FormatMetricValue(s.sum), "\n");
  absl::StrAppend(&out, name, "_count ", s.count, "\n");
}

}  // namespace

std::string MetricsRegistry::Render() const {
  for (const auto& collect : collectors_) collect();
  std::string out;
  for (const auto& f : families_) {
    absl::StrAppend(&out, "# HELP ", f->name, " ", EscapeHelp(f->help), "\n");
    absl::StrAppend(&out, "# TYPE ", f->name, " ", f->type, "\n");
    if (f->counter)
      absl::StrAppend(&out, f->name, " ", FormatMetricValue(f->counter->value()), "\n");
    if (f->gauge) absl::StrAppend(&out, f->name, " ", FormatMetricValue(f->gauge->value()), "\n");
    if (f->labeled) {
      for (const auto& [value, v] : f->labeled->Snapshot()) {
        absl::StrAppend(&out, f->name, "{", f->labeled->label(), "=\"", EscapeLabelValue(value),
                        "\"} ", FormatMetricValue(v), "\n");
      }
    }
    if (f->histogram) RenderHistogram(f->name, *f->histogram, out);
  }
  return out;
}

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  // The shortest form that reads back as the same double.
  for (int precision = 1; precision < 17; ++precision) {
    std::string s = absl::StrFormat("%.*g", precision, v);
    if (std::strtod(s.c_str(), nullptr) == v) return s;
  }
  return absl::StrFormat("%.17g", v);
}

std::string EscapeHelp(const std::string& help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace funnel
