// funnel bench: a closed-loop load generator against a funnel-server (see kUsage).
//
// C client threads (one connection each) issue N requests in total. Prompts are random ids of
// the model's vocabulary, sampling is greedy with ignore_eos, so every request returns exactly
// T tokens. With --session-share one session of L tokens is created first and every request is
// a short question (--question-tokens ids) forked from it. Figures go to stdout; a progress bar
// goes to stderr when it is a terminal.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "client/funnel_client.h"
#include "client/progress_bar.h"
#include "client/remote_args.h"
#include "runtime/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

constexpr char kUsage[] =
    "usage: funnel bench --server HOST:PORT [--concurrency C] [--requests N]\n"
    "  [--prompt-tokens L] [--max-tokens T] [--session-share [--question-tokens Q]]\n"
    "  [--kv-method M] [--kv-budget B | --kv-ratio R] [--kv-window W] [--kv-pooling P]\n"
    "  [--kv-kernel K] [--kv-rounding exact|official] [--seed S]\n"
    "  [--api-key KEY | --api-key-file FILE] [--timeout SECONDS] [--json]\n"
    "  [--tls | --tls-ca PEM] [--tls-cert PEM --tls-key PEM] [--tls-server-name NAME]\n"
    "C threads (default 8) issue N requests (default 64) of L random prompt ids (default 128),\n"
    "greedy with ignore_eos and T output tokens each (default 32). --session-share prefills one\n"
    "session of L tokens and sends questions of Q ids (default 16) against it. Prints requests/s,\n"
    "output tokens/s, TTFT / TPOT / latency percentiles (ms, measured on the client) and errors\n"
    "by code; exits 1 only when every request failed.\n";

struct BenchArgs {
  ClientOptions client;
  int64_t concurrency = 8;
  int64_t requests = 64;
  int64_t prompt_tokens = 128;
  int64_t max_tokens = 32;
  int64_t question_tokens = 16;
  bool session_share = false;
  uint64_t seed = 0;
  std::optional<v1::KvPolicy> kv;
  bool json = false;
};

// One request's outcome, written only by the thread that ran it.
struct Sample {
  absl::StatusCode code = absl::StatusCode::kUnknown;
  double ttft_ms = 0.0;
  double tpot_ms = 0.0;  // (end - first token) / (tokens - 1); only when tokens > 1
  double latency_ms = 0.0;
  int64_t output_tokens = 0;
  int64_t prompt_tokens = 0;
};

absl::StatusOr<BenchArgs> ParseBenchArgs(const std::vector<std::string>& argv) {
  CliSpec spec{
      {"concurrency", "requests", "prompt-tokens", "max-tokens", "question-tokens", "seed"},
      {"session-share", "json"},
      {}};
  AddConnectionFlags(spec);
  AddKvFlags(spec);
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  BenchArgs b;
  ASSIGN_OR_RETURN(b.client, ParseConnectionFlags(args));
  ASSIGN_OR_RETURN(b.concurrency, args.GetInt("concurrency", b.concurrency, 1, 4096));
  ASSIGN_OR_RETURN(b.requests, args.GetInt("requests", b.requests, 1, int64_t{1} << 30));
  ASSIGN_OR_RETURN(b.prompt_tokens, args.GetInt("prompt-tokens", b.prompt_tokens, 1, 1 << 24));
  ASSIGN_OR_RETURN(b.max_tokens, args.GetInt("max-tokens", b.max_tokens, 1, 1 << 24));
  ASSIGN_OR_RETURN(b.question_tokens,
                   args.GetInt("question-tokens", b.question_tokens, 1, 1 << 24));
  b.session_share = args.Flag("session-share");
  if (args.Has("question-tokens") && !b.session_share) {
    return absl::InvalidArgumentError("--question-tokens needs --session-share");
  }
  ASSIGN_OR_RETURN(int64_t seed, args.GetInt("seed", 0, 0, INT64_MAX));
  b.seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(b.kv, ParseKvFlags(args));
  b.json = args.Flag("json");
  return b;
}

// Nearest-rank percentile of sorted values (0 when empty).
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0.0;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

struct Distribution {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
  int64_t count = 0;
};

Distribution Describe(std::vector<double> v) {
  Distribution d;
  std::sort(v.begin(), v.end());
  d.count = static_cast<int64_t>(v.size());
  d.p50 = Percentile(v, 50);
  d.p90 = Percentile(v, 90);
  d.p99 = Percentile(v, 99);
  for (double x : v) d.mean += x;
  if (!v.empty()) d.mean /= static_cast<double>(v.size());
  return d;
}

nlohmann::json DistributionJson(const Distribution& d) {
  return {{"p50", d.p50}, {"p90", d.p90}, {"p99", d.p99}, {"mean", d.mean}};
}

std::vector<int32_t> RandomIds(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  // Ids 0-2 are unk/bos/eos in the Llama vocabularies; keep to ordinary tokens.
  const int32_t lo = vocab > 3 ? 3 : 0;
  std::uniform_int_distribution<int32_t> dist(lo, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

absl::Status Execute(const BenchArgs& b) {
  ASSIGN_OR_RETURN(std::unique_ptr<FunnelClient> control, FunnelClient::Create(b.client));
  ASSIGN_OR_RETURN(v1::ServerInfo info, control->GetServerInfo());
  v1::Model model = info.model();
  if (model.vocab_size() <= 0) {
    ASSIGN_OR_RETURN(std::vector<v1::Model> models, control->ListModels());
    if (models.empty()) return absl::FailedPreconditionError("the server lists no model");
    model = models.front();
  }
  if (model.vocab_size() <= 0)
    return absl::FailedPreconditionError("the server reports no vocabulary");
  const int64_t request_prompt = b.session_share ? b.question_tokens : b.prompt_tokens;
  const int64_t context_needed =
      (b.session_share ? b.prompt_tokens : 0) + request_prompt + b.max_tokens;
  if (model.context_length() > 0 && context_needed > model.context_length()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prompt and output need %d positions, more than the model's context of %d",
                        context_needed, model.context_length()));
  }

  std::mt19937_64 rng(b.seed);
  std::string session_id;
  if (b.session_share) {
    v1::CreateSessionRequest create;
    std::vector<int32_t> context = RandomIds(rng, b.prompt_tokens, model.vocab_size());
    create.mutable_prompt_ids()->mutable_ids()->Assign(context.begin(), context.end());
    if (b.kv) *create.mutable_kv_policy() = *b.kv;
    ASSIGN_OR_RETURN(v1::Session session, control->CreateSession(create));
    session_id = session.session_id();
    spdlog::info("bench: session {} holds {} tokens in {} bytes", session_id, session.tokens(),
                 session.kv_bytes());
  }
  std::vector<v1::GenerateRequest> requests(static_cast<size_t>(b.requests));
  for (v1::GenerateRequest& r : requests) {
    std::vector<int32_t> ids = RandomIds(rng, request_prompt, model.vocab_size());
    r.mutable_prompt_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
    v1::SamplingParams* s = r.mutable_sampling();
    s->set_temperature(0.0f);
    s->set_max_tokens(static_cast<int32_t>(b.max_tokens));
    s->set_ignore_eos(true);
    if (b.session_share) {
      r.set_session_id(session_id);
    } else if (b.kv) {
      *r.mutable_kv_policy() = *b.kv;
    }
  }

  // One connection per simulated user.
  std::vector<std::unique_ptr<FunnelClient>> clients;
  ClientOptions per_thread = b.client;
  per_thread.own_connection = true;
  for (int64_t i = 0; i < b.concurrency; ++i) {
    ASSIGN_OR_RETURN(std::unique_ptr<FunnelClient> c, FunnelClient::Create(per_thread));
    clients.push_back(std::move(c));
  }
  // Connect every user before the clock starts: connection set-up is not a request's latency,
  // and a fresh channel's first call must not fail while its connection is still coming up.
  for (const std::unique_ptr<FunnelClient>& c : clients) {
    RETURN_IF_ERROR(c->WaitForConnected(absl::Seconds(30)));
  }

  std::vector<Sample> samples(requests.size());
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::unique_ptr<ProgressBar> progress;
  if (isatty(STDERR_FILENO))
    progress = std::make_unique<ProgressBar>(done, b.requests, "", std::chrono::milliseconds(100));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int64_t t = 0; t < b.concurrency; ++t) {
    threads.emplace_back([&, client = clients[static_cast<size_t>(t)].get()] {
      for (int64_t i = next.fetch_add(1); i < b.requests; i = next.fetch_add(1)) {
        const v1::GenerateRequest& r = requests[static_cast<size_t>(i)];
        Sample& s = samples[static_cast<size_t>(i)];
        s.prompt_tokens = r.prompt_ids().ids_size();
        absl::StatusOr<GenerateResult> g = client->Generate(r);
        s.code = g.status().code();
        if (g.ok()) {
          s.output_tokens = static_cast<int64_t>(g->output_ids.size());
          s.ttft_ms = g->ttft_ms;
          s.latency_ms = g->total_ms;
          if (s.output_tokens > 1) {
            s.tpot_ms = (g->total_ms - g->ttft_ms) / static_cast<double>(s.output_tokens - 1);
          }
        } else {
          spdlog::debug("bench: request {} failed: {}", i, g.status().ToString());
        }
        done.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  progress.reset();

  if (!session_id.empty()) {
    if (absl::Status st = control->DeleteSession(session_id); !st.ok()) {
      spdlog::warn("bench: could not delete session {}: {}", session_id, st.ToString());
    }
  }

  int64_t ok = 0, output_tokens = 0, prompt_tokens = 0, short_responses = 0;
  std::vector<double> ttft, tpot, latency;
  std::map<std::string, int64_t> errors;
  for (const Sample& s : samples) {
    if (s.code != absl::StatusCode::kOk) {
      ++errors[absl::StatusCodeToString(s.code)];
      continue;
    }
    ++ok;
    output_tokens += s.output_tokens;
    prompt_tokens += s.prompt_tokens;
    if (s.output_tokens != b.max_tokens) ++short_responses;
    if (s.output_tokens > 0) ttft.push_back(s.ttft_ms);
    if (s.output_tokens > 1) tpot.push_back(s.tpot_ms);
    latency.push_back(s.latency_ms);
  }
  const Distribution ttft_d = Describe(ttft), tpot_d = Describe(tpot), lat_d = Describe(latency);
  const double rps = wall_s > 0 ? static_cast<double>(ok) / wall_s : 0.0;
  const double out_tps = wall_s > 0 ? static_cast<double>(output_tokens) / wall_s : 0.0;
  const double in_tps = wall_s > 0 ? static_cast<double>(prompt_tokens) / wall_s : 0.0;
  const KvPolicy policy = EffectiveKvPolicy(b.kv ? &*b.kv : nullptr, info.default_kv_policy());

  if (b.json) {
    nlohmann::json kv = {{"method", KvMethodName(policy.method)}};
    if (policy.compresses()) {
      kv["budget"] = policy.budget;
      if (policy.ratio > 0.0) kv["ratio"] = policy.ratio;
    }
    PrintJson({{"model", model.id()},
               {"concurrency", b.concurrency},
               {"requests", b.requests},
               {"prompt_tokens", b.prompt_tokens},
               {"max_tokens", b.max_tokens},
               {"session_share", b.session_share},
               {"question_tokens", b.session_share ? b.question_tokens : 0},
               {"kv", kv},
               {"seed", b.seed},
               {"completed", ok},
               {"failed", b.requests - ok},
               {"errors", errors},
               {"short_responses", short_responses},
               {"wall_s", wall_s},
               {"requests_per_s", rps},
               {"output_tokens_per_s", out_tps},
               {"prompt_tokens_per_s", in_tps},
               {"output_tokens", output_tokens},
               {"ttft_ms", DistributionJson(ttft_d)},
               {"tpot_ms", DistributionJson(tpot_d)},
               {"latency_ms", DistributionJson(lat_d)}});
  } else {
    std::printf(
        "model %s, %lld requests, concurrency %lld, prompt %lld tokens%s, output %lld tokens, kv "
        "%s\n",
        model.id().c_str(), static_cast<long long>(b.requests),
        static_cast<long long>(b.concurrency), static_cast<long long>(b.prompt_tokens),
        b.session_share
            ? absl::StrCat(" (shared session, questions of ", b.question_tokens, ")").c_str()
            : "",
        static_cast<long long>(b.max_tokens), KvMethodName(policy.method));
    std::printf("completed %lld, failed %lld in %.2f s\n", static_cast<long long>(ok),
                static_cast<long long>(b.requests - ok), wall_s);
    std::printf("throughput  %.2f requests/s, %.1f output tokens/s, %.1f prompt tokens/s\n", rps,
                out_tps, in_tps);
    auto row = [](const char* name, const Distribution& d) {
      std::printf("%-11s p50 %9.2f  p90 %9.2f  p99 %9.2f  mean %9.2f ms\n", name, d.p50, d.p90,
                  d.p99, d.mean);
    };
    row("ttft", ttft_d);
    row("tpot", tpot_d);
    row("latency", lat_d);
    if (short_responses > 0) {
      std::printf("short responses (fewer than %lld tokens): %lld\n",
                  static_cast<long long>(b.max_tokens), static_cast<long long>(short_responses));
    }
    for (const auto& [code, n] : errors) {
      std::printf("errors %s: %lld\n", code.c_str(), static_cast<long long>(n));
    }
  }
  std::fflush(stdout);
  if (ok == 0) return absl::UnavailableError("every request failed");
  return absl::OkStatus();
}

}  // namespace

int BenchCommand(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  absl::StatusOr<BenchArgs> parsed = ParseBenchArgs(args);
  if (!parsed.ok()) return ReportError("bench", parsed.status());
  if (absl::Status st = Execute(*parsed); !st.ok()) return ReportError("bench", WithCodeName(st));
  return 0;
}

}  // namespace funnel
