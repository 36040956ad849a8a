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

// Gives `kv` `depth` entries per layer of random K/V at positions 0..depth-1.
absl::Status FillSynthetic(CpuModelRunner& runner, SequenceKv& kv, int64_t depth, std::mt19937& rng) {
  if (depth == 0) return absl::OkStatus();
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int32_t l = 0; l < kv.num_layers(); ++l) {
    RETURN_IF_ERROR(kv.Grow(runner.pool(), l, depth));
    for (BlockId b : kv.block_table(l)) {
      float* p = runner.block_data(b);
      for (int64_t i = 0; i < runner.geometry().BlockFloats(); ++i) p[i] = u(rng);
    }
  }
  kv.set_num_positions(depth);
  return absl::OkStatus();
}

struct RunFigures {
  double prefill_tok_s = 0, decode_tok_s = 0;
};

absl::StatusOr<RunFigures> TimeOnce(CpuModelRunner& runner, int64_t depth, int64_t prefill,
                                    int64_t decode, std::mt19937& rng) {
  const int32_t vocab = runner.config().vocab_size;
  SequenceKv kv = runner.NewSequence();
  RETURN_IF_ERROR(FillSynthetic(runner, kv, depth, rng));
  std::vector<int32_t> prompt(static_cast<size_t>(prefill));
  for (auto& id : prompt) id = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  std::vector<float> logits;
  RunFigures f;
  auto t0 = Clock::now();
  StepSequence s{&kv, prompt, false};
  absl::Status st = runner.Step({&s, 1}, logits);
  f.prefill_tok_s = static_cast<double>(prefill) / Seconds(t0);
  if (st.ok()) {
    // Decode continues from depth + prefill, as llama-bench's tg at depth does not; to measure
    // decode at `depth` exactly, decode runs on a second sequence filled to `depth` only.
    runner.Release(kv);
    RETURN_IF_ERROR(FillSynthetic(runner, kv, depth, rng));
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

absl::Status Main(const std::vector<std::string>& argv) {
  CliSpec spec{{"model", "threads", "prompt-tokens", "decode-tokens", "depths", "repeats",
                "triad-mib"}, {}, {}};
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  ASSIGN_OR_RETURN(std::string model, args.Require("model"));
  ASSIGN_OR_RETURN(int64_t threads, args.GetInt("threads", 2, 1, 256));
  ASSIGN_OR_RETURN(int64_t prefill, args.GetInt("prompt-tokens", 512, 1, 1 << 20));
  ASSIGN_OR_RETURN(int64_t decode, args.GetInt("decode-tokens", 32, 1, 1 << 20));
  ASSIGN_OR_RETURN(int64_t repeats, args.GetInt("repeats", 3, 1, 1000));
  ASSIGN_OR_RETURN(int64_t triad_mib, args.GetInt("triad-mib", 256, 16, 1 << 16));
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
  std::printf("weights read per decode step: %.1f MB; threads %lld\n", weights->matrix_bytes() / 1e6,
              static_cast<long long>(threads));
  // Warm-up: fault in the weight pages and size the workspaces.
  ASSIGN_OR_RETURN(RunFigures warm, TimeOnce(*runner, 0, std::min<int64_t>(prefill, 64), 2, rng));
  (void)warm;
  std::vector<double> triad;
  std::vector<std::vector<double>> pp(depths.size()), tg(depths.size());
  for (int64_t r = 0; r < repeats; ++r) {
    triad.push_back(MeasureTriad(pool, arrays));
    for (size_t i = 0; i < depths.size(); ++i) {
      ASSIGN_OR_RETURN(RunFigures f, TimeOnce(*runner, depths[i], prefill, decode, rng));
      pp[i].push_back(f.prefill_tok_s);
      tg[i].push_back(f.decode_tok_s);
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
  std::printf("| depth | prefill %lld tok/s (median, min-max) | decode tok/s (median, min-max) | decode GB/s | %% of triad |\n",
              static_cast<long long>(prefill));
  std::printf("|---|---|---|---|---|\n");
  for (size_t i = 0; i < depths.size(); ++i) {
    const double td = Median(tg[i]);
    const double bytes = static_cast<double>(weights->matrix_bytes()) +
                         static_cast<double>(depths[i]) * kv_entry_bytes * c.num_layers;
    std::printf("| %lld | %.1f (%.1f-%.1f) | %.2f (%.2f-%.2f) | %.1f | %.0f%% |\n",
                static_cast<long long>(depths[i]), Median(pp[i]),
                *std::min_element(pp[i].begin(), pp[i].end()), *std::max_element(pp[i].begin(), pp[i].end()),
                td, *std::min_element(tg[i].begin(), tg[i].end()), *std::max_element(tg[i].begin(), tg[i].end()),
                td * bytes / 1e9, 100.0 * td * bytes / 1e9 / bw);
  }
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
