// funnel-bench-cpu: prefill and decode speed of the CPU backend, llama-bench style.
//
// For each repeat and each depth d: the cache is filled with d synthetic entries (random K/V, as
// if a d-token prompt had been prefilled), then a P-token prefill and D single-token decode steps
// are timed. Memory bandwidth (STREAM triad) is measured between runs, alternating, so the
// decode figures can be read against the bandwidth of the same minutes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli_args.h"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// STREAM triad a = b + s*c over arrays of `floats` elements; returns GB/s (3 arrays counted).
struct TriadArrays {
  explicit TriadArrays(int64_t floats)
      : a(static_cast<size_t>(floats), 0.0f), b(a.size(), 1.0f), c(a.size(), 2.0f) {}
  std::vector<float> a, b, c;
};

double MeasureTriad(ThreadPool& pool, TriadArrays& arrays) {
  const int64_t floats = static_cast<int64_t>(arrays.a.size());
  float* a = arrays.a.data();
  const float* b = arrays.b.data();
  const float* c = arrays.c.data();
  const int64_t chunks = pool.num_threads() * 16;
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = Clock::now();
    pool.ParallelFor(chunks, [&](int64_t t, int) {
      const int64_t i0 = floats * t / chunks, i1 = floats * (t + 1) / chunks;
      for (int64_t i = i0; i < i1; ++i) a[i] = b[i] + 3.0f * c[i];
    });
    best = std::max(best, 3.0 * floats * sizeof(float) / Seconds(t0) / 1e9);
  }
  return best;
}

// Gives `kv` the cache a `depth`-token prompt leaves under `policy` (random K/V; each layer
// holds its budget's entry count), with the next position at `depth`.
absl::Status FillSynthetic(CpuModelRunner& runner, SequenceKv& kv, int64_t depth,
                           const KvPolicy& policy, std::mt19937& rng) {
  if (depth == 0) return absl::OkStatus();
  const LayerBudgets budgets = ComputeLayerBudgets(policy, kv.num_layers(), depth);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int32_t l = 0; l < kv.num_layers(); ++l) {
    RETURN_IF_ERROR(kv.Grow(runner.pool(), l, budgets.stored(l)));
    for (BlockId b : kv.block_table(l)) {
      float* p = runner.block_data(b);
      for (int64_t i = 0; i < runner.geometry().BlockFloats(); ++i) p[i] = u(rng);
    }
  }
  kv.set_num_positions(depth);
  return absl::OkStatus();
}

struct RunFigures {
  double prefill_tok_s = 0, decode_tok_s = 0, compress_share = 0;
  int64_t decode_kv_bytes = 0;  // KV bytes attention reads per decode step (all layers)
};

// Prefill: `prefill` tokens after `depth` synthetic full-cache entries, or, when `policy`
// compresses, `prefill` tokens from an empty cache with compression at the end. Decode: from the
// cache a `depth`-token prompt leaves under `policy`.
absl::StatusOr<RunFigures> TimeOnce(CpuModelRunner& runner, int64_t depth, int64_t prefill,
                                    int64_t decode, const KvPolicy& policy, std::mt19937& rng) {
  const int32_t vocab = runner.config().vocab_size;
  SequenceKv kv = runner.NewSequence();
  if (!policy.compresses()) RETURN_IF_ERROR(FillSynthetic(runner, kv, depth, policy, rng));
  std::vector<int32_t> prompt(static_cast<size_t>(prefill));
  for (auto& id : prompt) id = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  std::vector<float> logits;
  RunFigures f;
  auto t0 = Clock::now();
  StepSequence s{&kv, prompt, false, &policy};
  absl::Status st = runner.Step({&s, 1}, logits);
  const double prefill_s = Seconds(t0);
  f.prefill_tok_s = static_cast<double>(prefill) / prefill_s;
  f.compress_share = runner.last_step_compress_ms() / 1000.0 / prefill_s;
  if (st.ok()) {
    // Decode continues from depth + prefill, as llama-bench's tg at depth does not; to measure
    // decode at `depth` exactly, decode runs on a second sequence filled to `depth` only.
    runner.Release(kv);
    RETURN_IF_ERROR(FillSynthetic(runner, kv, depth, policy, rng));
    for (int32_t l = 0; l < kv.num_layers(); ++l) f.decode_kv_bytes += kv.layer_length(l) * runner.entry_bytes();
    int32_t token = 1;
    auto t1 = Clock::now();
    for (int64_t i = 0; i < decode && st.ok(); ++i) {
      StepSequence d{&kv, std::span<const int32_t>(&token, 1), false};
      st = runner.Step({&d, 1}, logits);
      token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    f.decode_tok_s = static_cast<double>(decode) / Seconds(t1);
  }
  runner.Release(kv);
  RETURN_IF_ERROR(st);
  return f;
}

struct Series {
  std::vector<double> prefill, decode, compress_share;
  int64_t decode_kv_bytes = 0;
};

void PrintTable(const ModelWeights& weights, const std::vector<int64_t>& depths,
                const std::vector<Series>& series, int64_t prefill, bool compresses, double bw) {
  auto range = [](const std::vector<double>& v, double scale = 1.0) {
    return absl::StrFormat("%.2f (%.2f-%.2f)", Median(v) * scale,
                           *std::min_element(v.begin(), v.end()) * scale,
                           *std::max_element(v.begin(), v.end()) * scale);
  };
  std::printf("| depth | %s %lld tok/s | decode tok/s | decode ms/step | KV read/step MB | "
              "decode GB/s | %% of triad |\n",
              compresses ? "compressing prefill" : "prefill", static_cast<long long>(prefill));
  std::printf("|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < depths.size(); ++i) {
    const Series& s = series[i];
    const double td = Median(s.decode);
    const double bytes = static_cast<double>(weights.matrix_bytes() + s.decode_kv_bytes);
    std::vector<double> ms;
    for (double v : s.decode) ms.push_back(1000.0 / v);
    std::printf("| %lld | %s | %s | %.1f | %.1f | %.1f | %.0f%% |\n",
                static_cast<long long>(depths[i]), range(s.prefill).c_str(), range(s.decode).c_str(),
                Median(ms), s.decode_kv_bytes / 1e6, td * bytes / 1e9, 100.0 * td * bytes / 1e9 / bw);
  }
  if (compresses) {
    std::printf("\ncompression (scoring + selection + gather) share of the %lld-token prefill: %s%%\n",
                static_cast<long long>(prefill), range(series[0].compress_share, 100.0).c_str());
  }
}

absl::Status Main(const std::vector<std::string>& argv) {
  CliSpec spec{{"model", "threads", "prompt-tokens", "decode-tokens", "depths", "repeats",
                "triad-mib", "kv-method", "kv-budget", "kv-window"}, {}, {}};
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  ASSIGN_OR_RETURN(std::string model, args.Require("model"));
  ASSIGN_OR_RETURN(int64_t threads, args.GetInt("threads", 2, 1, 256));
  ASSIGN_OR_RETURN(int64_t prefill, args.GetInt("prompt-tokens", 512, 1, 1 << 20));
  ASSIGN_OR_RETURN(int64_t decode, args.GetInt("decode-tokens", 32, 1, 1 << 20));
  ASSIGN_OR_RETURN(int64_t repeats, args.GetInt("repeats", 3, 1, 1000));
  ASSIGN_OR_RETURN(int64_t triad_mib, args.GetInt("triad-mib", 256, 16, 1 << 16));
  KvPolicy policy;
  ASSIGN_OR_RETURN(policy.method, ParseKvMethod(args.Get("kv-method").value_or("full")));
  ASSIGN_OR_RETURN(policy.budget, args.GetInt("kv-budget", 0, 1, 1 << 30));
  ASSIGN_OR_RETURN(policy.window, args.GetInt("kv-window", policy.window, 1, 1 << 20));
  RETURN_IF_ERROR(policy.Validate());
  std::vector<int64_t> depths;
  for (absl::string_view d : absl::StrSplit(args.Get("depths").value_or("0,4096"), ',')) {
    int64_t v;
    if (!absl::SimpleAtoi(d, &v) || v < 0) return absl::InvalidArgumentError("bad --depths");
    depths.push_back(v);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights, ModelWeights::Open(model));
  const ModelConfig& c = weights->config();
  const int64_t max_ctx = *std::max_element(depths.begin(), depths.end()) + prefill + decode;
  const int64_t kv_entry_bytes = 2 * int64_t{c.num_kv_heads} * c.head_dim * 4;
  RunnerOptions o;
  o.num_threads = static_cast<int32_t>(threads);
  o.kv_cache_bytes = (max_ctx + 64) * kv_entry_bytes * c.num_layers;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuModelRunner> runner, CpuModelRunner::Create(*weights, o));
  ThreadPool pool(static_cast<int>(threads));
  TriadArrays arrays(triad_mib * 1024 * 1024 / 4);
  std::mt19937 rng(7);

  std::printf("model: %s\n", c.Summary().c_str());
  std::printf("weights read per decode step: %.1f MB; threads %lld; kv method %s",
              weights->matrix_bytes() / 1e6, static_cast<long long>(threads), KvMethodName(policy.method));
  if (policy.compresses()) std::printf(" budget %lld window %d", static_cast<long long>(policy.budget), policy.window);
  std::printf("\n");
  // Warm-up: fault in the weight pages and size the workspaces.
  ASSIGN_OR_RETURN(RunFigures warm,
                   TimeOnce(*runner, 0, std::min<int64_t>(prefill, 64), 2, KvPolicy{}, rng));
  (void)warm;
  std::vector<double> triad;
  std::vector<Series> series(depths.size());
  for (int64_t r = 0; r < repeats; ++r) {
    triad.push_back(MeasureTriad(pool, arrays));
    for (size_t i = 0; i < depths.size(); ++i) {
      ASSIGN_OR_RETURN(RunFigures f, TimeOnce(*runner, depths[i], prefill, decode, policy, rng));
      series[i].prefill.push_back(f.prefill_tok_s);
      series[i].decode.push_back(f.decode_tok_s);
      series[i].compress_share.push_back(f.compress_share);
      series[i].decode_kv_bytes = f.decode_kv_bytes;
      std::printf("  repeat %lld depth %6lld: prefill %7.2f tok/s, decode %6.2f tok/s (triad %.1f GB/s)\n",
                  static_cast<long long>(r), static_cast<long long>(depths[i]), f.prefill_tok_s,
                  f.decode_tok_s, triad.back());
      std::fflush(stdout);
    }
  }
  triad.push_back(MeasureTriad(pool, arrays));
  const double bw = Median(triad);
  std::printf("\nSTREAM triad: median %.1f GB/s (min %.1f, max %.1f)\n", bw,
              *std::min_element(triad.begin(), triad.end()), *std::max_element(triad.begin(), triad.end()));
  PrintTable(*weights, depths, series, prefill, policy.compresses(), bw);
  return absl::OkStatus();
}

}  // namespace
}  // namespace funnel

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (absl::Status st = funnel::Main(args); !st.ok()) {
    std::fprintf(stderr, "funnel-bench-cpu: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
