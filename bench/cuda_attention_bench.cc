// funnel-bench-cuda-attention: paged decode attention on the GPU against the HBM bound.
//
// Llama-3-8B attention shape (32 query heads, 8 KV heads, head_dim 128), fp32 and bf16 KV,
// block 16.
// For each batch size and context length (all sequences the same length, K/V filled
// synthetically), times one decode attention call for one layer and compares the bytes it must
// read (K and V of every entry) with the measured device-to-device copy bandwidth. Also shows
// what a PyramidKV cache (B entries per layer on average) reads instead of the full cache.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench/cuda_copy_bandwidth.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kv_compress.h"
#include "kernels/cuda/paged_attention.h"

namespace {

using namespace funnel::cuda;

#define CHECK(expr)                                                    \
  do {                                                                 \
    const int e_ = (expr);                                             \
    if (e_ != 0) {                                                     \
      std::fprintf(stderr, "%s failed: %s\n", #expr, ErrorString(e_)); \
      std::exit(1);                                                    \
    }                                                                  \
  } while (0)

constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128, kBlock = 16;

// Median ms of one decode attention call over `reps`.
float TimeDecode(int seqs, int len, int splits, const void* pool, Dtype kv,
                 std::vector<float*> bufs, int reps) {
  const int max_blocks = (len + kBlock - 1) / kBlock;
  std::vector<int32_t> tables(static_cast<size_t>(seqs) * max_blocks);
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = static_cast<int32_t>(i);
  std::vector<int32_t> lens(seqs, len);
  int32_t *dtables = nullptr, *dlens = nullptr;
  CHECK(Malloc(reinterpret_cast<void**>(&dtables), tables.size() * 4));
  CHECK(Malloc(reinterpret_cast<void**>(&dlens), lens.size() * 4));
  CHECK(CopyToDevice(dtables, tables.data(), tables.size() * 4));
  CHECK(CopyToDevice(dlens, lens.data(), lens.size() * 4));
  PagedDecodeParams p;
  p.q = bufs[0];
  p.out = bufs[1];
  p.num_seqs = seqs;
  p.num_heads = kHeads;
  p.num_kv_heads = kKvHeads;
  p.head_dim = kHeadDim;
  p.pool = pool;
  p.kv_dtype = kv;
  p.block_size = kBlock;
  p.block_tables = dtables;
  p.max_blocks_per_seq = max_blocks;
  p.kv_lens = dlens;
  p.scale = 0.088f;
  p.num_splits = splits;
  p.max_kv_len = len;
  p.workspace = bufs[2];
  CHECK(LaunchPagedDecodeAttention(p, nullptr));
  CHECK(Synchronize());
  std::vector<float> ms;
  for (int r = 0; r < reps; ++r) {
    Timer t;
    t.Start();
    CHECK(LaunchPagedDecodeAttention(p, nullptr));
    ms.push_back(t.StopMs());
  }
  Free(dtables);
  Free(dlens);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// One layer's compression at the end of a `n`-token prefill: window scores (W = 8), max pooling
// (kernel 7) + group average, top-(budget - 8) per KV head with the window.
void BenchCompression() {
  std::printf(
      "\n| prompt tokens | budget | window scores ms | pool+avg ms | top-k ms | total ms/layer "
      "|\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (int64_t n : {8192, 32768, 131072}) {
    const int64_t w = 8, prefix = n - w;
    float *q = nullptr, *keys = nullptr, *scores = nullptr, *avg = nullptr;
    int32_t* kept = nullptr;
    CHECK(Malloc(reinterpret_cast<void**>(&q), size_t(w) * kHeads * kHeadDim * 4));
    CHECK(Malloc(reinterpret_cast<void**>(&keys), size_t(kKvHeads) * n * kHeadDim * 4));
    CHECK(Malloc(reinterpret_cast<void**>(&scores), size_t(kHeads) * prefix * 4));
    CHECK(Malloc(reinterpret_cast<void**>(&avg), size_t(kKvHeads) * prefix * 4));
    CHECK(Memset(q, 0, size_t(w) * kHeads * kHeadDim * 4));
    CHECK(Memset(keys, 0, size_t(kKvHeads) * n * kHeadDim * 4));
    for (int64_t budget : {128, 2048}) {
      const int64_t k = budget - w;
      CHECK(Malloc(reinterpret_cast<void**>(&kept), size_t(kKvHeads) * budget * 4));
      const size_t ws_bytes = TopKWorkspaceBytes(prefix, kKvHeads, k);
      void* ws = nullptr;
      CHECK(Malloc(&ws, ws_bytes));
      Timer t;
      float ms[3] = {0, 0, 0};
      for (int rep = 0; rep < 4; ++rep) {  // first round warms up
        t.Start();
        CHECK(
            LaunchWindowScores(q, keys, n, w, kHeads, kKvHeads, kHeadDim, 0.088f, scores, nullptr));
        const float a = t.StopMs();
        t.Start();
        CHECK(LaunchPoolAndAverage(scores, prefix, kHeads, kKvHeads, 7, true, avg, nullptr));
        const float b = t.StopMs();
        t.Start();
        CHECK(LaunchTopKWithWindow(avg, prefix, kKvHeads, k, w, kept, ws, ws_bytes, nullptr));
        const float c = t.StopMs();
        if (rep > 0) {
          ms[0] += a / 3;
          ms[1] += b / 3;
          ms[2] += c / 3;
        }
      }
      std::printf("| %lld | %lld | %.3f | %.3f | %.3f | %.3f |\n", static_cast<long long>(n),
                  static_cast<long long>(budget), ms[0], ms[1], ms[2], ms[0] + ms[1] + ms[2]);
      Free(ws);
      Free(kept);
    }
    Free(q);
    Free(keys);
    Free(scores);
    Free(avg);
  }
}

// bf16 cuBLAS products of Llama-3-8B's projection shapes at prefill sizes.
void BenchGemm() {
  Blas* raw = nullptr;
  CHECK(Blas::Create(nullptr, &raw));
  std::printf(
      "\n| rows x cols (weight) | tokens | ms | TFLOP/s (bf16 in, fp32 acc) "
      "|\n|---|---|---|---|\n");
  struct S {
    int64_t rows, cols, tokens;
  };
  for (S s : {S{4096, 4096, 8192}, S{14336, 4096, 8192}, S{4096, 14336, 8192}, S{4096, 4096, 64}}) {
    uint16_t *w = nullptr, *x = nullptr;
    float* y = nullptr;
    CHECK(Malloc(reinterpret_cast<void**>(&w), size_t(s.rows) * s.cols * 2));
    CHECK(Malloc(reinterpret_cast<void**>(&x), size_t(s.tokens) * s.cols * 2));
    CHECK(Malloc(reinterpret_cast<void**>(&y), size_t(s.tokens) * s.rows * 4));
    CHECK(Memset(w, 0, size_t(s.rows) * s.cols * 2));
    CHECK(Memset(x, 0, size_t(s.tokens) * s.cols * 2));
    CHECK(raw->MatMul16(Dtype::kBf16, w, x, s.rows, s.cols, s.tokens, y));
    Timer t;
    t.Start();
    for (int i = 0; i < 10; ++i)
      CHECK(raw->MatMul16(Dtype::kBf16, w, x, s.rows, s.cols, s.tokens, y));
    const float ms = t.StopMs() / 10;
    std::printf("| %lld x %lld | %lld | %.3f | %.0f |\n", static_cast<long long>(s.rows),
                static_cast<long long>(s.cols), static_cast<long long>(s.tokens), ms,
                2.0 * s.rows * s.cols * s.tokens / (ms / 1000.0) / 1e12);
    Free(w);
    Free(x);
    Free(y);
  }
  delete raw;
}

}  // namespace

int main() {
  int count = 0;
  const int e = DeviceCount(&count);
  if (e != 0 || count == 0) {
    std::fprintf(stderr, "no CUDA device: %s\n", ErrorString(e));
    return 1;
  }
  const double bw = CopyBandwidthGBs();
  if (bw <= 0.0) {
    std::fprintf(stderr, "could not allocate the copy-bandwidth buffers\n");
    return 1;
  }
  std::printf("device-to-device copy bandwidth: %.0f GB/s (read + write)\n", bw);
  const size_t block_floats = size_t{2} * kKvHeads * kBlock * kHeadDim;
  const size_t max_entries = size_t{64} * 8192;
  const size_t pool_blocks = max_entries / kBlock;
  float* pool = nullptr;
  CHECK(Malloc(reinterpret_cast<void**>(&pool), pool_blocks * block_floats * 4));
  CHECK(Memset(pool, 0, pool_blocks * block_floats * 4));
  std::vector<float*> bufs(3);
  const size_t q_floats = size_t{64} * kHeads * kHeadDim;
  for (int i = 0; i < 2; ++i) CHECK(Malloc(reinterpret_cast<void**>(&bufs[i]), q_floats * 4));
  CHECK(Malloc(reinterpret_cast<void**>(&bufs[2]), q_floats / kHeadDim * 64 * (kHeadDim + 2) * 4));
  CHECK(Memset(bufs[0], 0, q_floats * 4));
  std::printf(
      "\n| KV | batch | entries/seq (layer) | splits | ms/call | KV GB read | GB/s | %% of copy bw "
      "|\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (Dtype kv : {Dtype::kF32, Dtype::kBf16}) {  // the same zeroed pool, read as either
    for (int seqs : {1, 16, 64}) {
      for (int len : {8192, 2048, 128}) {
        const int splits = std::max(1, std::min(64, len / 256 * (seqs == 1 ? 4 : 1)));
        const float ms = TimeDecode(seqs, len, splits, pool, kv, bufs, 20);
        const double gb = static_cast<double>(seqs) * len * kKvHeads * kHeadDim * 2 *
                          static_cast<double>(DtypeBytes(kv)) / 1e9;
        std::printf("| %s | %d | %d | %d | %.4f | %.4f | %.0f | %.0f%% |\n",
                    kv == Dtype::kF32 ? "f32" : "bf16", seqs, len, splits, ms, gb,
                    gb / (ms / 1000.0), 100.0 * gb / (ms / 1000.0) / (bw / 2));
      }
    }
  }
  std::printf(
      "\n(8192 entries = a full 8K context; 2048 and 128 = PyramidKV budgets B per layer.)\n");
  Free(pool);
  for (float* b : bufs) Free(b);
  BenchCompression();
  BenchGemm();
  return 0;
}
