#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/kv_compress.h"

namespace funnel::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float BlockReduce(float v, float* shared, bool is_max) {
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / 32 ? shared[lane] : (is_max ? -FLT_MAX : 0.0f);
    for (int o = 16; o > 0; o >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, v, o);
      v = is_max ? fmaxf(v, other) : v + other;
    }
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  return shared[0];
}

// One block per (query row, query head): row r sits at position first + r and sees keys
// [0, first + r]; three passes over them (max, sum, add), adding its fp32 softmax to
// scores[head][j] for j < min(prefix, first + r + 1).
__global__ void ColumnScoresKernel(const float* q_rows, const float* keys, int64_t n, int64_t first,
                                   int64_t prefix, int32_t num_heads, int32_t num_kv_heads,
                                   int32_t d, float scale, float* scores) {
  __shared__ float shared[32];
  extern __shared__ float q[];  // [d]
  const int64_t row = blockIdx.x;
  const int head = blockIdx.y;
  const int kv = head / (num_heads / num_kv_heads);
  const int64_t visible = first + row + 1;
  const int64_t scored = visible < prefix ? visible : prefix;
  const float* qh = q_rows + (row * num_heads + head) * d;
  for (int x = threadIdx.x; x < d; x += blockDim.x) q[x] = qh[x] * scale;
  __syncthreads();
  const float* kh = keys + static_cast<int64_t>(kv) * n * d;
  auto logit = [&](int64_t j) {
    float s = 0.0f;
    for (int x = 0; x < d; ++x) s += q[x] * kh[j * d + x];
    return s;
  };
  float mx = -FLT_MAX;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) mx = fmaxf(mx, logit(j));
  mx = BlockReduce(mx, shared, true);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) sum += __expf(logit(j) - mx);
  sum = BlockReduce(sum, shared, false);
  const float inv = 1.0f / sum;
  float* out = scores + static_cast<int64_t>(head) * prefix;
  for (int64_t j = threadIdx.x; j < scored; j += blockDim.x) {
    atomicAdd(out + j, __expf(logit(j) - mx) * inv);
  }
}

// Zeroes scores [num_heads][prefix], then adds the softmax of `rows` query rows starting at
// position `first` (see ColumnScoresKernel).
int LaunchColumnScores(const float* q_rows, int64_t rows, int64_t first, const float* keys,
                       int64_t n, int64_t prefix, int32_t num_heads, int32_t num_kv_heads,
                       int32_t head_dim, float scale, float* scores, cudaStream_t s) {
  if (rows < 1 || first + rows > n || prefix < 0 || prefix > n || num_kv_heads < 1 ||
      num_heads % num_kv_heads != 0 || num_heads > 65535 || rows > INT32_MAX) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  cudaMemsetAsync(scores, 0, static_cast<size_t>(num_heads) * prefix * sizeof(float), s);
  if (prefix == 0) return static_cast<int>(cudaGetLastError());
  ColumnScoresKernel<<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(num_heads)),
                       kThreads, head_dim * sizeof(float), s>>>(
      q_rows, keys, n, first, prefix, num_heads, num_kv_heads, head_dim, scale, scores);
  return static_cast<int>(cudaGetLastError());
}

__global__ void PoolAverageKernel(const float* scores, int64_t prefix, int32_t group,
                                  int32_t kernel, bool max_pool, float* out) {
  const int kv = blockIdx.y;
  const int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (j >= prefix) return;
  const int half = kernel / 2;
  const int64_t lo = j - half < 0 ? 0 : j - half;
  const int64_t hi = j + half >= prefix ? prefix - 1 : j + half;
  float total = 0.0f;
  for (int g = 0; g < group; ++g) {
    const float* s = scores + (static_cast<int64_t>(kv) * group + g) * prefix;
    float v = max_pool ? -FLT_MAX : 0.0f;
    for (int64_t i = lo; i <= hi; ++i) v = max_pool ? fmaxf(v, s[i]) : v + s[i];
    total += max_pool ? v : v / static_cast<float>(kernel);
  }
  out[static_cast<int64_t>(kv) * prefix + j] = total / static_cast<float>(group);
}

// Order-preserving unsigned key of a float: larger float, larger key.
__device__ __forceinline__ uint32_t OrderKey(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Exclusive prefix sum of `v` over the block (blockDim.x == kTopKThreads); *total gets the sum.
constexpr int kTopKThreads = 1024;
__device__ int BlockExclusiveScan(int v, int* total) {
  __shared__ int warp_sums[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = warp_sums[lane];
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  *total = warp_sums[31];
  return x - v + (warp > 0 ? warp_sums[warp - 1] : 0);
}

__device__ int64_t BlockCount(bool pred) {
  int total = 0;
  BlockExclusiveScan(pred ? 1 : 0, &total);
  return total;
}

// One block per KV head: radix-select the k-th largest key (bit by bit from the top), then
// compact in index order: every key above it, and ties at it from the lowest index until k.
// The kept indices come out ascending; the window follows.
__global__ void TopKWithWindowKernel(const float* scores, int64_t prefix, int64_t k, int64_t w,
                                     int32_t* kept) {
  const int kv = blockIdx.x;
  const float* s = scores + static_cast<int64_t>(kv) * prefix;
  int32_t* out = kept + static_cast<int64_t>(kv) * (k + w);
  if (k > 0) {
    uint32_t threshold = 0, mask = 0;
    int64_t remaining = k;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t b = 1u << bit;
      int64_t count = 0;
      for (int64_t t0 = 0; t0 < prefix; t0 += blockDim.x) {
        const int64_t j = t0 + threadIdx.x;
        bool match = false;
        if (j < prefix) {
          const uint32_t key = OrderKey(s[j]);
          match = (key & mask) == threshold && (key & b) != 0;
        }
        count += BlockCount(match);
      }
      if (count >= remaining) {
        threshold |= b;
      } else {
        remaining -= count;
      }
      mask |= b;
    }
    // `remaining` ties equal to `threshold` are taken, lowest indices first.
    int64_t out_pos = 0, ties_seen = 0;
    for (int64_t t0 = 0; t0 < prefix; t0 += blockDim.x) {
      const int64_t j = t0 + threadIdx.x;
      const uint32_t key = j < prefix ? OrderKey(s[j]) : 0;
      const bool tie = j < prefix && key == threshold;
      int ties_total = 0;
      const int tie_rank = BlockExclusiveScan(tie ? 1 : 0, &ties_total);
      const bool sel = (j < prefix && key > threshold) || (tie && ties_seen + tie_rank < remaining);
      int sel_total = 0;
      const int pos = BlockExclusiveScan(sel ? 1 : 0, &sel_total);
      if (sel) out[out_pos + pos] = static_cast<int32_t>(j);
      out_pos += sel_total;
      ties_seen += ties_total;
    }
  }
  for (int64_t e = threadIdx.x; e < w; e += blockDim.x)
    out[k + e] = static_cast<int32_t>(prefix + e);
}

template <Dtype D>
__global__ void GatherKeptKernel(const float* keys, const float* values, int64_t n,
                                 const int32_t* kept, int64_t count, int32_t kv_heads, int32_t d,
                                 const int32_t* table, int32_t block_size, void* pool_bits) {
  using S = Storage<D>;
  auto* pool = static_cast<typename S::T*>(pool_bits);
  const int64_t e = blockIdx.x;
  const int kv = blockIdx.y;
  const int64_t src = kept[kv * count + e];
  const int64_t block_elems = 2LL * kv_heads * block_size * d;
  auto* kdst = pool + static_cast<int64_t>(table[e / block_size]) * block_elems +
               (static_cast<int64_t>(kv) * block_size + e % block_size) * d;
  auto* vdst = kdst + static_cast<int64_t>(kv_heads) * block_size * d;
  const float* ksrc = keys + (static_cast<int64_t>(kv) * n + src) * d;
  const float* vsrc = values + (static_cast<int64_t>(kv) * n + src) * d;
  for (int x = threadIdx.x; x < d; x += blockDim.x) {
    S::Store(kdst + x, ksrc[x]);
    S::Store(vdst + x, vsrc[x]);
  }
}

}  // namespace

int LaunchWindowScores(const float* q_window, const float* keys, int64_t n, int64_t w,
                       int32_t num_heads, int32_t num_kv_heads, int32_t head_dim, float scale,
                       float* scores, void* stream) {
  if (w < 1 || w > n) return static_cast<int>(cudaErrorInvalidValue);
  return LaunchColumnScores(q_window, w, n - w, keys, n, n - w, num_heads, num_kv_heads, head_dim,
                            scale, scores, static_cast<cudaStream_t>(stream));
}

int LaunchH2oScores(const float* q_all, const float* keys, int64_t n, int64_t w, int32_t num_heads,
                    int32_t num_kv_heads, int32_t head_dim, float scale, float* scores,
                    void* stream) {
  if (w < 1 || w > n) return static_cast<int>(cudaErrorInvalidValue);
  return LaunchColumnScores(q_all, n, 0, keys, n, n - w, num_heads, num_kv_heads, head_dim, scale,
                            scores, static_cast<cudaStream_t>(stream));
}

int LaunchPoolAndAverage(const float* scores, int64_t prefix, int32_t num_heads,
                         int32_t num_kv_heads, int32_t kernel, bool max_pool, float* out,
                         void* stream) {
  if (prefix <= 0) return 0;
  if (kernel < 1 || kernel % 2 == 0) return static_cast<int>(cudaErrorInvalidValue);
  const unsigned blocks = static_cast<unsigned>((prefix + kThreads - 1) / kThreads);
  PoolAverageKernel<<<dim3(blocks, num_kv_heads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      scores, prefix, num_heads / num_kv_heads, kernel, max_pool, out);
  return static_cast<int>(cudaGetLastError());
}

size_t TopKWorkspaceBytes(int64_t, int32_t, int64_t) { return 0; }

int LaunchTopKWithWindow(const float* scores, int64_t prefix, int32_t num_kv_heads, int64_t k,
                         int64_t w, int32_t* kept, void*, size_t, void* stream) {
  if (k < 0 || k > prefix || w < 0 || num_kv_heads < 1)
    return static_cast<int>(cudaErrorInvalidValue);
  if (k + w == 0) return 0;
  TopKWithWindowKernel<<<num_kv_heads, kTopKThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      scores, prefix, k, w, kept);
  return static_cast<int>(cudaGetLastError());
}

int LaunchGatherKept(const float* keys, const float* values, int64_t n, const int32_t* kept,
                     int64_t count, int32_t num_kv_heads, int32_t head_dim, const int32_t* table,
                     int32_t block_size, void* pool, Dtype kv_dtype, void* stream) {
  if (count <= 0) return 0;
  const dim3 grid(static_cast<unsigned>(count), num_kv_heads);
  auto s = static_cast<cudaStream_t>(stream);
  const bool known = DispatchDtype(kv_dtype, [&](auto tag) {
    GatherKeptKernel<decltype(tag)::value><<<grid, 128, 0, s>>>(
        keys, values, n, kept, count, num_kv_heads, head_dim, table, block_size, pool);
  });
  if (!known) return static_cast<int>(cudaErrorInvalidValue);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace funnel::cuda
