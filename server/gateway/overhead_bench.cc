// funnel-bench-gateway: what funnel-gateway adds to a streamed generation, measured against the
// same request sent straight to funnel-server over gRPC, from one process with the same timing
// code on both paths.
//
// Each round runs `requests` streamed generations on `concurrency` workers (each worker sends its
// requests one after another on its own connection: an HTTP keep-alive connection to the gateway,
// or its own gRPC channel to the server). Rounds alternate direct / gateway so that drift on a
// shared machine hits both. Per request: time to first token, time per output token after the
// first ((last - first) / (tokens - 1)), and latency to the end of the stream. Printed: medians and
// p90 of every path and the gateway-minus-direct difference of the medians.
//
// usage: funnel-bench-gateway --server HOST:PORT --gateway HOST:PORT --model NAME
//          [--concurrency 1,32] [--requests 64] [--rounds 2] [--max-tokens 32]
//          [--prompt TEXT] [--json]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <latch>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/funnel_client.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace funnel {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

struct BenchOptions {
  std::string server;
  std::string gateway;
  std::string model;
  std::vector<int> concurrency = {1, 32};
  int requests = 64;
  int rounds = 2;
  int max_tokens = 32;
  std::string prompt = "Once upon a time";
  bool json = false;
};

// One streamed request as the client saw it.
struct Sample {
  double ttft_ms = 0;
  double tpot_ms = 0;
  double latency_ms = 0;
  int tokens = 0;
  bool ok = false;
  std::string error;  // why it failed
};

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

Sample Finish(Clock::time_point start, Clock::time_point first, Clock::time_point last, int tokens,
              std::string error) {
  Sample s;
  s.ok = error.empty() && tokens > 0;
  s.error = s.ok || !error.empty() ? error : "no tokens";
  s.tokens = tokens;
  s.ttft_ms = Ms(start, first);
  s.tpot_ms = tokens > 1 ? Ms(first, last) / (tokens - 1) : 0.0;
  s.latency_ms = Ms(start, Clock::now());
  return s;
}

// Direct: one Generate stream on the worker's own channel.
class GrpcWorker {
 public:
  explicit GrpcWorker(const BenchOptions& o) {
    ClientOptions c;
    c.target = o.server;
    c.own_connection = true;
    c.wait_for_ready = true;  // a connect that fails under load is retried, not counted as failed
    client_ = *FunnelClient::Create(c);
    request_.set_prompt(o.prompt);
    request_.mutable_sampling()->set_temperature(0);
    request_.mutable_sampling()->set_max_tokens(o.max_tokens);
    request_.mutable_sampling()->set_ignore_eos(true);
  }

  Sample Run() {
    const Clock::time_point start = Clock::now();
    Clock::time_point first = start, last = start;
    int tokens = 0;
    GenerateOptions go;
    go.on_delta = [&](const v1::TokenDelta&) {
      last = Clock::now();
      if (tokens++ == 0) first = last;
      return true;
    };
    absl::StatusOr<GenerateResult> result = client_->Generate(request_, go);
    return Finish(start, first, last, tokens, result.ok() ? "" : result.status().ToString());
  }

 private:
  std::unique_ptr<FunnelClient> client_;
  v1::GenerateRequest request_;
};

// Through the gateway: POST /v1/completions with stream: true on a keep-alive connection; every
// SSE event with text is a token.
class HttpWorker {
 public:
  explicit HttpWorker(const BenchOptions& o) {
    const std::vector<std::string> hp = absl::StrSplit(o.gateway, ':');
    int port = 0;
    if (hp.size() == 2 && absl::SimpleAtoi(hp[1], &port)) {
      client_ = std::make_unique<httplib::Client>(hp[0], port);
      client_->set_keep_alive(true);
      client_->set_tcp_nodelay(true);  // as HTTP clients do (no Nagle delay on the body)
      client_->set_read_timeout(600, 0);
    }
    body_ = Json({{"model", o.model},
                  {"prompt", o.prompt},
                  {"max_tokens", o.max_tokens},
                  {"temperature", 0},
                  {"ignore_eos", true},
                  {"stream", true}})
                .dump();
  }

  Sample Run() {
    const Clock::time_point start = Clock::now();
    Clock::time_point first = start, last = start;
    int tokens = 0;
    std::string buffer;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body_;
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      buffer.append(data, n);
      for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
        if (buffer.compare(0, 6, "data: ") == 0 && buffer.compare(6, 6, "[DONE]") != 0 &&
            buffer.find("\"finish_reason\":null", 0) < end) {
          last = Clock::now();
          if (tokens++ == 0) first = last;
        }
        buffer.erase(0, end + 2);
      }
      return true;
    };
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    std::string failure;
    if (client_ == nullptr) {
      failure = "bad --gateway address";
    } else if (!client_->send(req, res, error)) {
      failure = absl::StrCat("HTTP client error ", httplib::to_string(error));
    } else if (res.status != 200) {
      failure = absl::StrCat("HTTP ", res.status, " ", res.body);
    }
    return Finish(start, first, last, tokens, failure);
  }

 private:
  std::unique_ptr<httplib::Client> client_;
  std::string body_;
};

// `requests` requests on `concurrency` workers of type W, after one untimed request per worker
// (connection set-up).
template <typename W>
std::vector<Sample> RunRound(const BenchOptions& o, int concurrency) {
  std::vector<std::unique_ptr<W>> workers;
  for (int i = 0; i < concurrency; ++i) workers.push_back(std::make_unique<W>(o));
  std::atomic<int> next{0};
  std::vector<Sample> samples(static_cast<size_t>(o.requests));
  std::vector<std::thread> threads;
  std::latch warm(concurrency);
  for (int i = 0; i < concurrency; ++i) {
    threads.emplace_back([&, i] {
      workers[static_cast<size_t>(i)]->Run();  // connects; not counted
      warm.arrive_and_wait();
      for (int k; (k = next.fetch_add(1)) < o.requests;) {
        samples[static_cast<size_t>(k)] = workers[static_cast<size_t>(i)]->Run();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return samples;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

struct Summary {
  int ok = 0;
  int failed = 0;
  std::string first_error;
  double ttft_p50 = 0, ttft_p90 = 0, tpot_p50 = 0, tpot_p90 = 0, latency_p50 = 0, latency_p90 = 0;
};

Summary Summarize(const std::vector<Sample>& samples) {
  Summary s;
  std::vector<double> ttft, tpot, latency;
  for (const Sample& x : samples) {
    if (!x.ok) {
      if (s.failed++ == 0) s.first_error = x.error;
      continue;
    }
    ++s.ok;
    ttft.push_back(x.ttft_ms);
    tpot.push_back(x.tpot_ms);
    latency.push_back(x.latency_ms);
  }
  s.ttft_p50 = Percentile(ttft, 0.5);
  s.ttft_p90 = Percentile(ttft, 0.9);
  s.tpot_p50 = Percentile(tpot, 0.5);
  s.tpot_p90 = Percentile(tpot, 0.9);
  s.latency_p50 = Percentile(latency, 0.5);
  s.latency_p90 = Percentile(latency, 0.9);
  return s;
}

Json SummaryJson(const Summary& s) {
  return {{"ok", s.ok},
          {"failed", s.failed},
          {"ttft_ms_p50", s.ttft_p50},
          {"ttft_ms_p90", s.ttft_p90},
          {"tpot_ms_p50", s.tpot_p50},
          {"tpot_ms_p90", s.tpot_p90},
          {"latency_ms_p50", s.latency_p50},
          {"latency_ms_p90", s.latency_p90}};
}

int Bench(const BenchOptions& o) {
  Json out = Json::array();
  std::printf("%-11s %-7s %5s %9s %9s %9s %9s %11s %11s\n", "concurrency", "path", "ok", "ttft p50",
              "ttft p90", "tpot p50", "tpot p90", "latency p50", "latency p90");
  for (int c : o.concurrency) {
    std::vector<Sample> direct, gateway;
    for (int r = 0; r < o.rounds; ++r) {  // alternate the order: drift hits both paths
      auto d = r % 2 == 0 ? RunRound<GrpcWorker>(o, c) : std::vector<Sample>();
      auto g = RunRound<HttpWorker>(o, c);
      if (r % 2 == 1) d = RunRound<GrpcWorker>(o, c);
      direct.insert(direct.end(), d.begin(), d.end());
      gateway.insert(gateway.end(), g.begin(), g.end());
    }
    const Summary sd = Summarize(direct), sg = Summarize(gateway);
    for (const auto& [name, s] : {std::pair<const char*, const Summary&>{"direct", sd},
                                  std::pair<const char*, const Summary&>{"gateway", sg}}) {
      std::printf("%-11d %-7s %5d %9.2f %9.2f %9.3f %9.3f %11.2f %11.2f\n", c, name, s.ok,
                  s.ttft_p50, s.ttft_p90, s.tpot_p50, s.tpot_p90, s.latency_p50, s.latency_p90);
    }
    std::printf("%-11d %-7s %5s %9.2f %9s %9.3f %9s %11.2f\n", c, "added", "",
                sg.ttft_p50 - sd.ttft_p50, "", sg.tpot_p50 - sd.tpot_p50, "",
                sg.latency_p50 - sd.latency_p50);
    out.push_back({{"concurrency", c},
                   {"direct", SummaryJson(sd)},
                   {"gateway", SummaryJson(sg)},
                   {"added_ms",
                    {{"ttft_p50", sg.ttft_p50 - sd.ttft_p50},
                     {"tpot_p50", sg.tpot_p50 - sd.tpot_p50},
                     {"latency_p50", sg.latency_p50 - sd.latency_p50}}}});
    for (const Summary* x : {&sd, &sg}) {
      if (x->failed > 0) {
        std::fprintf(stderr, "warning: %s: %d requests failed, first: %s\n",
                     x == &sd ? "direct" : "gateway", x->failed, x->first_error.c_str());
      }
    }
  }
  if (o.json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

bool ParseArgs(int argc, char** argv, BenchOptions& o) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") {
      o.json = true;
    } else if (a.rfind("--", 0) == 0 && i + 1 < argc) {
      flags[a.substr(2)] = argv[++i];
    } else {
      return false;
    }
  }
  o.server = flags["server"];
  o.gateway = flags["gateway"];
  o.model = flags["model"];
  if (flags.count("prompt")) o.prompt = flags["prompt"];
  if (flags.count("concurrency")) {
    o.concurrency.clear();
    for (absl::string_view part : absl::StrSplit(flags["concurrency"], ',')) {
      int c = 0;
      if (!absl::SimpleAtoi(part, &c) || c < 1) return false;
      o.concurrency.push_back(c);
    }
  }
  const std::pair<const char*, int*> ints[] = {
      {"requests", &o.requests}, {"rounds", &o.rounds}, {"max-tokens", &o.max_tokens}};
  for (const auto& [name, value] : ints) {
    if (flags.count(name) && (!absl::SimpleAtoi(flags[name], value) || *value < 1)) return false;
  }
  return !o.server.empty() && !o.gateway.empty() && !o.model.empty();
}

}  // namespace
}  // namespace funnel

int main(int argc, char** argv) {
  funnel::BenchOptions options;
  if (!funnel::ParseArgs(argc, argv, options)) {
    std::fputs(
        "usage: funnel-bench-gateway --server HOST:PORT --gateway HOST:PORT --model NAME\n"
        "         [--concurrency 1,32] [--requests 64] [--rounds 2] [--max-tokens 32]\n"
        "         [--prompt TEXT] [--json]\n",
        stderr);
    return 2;
  }
  return funnel::Bench(options);
}
