// funnel-bench-cuda-llama: the CUDA backend end to end on a random-weight model of Llama-3-8B's
// shape (32 layers, dim 4096, 32 query / 8 KV heads, ffn 14336, vocab 128256), made on the device
// (CudaModelRunner::CreateRandom, no file). Weights bf16 by default (16 GB; --weights f32: 32 GB),
// KV fp32 (the backend's only KV type so far: bf16 KV is still to come, issue #9).
//
// Prints markdown tables:
//  1. prefill of one 8K prompt: tokens/s with the full cache and with PyramidKV B=2048 / B=128
//     (the compression at the end of prefill included);
//  2. decode at batch 1, 16, 64 over 8K contexts, full vs PyramidKV B=2048 / B=128: ms per step,
//     tokens/s, and the step's HBM bound (weights + every KV entry read, over the measured
//     device copy bandwidth). Decode contexts are filled synthetically (ImportSequence of random
//     K/V with each policy's per-layer lengths for an 8K prompt), not by prefilling;
//  3. how many 32K-token sequences the KV pool admits under each policy once compressed.
//
// Usage: funnel-bench-cuda-llama [--kv-gb G] [--layers L] [--steps S] [--context N]
//                                [--weights bf16|f32] [--cpu-rehearsal]
//   --kv-gb          KV pool size (default 80; the weights take 16 GB more in bf16, 32 in f32)
//   --layers         fewer layers for a quick run (default 32; figures then are not Llama-3-8B's)
//   --steps          timed decode steps per cell (default 8; the median is printed)
//   --context        prompt / context length (default 8192)
//   --weights        bf16 (default) or f32 weight matrices on the device
//   --cpu-rehearsal  see Main
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/cuda_copy_bandwidth.h"
#include "kernels/cpu/random_fill.h"
#include "kernels/cuda/device.h"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/exec/cuda_model_runner.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/model/random_model.h"

namespace funnel {
namespace {

struct Args {
  double kv_gb = 80.0;
  int32_t layers = 32;
  int32_t steps = 8;
  int64_t context = 8192;
  DeviceDtype weights = DeviceDtype::kBf16;
  DeviceDtype kv = DeviceDtype::kBf16;
  bool cpu_rehearsal = false;
};

ModelConfig Llama3Shape(int32_t layers) {
  ModelConfig c;
  c.name = "random Llama-3-8B shape";
  c.architecture = "llama";
  c.num_layers = layers;
  c.dim = 4096;
  c.ffn_dim = 14336;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.rope_dim = 128;
  c.vocab_size = 128256;
  c.context_length = 131072;
  c.rope_theta = 500000.0f;
  c.bos_id = 128000;
  c.eos_ids = {128001};
  return c;
}

// A policy; "full" or pyramidkv at budget B.
struct Policy {
  const char* name;
  KvPolicy policy;
};

std::vector<Policy> Policies() {
  KvPolicy full;
  KvPolicy p2048;
  p2048.method = KvMethod::kPyramidKv;
  p2048.budget = 2048;
  KvPolicy p128 = p2048;
  p128.budget = 128;
  return {{"full", full}, {"pyramidkv B=2048", p2048}, {"pyramidkv B=128", p128}};
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void Die(const absl::Status& s, const char* what) {
  std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

std::vector<int32_t> RandomIds(int64_t n, int32_t vocab, uint64_t seed) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float u = UniformAt(seed, static_cast<uint64_t>(i), 0.5f) + 0.5f;  // [0, 1)
    ids[static_cast<size_t>(i)] = std::min(vocab - 1, static_cast<int32_t>(u * vocab));
  }
  return ids;
}

void BenchPrefill(ModelRunner& runner, const Args& args) {
  std::printf("\n## Prefill, one %lld-token prompt\n\n", static_cast<long long>(args.context));
  std::printf("| policy | s | tokens/s | KV entries kept (all layers) |\n|---|---|---|---|\n");
  const std::vector<int32_t> prompt = RandomIds(args.context, runner.config().vocab_size, 1);
  std::vector<float> logits;
  for (const Policy& p : Policies()) {
    for (int rep = 0; rep < 2; ++rep) {  // the first run warms up (scratch allocation, cuBLAS)
      SequenceKv kv = runner.NewSequence();
      StepSequence s{&kv, prompt, false, &p.policy};
      const auto t0 = std::chrono::steady_clock::now();
      if (absl::Status st = runner.Step({&s, 1}, logits); !st.ok()) Die(st, "prefill");
      const double sec = Seconds(t0);
      int64_t kept = 0;
      for (int32_t l = 0; l < kv.num_layers(); ++l) kept += kv.layer_length(l);
      runner.Release(kv);
      if (rep == 1) {
        std::printf("| %s | %.3f | %.0f | %lld |\n", p.name, sec, args.context / sec,
                    static_cast<long long>(kept));
      }
    }
  }
}

// Blocks one sequence holds for an n-token prompt under `policy` (after compression).
int64_t BlocksPerSequence(const ModelRunner& runner, const KvPolicy& policy, int64_t n) {
  const LayerBudgets b = ComputeLayerBudgets(policy, runner.config().num_layers, n);
  int64_t blocks = 0;
  for (int32_t l = 0; l < runner.config().num_layers; ++l) {
    blocks += (b.stored(l) + runner.block_size() - 1) / runner.block_size();
  }
  return blocks;
}

// Synthetic contexts: the most of 64, 16, 4, 1 sequences that the free pool holds (the decode
// steps of all three batch sizes included), each holding every layer's entries of an
// args.context-token prompt under `policy`, random K/V.
std::vector<SequenceKv> FillContexts(ModelRunner& runner, const KvPolicy& policy,
                                     const Args& args) {
  const ModelConfig& c = runner.config();
  const int64_t per_seq =
      BlocksPerSequence(runner, policy, args.context) +
      c.num_layers * ((3 * (args.steps + 1) + runner.block_size() - 1) / runner.block_size() + 1);
  int count = 64;
  while (count > 1 && count * per_seq > runner.pool().num_free()) count /= 4;
  if (count * per_seq > runner.pool().num_free()) return {};
  const LayerBudgets b = ComputeLayerBudgets(policy, c.num_layers, args.context);
  std::vector<std::vector<float>> layers(static_cast<size_t>(c.num_layers));
  for (int32_t l = 0; l < c.num_layers; ++l) {
    auto& v = layers[static_cast<size_t>(l)];
    v.resize(static_cast<size_t>(b.stored(l) * runner.entry_floats()));
    FillUniform(v.data(), static_cast<int64_t>(v.size()), 1000 + static_cast<uint64_t>(l), 1.0f);
  }
  std::vector<SequenceKv> seqs;
  for (int i = 0; i < count; ++i) {
    absl::StatusOr<SequenceKv> kv = runner.ImportSequence(layers, args.context);
    if (!kv.ok()) Die(kv.status(), "ImportSequence");
    seqs.push_back(*std::move(kv));
  }
  return seqs;
}

// Bytes one decode step reads: every weight matrix once (`weight_bytes` per element), every
// stored K/V entry of the batch (runner.entry_bytes() each).
double StepBytes(const ModelRunner& runner, double weight_bytes,
                 const std::vector<SequenceKv>& seqs, int batch) {
  const ModelConfig& c = runner.config();
  const double per_layer = 2.0 * c.dim * c.num_heads * c.head_dim +
                           2.0 * c.dim * c.num_kv_heads * c.head_dim + 3.0 * c.dim * c.ffn_dim;
  double bytes =
      weight_bytes * (per_layer * c.num_layers + static_cast<double>(c.vocab_size) * c.dim);
  const double entry_bytes = static_cast<double>(runner.entry_bytes());
  for (int i = 0; i < batch; ++i) {
    for (int32_t l = 0; l < c.num_layers; ++l) {
      bytes += entry_bytes * static_cast<double>(seqs[static_cast<size_t>(i)].layer_length(l));
    }
  }
  return bytes;
}

void BenchDecode(ModelRunner& runner, const Args& args, double copy_gbs) {
  std::printf("\n## Decode over %lld-token contexts\n\n", static_cast<long long>(args.context));
  std::printf(
      "| policy | batch | ms/step | tokens/s | GB read/step | HBM-bound ms | %% of bound |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  const int kBatches[] = {1, 16, 64};
  for (const Policy& p : Policies()) {
    std::vector<SequenceKv> seqs = FillContexts(runner, p.policy, args);
    std::vector<float> logits;
    for (int batch : kBatches) {
      if (batch > static_cast<int>(seqs.size())) {
        std::printf("| %s | %d | does not fit the %.0f GB pool | | | | |\n", p.name, batch,
                    args.kv_gb);
        continue;
      }
      std::vector<int32_t> tokens(static_cast<size_t>(batch));
      std::vector<double> ms;
      double bytes = 0.0;
      for (int step = 0; step <= args.steps; ++step) {  // step 0 warms up
        std::vector<StepSequence> b;
        for (int i = 0; i < batch; ++i) {
          tokens[static_cast<size_t>(i)] = (step * 7919 + i) % runner.config().vocab_size;
          b.push_back({&seqs[static_cast<size_t>(i)], {&tokens[static_cast<size_t>(i)], 1}});
        }
        bytes = StepBytes(runner, args.weights == DeviceDtype::kF32 ? 4.0 : 2.0, seqs, batch);
        const auto t0 = std::chrono::steady_clock::now();
        if (absl::Status st = runner.Step(b, logits); !st.ok()) Die(st, "decode");
        if (step > 0) ms.push_back(1000.0 * Seconds(t0));
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      const double bound_ms = copy_gbs > 0 ? bytes / (copy_gbs * 1e9) * 1000.0 : 0.0;
      std::printf("| %s | %d | %.2f | %.0f | %.2f | %.2f | %.0f%% |\n", p.name, batch, med,
                  batch / (med / 1000.0), bytes / 1e9, bound_ms, 100.0 * bound_ms / med);
    }
    for (SequenceKv& s : seqs) runner.Release(s);
  }
}

void ReportAdmission(ModelRunner& runner) {
  const int64_t n = 32768;
  std::printf("\n## 32K-token sequences the %d-block pool (%.1f GB) admits, compressed\n\n",
              runner.pool().num_blocks(),
              static_cast<double>(runner.pool().num_blocks()) * runner.block_bytes() / 1e9);
  std::printf("| policy | blocks/sequence | sequences | vs full |\n|---|---|---|---|\n");
  int64_t full_fit = 0;
  for (const Policy& p : Policies()) {
    const int64_t blocks = BlocksPerSequence(runner, p.policy, n);
    const int64_t fit = runner.pool().num_blocks() / blocks;
    if (full_fit == 0) full_fit = fit;
    std::printf(
        "| %s | %lld | %lld | %s |\n", p.name, static_cast<long long>(blocks),
        static_cast<long long>(fit),
        full_fit > 0 ? absl::StrFormat("%.1fx", static_cast<double>(fit) / full_fit).c_str() : "-");
  }
  std::printf(
      "\n(Steady state after the end-of-prefill compression; while a prompt is being\n"
      "prefilled its full K/V is held until the compression, so admission under load\n"
      "also depends on how many prompts prefill at once.)\n");
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  bool ok = true;
  for (int i = 1; i < argc && ok; ++i) {
    const char* flag = argv[i];
    if (std::strcmp(flag, "--cpu-rehearsal") == 0) {
      a.cpu_rehearsal = true;
      continue;
    }
    if (i + 1 >= argc) {
      ok = false;
    } else if (std::strcmp(flag, "--kv-gb") == 0) {
      a.kv_gb = std::atof(argv[++i]);
    } else if (std::strcmp(flag, "--layers") == 0) {
      a.layers = std::atoi(argv[++i]);
    } else if (std::strcmp(flag, "--steps") == 0) {
      a.steps = std::atoi(argv[++i]);
    } else if (std::strcmp(flag, "--context") == 0) {
      a.context = std::atoll(argv[++i]);
    } else if (std::strcmp(flag, "--weights") == 0 || std::strcmp(flag, "--kv") == 0) {
      const absl::StatusOr<DeviceDtype> t = ParseDeviceDtype(argv[++i]);
      ok = t.ok();
      if (ok) (flag[2] == 'w' ? a.weights : a.kv) = *t;
    } else {
      ok = false;
    }
  }
  if (!ok || a.kv_gb <= 0 || a.layers < 1 || a.steps < 1 || a.context < 64) {
    std::fprintf(stderr,
                 "usage: %s [--kv-gb G > 0] [--layers L >= 1] [--steps S >= 1] "
                 "[--context N >= 64] [--weights bf16|f16|f32] [--kv bf16|f16|f32] "
                 "[--cpu-rehearsal]\n",
                 argv[0]);
    std::exit(2);
  }
  return a;
}

// --cpu-rehearsal: the same program over the CPU runner and a small random model file (2 layers,
// dim 256, 8/2 heads), to check the benchmark itself on a machine without a GPU.
int Main(int argc, char** argv) {
  Args args = ParseArgs(argc, argv);
  if (args.cpu_rehearsal) args.weights = args.kv = DeviceDtype::kF32;  // the CPU runner's only
  RunnerOptions options;
  options.kv_cache_bytes = static_cast<int64_t>(args.kv_gb * 1e9);
  options.device_weights = args.weights;
  options.kv_dtype = args.kv;
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<ModelWeights> weights;
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner;
  double copy_gbs = 0.0;
  if (args.cpu_rehearsal) {
    RandomModelSpec spec;
    spec.num_layers = std::min(args.layers, 2);
    spec.dim = 256;
    spec.num_heads = 8;
    spec.num_kv_heads = 2;
    spec.ffn_dim = 512;
    spec.vocab_size = 1000;
    spec.context_length = 131072;
    const std::string path = std::filesystem::temp_directory_path() / "funnel-bench-rehearsal.gguf";
    if (absl::Status st = WriteRandomModel(spec, path); !st.ok()) Die(st, "WriteRandomModel");
    auto w = ModelWeights::Open(path);
    if (!w.ok()) Die(w.status(), "ModelWeights::Open");
    weights = *std::move(w);
    runner = CpuModelRunner::Create(*weights, options);
  } else {
    int count = 0;
    if (const int e = cuda::DeviceCount(&count); e != 0 || count == 0) {
      std::fprintf(stderr, "no CUDA device: %s\n", cuda::ErrorString(e));
      return 1;
    }
    copy_gbs = cuda::CopyBandwidthGBs();
    runner = CudaModelRunner::CreateRandom(Llama3Shape(args.layers), 1, options);
  }
  if (!runner.ok()) Die(runner.status(), "creating the runner");
  ModelRunner& r = **runner;
  std::printf("# funnel-bench-cuda-llama%s: %s, %s weights, %s KV\n\n",
              args.cpu_rehearsal ? " (CPU rehearsal, not a GPU figure)" : "",
              r.config().Summary().c_str(), DeviceDtypeName(options.device_weights),
              DeviceDtypeName(options.kv_dtype));
  std::printf(
      "weights made in %.1f s; device copy bandwidth %.0f GB/s (read + write); HBM bound ="
      " bytes read / that bandwidth\n",
      Seconds(t0), copy_gbs);
  BenchPrefill(r, args);
  BenchDecode(r, args, copy_gbs);
  ReportAdmission(r);
  return 0;
}

}  // namespace
}  // namespace funnel

int main(int argc, char** argv) { return funnel::Main(argc, argv); }
