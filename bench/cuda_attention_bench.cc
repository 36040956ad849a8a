// funnel-bench-cuda-attention: paged decode attention on the GPU against the HBM bound.
//
// Llama-3-8B attention shape (32 query heads, 8 KV heads, head_dim 128), fp32 KV, block 16.
// For each batch size and context length (all sequences the same length, K/V filled
// synthetically), times one decode attention call for one layer and compares the bytes it must
// read (K and V of every entry) with the measured device-to-device copy bandwidth. Also shows
// what a PyramidKV cache (B entries per layer on average) reads instead of the full cache.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/device.h"
#include "kernels/cuda/paged_attention.h"

namespace {

using namespace funnel::cuda;

#define CHECK(expr)                                                                      \
  do {                                                                                   \
    const int e_ = (expr);                                                               \
    if (e_ != 0) {                                                                       \
      std::fprintf(stderr, "%s failed: %s\n", #expr, ErrorString(e_));                   \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128, kBlock = 16;

double CopyBandwidthGBs() {
  const size_t bytes = size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  CHECK(Malloc(&a, bytes));
  CHECK(Malloc(&b, bytes));
  CHECK(Memset(a, 1, bytes));
  CHECK(CopyOnDevice(b, a, bytes));
  Timer t;
  t.Start();
  for (int i = 0; i < 10; ++i) CHECK(CopyOnDevice(b, a, bytes));
  const float ms = t.StopMs();
  Free(a);
  Free(b);
  return 2.0 * bytes * 10 / (ms / 1000.0) / 1e9;  // read + write
}

// Median ms of one decode attention call over `reps`.
float TimeDecode(int seqs, int len, int splits, float* pool, std::vector<float*> bufs, int reps) {
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

}  // namespace

int main() {
  int count = 0;
  const int e = DeviceCount(&count);
  if (e != 0 || count == 0) {
    std::fprintf(stderr, "no CUDA device: %s\n", ErrorString(e));
    return 1;
  }
  const double bw = CopyBandwidthGBs();
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
  std::printf("\n| batch | entries/seq (layer) | splits | ms/call | KV GB read | GB/s | %% of copy bw |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (int seqs : {1, 16, 64}) {
    for (int len : {8192, 2048, 128}) {
      const int splits = std::max(1, std::min(64, len / 256 * (seqs == 1 ? 4 : 1)));
      const float ms = TimeDecode(seqs, len, splits, pool, bufs, 20);
      const double gb = static_cast<double>(seqs) * len * kKvHeads * kHeadDim * 2 * 4 / 1e9;
      std::printf("| %d | %d | %d | %.4f | %.4f | %.0f | %.0f%% |\n", seqs, len, splits, ms, gb,
                  gb / (ms / 1000.0), 100.0 * gb / (ms / 1000.0) / (bw / 2));
    }
  }
  std::printf("\n(8192 entries = a full 8K context; 2048 and 128 = PyramidKV budgets B per layer.)\n");
  Free(pool);
  for (float* b : bufs) Free(b);
  return 0;
}
