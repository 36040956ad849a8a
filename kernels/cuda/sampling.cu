// Token choice kernels. One thread block (256 threads) per logits row.
// LaunchArgmax: a strided scan per thread, then warp and block (value, id) reductions.
// LaunchSample: the exact top-k by a 4-pass 8-bit radix select on order-preserving keys of the
// logits (histograms in shared memory; ties at the k-th key go to the lowest ids through a
// per-thread contiguous-chunk scan), a bitonic sort of the <= 1024 candidates in shared memory,
// fp32 weights in parallel, then one thread takes the top-p prefix and the draw in rank order
// (double sums), matching SampleRowReference step for step.
#include <cuda_runtime.h>

#include <climits>

#include "kernels/cuda/sampling.h"

namespace funnel::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxK = kMaxSampleTopK;
constexpr unsigned kFull = 0xffffffffu;

// Higher logit first, then lower id.
__device__ __forceinline__ bool Before(float la, int ia, float lb, int ib) {
  return la > lb || (la == lb && ia < ib);
}

// Larger logit -> larger key (IEEE order; -inf lowest of the non-NaN values; -0 as +0, since
// they compare equal and the tie goes to the lower id).
__device__ __forceinline__ uint32_t OrderKey(float x) {
  const uint32_t u = x == 0.0f ? 0u : __float_as_uint(x);
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}

// Every thread gets the row's argmax (lowest id among equal maxima; 0 if all are -inf).
__device__ int BlockArgmax(const float* row, int vocab) {
  __shared__ float s_val[kWarps];
  __shared__ int s_id[kWarps];
  float best = -INFINITY;
  int id = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = row[i];
    if (Before(v, i, best, id)) {
      best = v;
      id = i;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(kFull, best, o);
    const int j = __shfl_xor_sync(kFull, id, o);
    if (Before(v, j, best, id)) {
      best = v;
      id = j;
    }
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) {
    s_val[warp] = best;
    s_id[warp] = id;
  }
  __syncthreads();
  best = s_val[0];
  id = s_id[0];
  for (int w = 1; w < kWarps; ++w) {
    if (Before(s_val[w], s_id[w], best, id)) {
      best = s_val[w];
      id = s_id[w];
    }
  }
  __syncthreads();  // s_val/s_id may be reused by a later call
  return id == INT_MAX ? 0 : id;
}

__global__ void ArgmaxKernel(const float* logits, int vocab, int32_t* tokens) {
  const int id = BlockArgmax(logits + static_cast<int64_t>(blockIdx.x) * vocab, vocab);
  if (threadIdx.x == 0) tokens[blockIdx.x] = id;
}

// The key of the k-th ranked logit; *take_equal = how many ids holding exactly that key rank
// within the top k. Uniform across the block.
__device__ uint32_t RadixSelect(const float* row, int vocab, int k, int* take_equal) {
  __shared__ unsigned hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_remaining;
  uint32_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) s_remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) hist[b] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const uint32_t key = OrderKey(row[i]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int remaining = s_remaining, digit = 0;
      for (int b = 255; b >= 0; --b) {
        if (static_cast<int>(hist[b]) >= remaining) {
          digit = b;
          break;
        }
        remaining -= static_cast<int>(hist[b]);
      }
      s_remaining = remaining;
      s_prefix = prefix | (static_cast<uint32_t>(digit) << shift);
    }
    __syncthreads();
    prefix = s_prefix;
    mask |= 255u << shift;
  }
  *take_equal = s_remaining;
  return prefix;
}

// Gathers the top k (unsorted) into c_logit/c_id[0, k).
__device__ void GatherTopK(const float* row, int vocab, int k, float* c_logit, int* c_id) {
  __shared__ int s_equal_before[kThreads];
  __shared__ int s_count;
  int take_equal = 0;
  const uint32_t threshold = RadixSelect(row, vocab, k, &take_equal);
  const int chunk = (vocab + kThreads - 1) / kThreads;
  const int begin = min(vocab, threadIdx.x * chunk), end = min(vocab, begin + chunk);
  int equal = 0;
  for (int i = begin; i < end; ++i) equal += OrderKey(row[i]) == threshold ? 1 : 0;
  s_equal_before[threadIdx.x] = equal;
  if (threadIdx.x == 0) s_count = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    int sum = 0;
    for (int t = 0; t < kThreads; ++t) {
      const int e = s_equal_before[t];
      s_equal_before[t] = sum;
      sum += e;
    }
  }
  __syncthreads();
  int rank = s_equal_before[threadIdx.x];
  for (int i = begin; i < end; ++i) {
    const uint32_t key = OrderKey(row[i]);
    const bool take = key > threshold || (key == threshold && rank++ < take_equal);
    if (take) {
      const int slot = atomicAdd(&s_count, 1);
      c_logit[slot] = row[i];
      c_id[slot] = i;
    }
  }
  __syncthreads();
}

// Sorts c_logit/c_id[0, k) into rank order (pads to a power of two with (-inf, INT_MAX)).
__device__ void BitonicSort(int k, float* c_logit, int* c_id) {
  int n = 1;
  while (n < k) n <<= 1;
  for (int i = k + threadIdx.x; i < n; i += kThreads) {
    c_logit[i] = -INFINITY;
    c_id[i] = INT_MAX;
  }
  __syncthreads();
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const bool rank_order = (i & size) == 0;
        const bool swap = rank_order ? Before(c_logit[j], c_id[j], c_logit[i], c_id[i])
                                     : Before(c_logit[i], c_id[i], c_logit[j], c_id[j]);
        if (swap) {
          const float l = c_logit[i];
          c_logit[i] = c_logit[j];
          c_logit[j] = l;
          const int d = c_id[i];
          c_id[i] = c_id[j];
          c_id[j] = d;
        }
      }
      __syncthreads();
    }
  }
}

// Thread 0: the top-p prefix and the draw over the ranked weights w[0, k).
__device__ int DrawRanked(const float* w, const int* c_id, int k, float top_p, float uniform) {
  double total = 0.0;
  for (int j = 0; j < k; ++j) total += w[j];
  const double target = fminf(fmaxf(top_p, 0.0f), 1.0f) * total;
  int kept = 0;
  double mass = 0.0;
  while (kept < k && (kept == 0 || mass < target)) mass += w[kept++];
  const double draw = fminf(fmaxf(uniform, 0.0f), 1.0f) * mass;
  double cumulative = 0.0;
  for (int j = 0; j < kept; ++j) {
    cumulative += w[j];
    if (draw < cumulative) return c_id[j];
  }
  return c_id[kept - 1];
}

__global__ void __launch_bounds__(kThreads) SampleKernel(SampleParams p) {
  __shared__ float c_logit[kMaxK], c_w[kMaxK];
  __shared__ int c_id[kMaxK];
  const int r = blockIdx.x;
  const float* row = p.logits + static_cast<int64_t>(r) * p.vocab;
  const int best = BlockArgmax(row, p.vocab);
  const float t = p.temperature[r];
  if (!(t > 0.0f) || row[best] == -INFINITY) {  // block-uniform
    if (threadIdx.x == 0) p.tokens[r] = best;
    return;
  }
  const int k = max(1, min(p.top_k[r], min(p.vocab, kMaxK)));
  GatherTopK(row, p.vocab, k, c_logit, c_id);
  BitonicSort(k, c_logit, c_id);
  const float max_scaled = c_logit[0] / t;
  for (int j = threadIdx.x; j < k; j += kThreads) c_w[j] = expf(c_logit[j] / t - max_scaled);
  __syncthreads();
  if (threadIdx.x == 0) p.tokens[r] = DrawRanked(c_w, c_id, k, p.top_p[r], p.uniform[r]);
}

}  // namespace

int LaunchArgmax(const float* logits, int32_t rows, int32_t vocab, int32_t* tokens, void* stream) {
  if (rows <= 0) return 0;
  if (vocab < 1 || logits == nullptr || tokens == nullptr) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  ArgmaxKernel<<<static_cast<unsigned>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      logits, vocab, tokens);
  return static_cast<int>(cudaGetLastError());
}

int LaunchSample(const SampleParams& p, void* stream) {
  if (p.rows <= 0) return 0;
  if (p.vocab < 1 || p.logits == nullptr || p.temperature == nullptr || p.top_k == nullptr ||
      p.top_p == nullptr || p.uniform == nullptr || p.tokens == nullptr) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  SampleKernel<<<static_cast<unsigned>(p.rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      p);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace funnel::cuda
