// Tiled paged prefill attention. One thread block (4 warps) per (q-tile, sequence, KV head):
// the tile holds up to kMaxQv query vectors (rows x the GQA group sharing that KV head), staged
// pre-scaled in shared memory. The block walks the KV entries its last row can see in tiles of
// kTileK: K (rows padded by one float, so that lane j reading entry j is bank-conflict free) and
// V go to shared memory, then each warp updates its query vectors with an online softmax:
// lane j scores entry j, the warp reduces max/sum, and lane x accumulates output dims x + 32c.
// Instances (explicit, rule 15): head_dim <= 32, 64, 128, 256 (kDpl = 1, 2, 4, 8 dims per lane),
// each for the pool formats fp32, bf16 and fp16 (widened to fp32 when staged).
#include <cuda_runtime.h>

#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/prefill_attention.h"

namespace funnel::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxQv = kMaxPrefillGroup;  // query vectors per block
constexpr int kQvPerWarp = kMaxQv / kWarps;
constexpr int kTileK = 32;  // KV entries per tile: one per lane
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

size_t SharedBytes(int d) {
  return sizeof(float) * (static_cast<size_t>(kMaxQv) * d + static_cast<size_t>(kTileK) * (d + 1) +
                          static_cast<size_t>(kTileK) * d);
}

// The rows of one q-tile: where they start in q/out and which entries each one sees.
struct TileRows {
  int first_row;  // absolute row in q/out
  int rows;       // query rows in this tile
  int offset;     // row r of the tile sees entries [0, offset + r]
  int kv_end;     // exclusive end of the entries any row of the tile sees
};

__device__ __forceinline__ TileRows LocateTile(const PagedPrefillParams& p, int seq, int tile,
                                               int rows_per_tile) {
  const int begin = p.q_indptr[seq], q_len = p.q_indptr[seq + 1] - begin;
  const int row0 = tile * rows_per_tile;
  TileRows t;
  t.first_row = begin + row0;
  t.rows = min(rows_per_tile, q_len - row0);
  const int kv_len = p.kv_lens[seq];
  t.offset = kv_len - q_len + row0;
  t.kv_end = min(kv_len, t.offset + max(t.rows, 0));
  return t;
}

// Query vector qv of the tile = (row qv / group, head kv_head * group + qv % group).
__device__ __forceinline__ int64_t QvOffset(const PagedPrefillParams& p, const TileRows& t,
                                            int kv_head, int group, int qv) {
  const int64_t row = t.first_row + qv / group;
  return (row * p.num_heads + kv_head * group + qv % group) * p.head_dim;
}

template <Dtype D>
__device__ __forceinline__ void LoadKvTile(const PagedPrefillParams& p, const int32_t* table,
                                           int kv_head, int t0, int n, float* sk, float* sv) {
  using S = Storage<D>;
  const int d = p.head_dim, bs = p.block_size;
  const int64_t block_elems = 2LL * p.num_kv_heads * bs * d;
  const int64_t v_offset = static_cast<int64_t>(p.num_kv_heads) * bs * d;
  const auto* pool = static_cast<const typename S::T*>(p.pool);
  for (int idx = threadIdx.x; idx < n * d; idx += kThreads) {
    const int j = idx / d, x = idx % d, e = t0 + j;
    const auto* k = pool + static_cast<int64_t>(table[e / bs]) * block_elems +
                    (static_cast<int64_t>(kv_head) * bs + e % bs) * d + x;
    sk[j * (d + 1) + x] = S::Load(k);
    sv[j * d + x] = S::Load(k + v_offset);
  }
}

template <int kDpl>
struct Accumulator {
  float m[kQvPerWarp], l[kQvPerWarp], acc[kQvPerWarp][kDpl];
};

// One warp's online-softmax update of its query vector i (tile vector qv) with a staged tile of
// n entries starting at t0; entries at or past `visible` are masked.
template <int kDpl>
__device__ __forceinline__ void UpdateQv(Accumulator<kDpl>& a, int i, const float* qrow,
                                         const float* sk, const float* sv, int d, int t0, int n,
                                         int visible) {
  const int lane = threadIdx.x % 32;
  float s = -INFINITY;
  if (lane < n && t0 + lane < visible) {
    const float* krow = sk + lane * (d + 1);
    float dot = 0.0f;
#pragma unroll 8
    for (int x = 0; x < d; ++x) dot += qrow[x] * krow[x];
    s = dot;
  }
  const float tile_max = WarpMax(s);
  if (tile_max == -INFINITY) return;  // warp-uniform: nothing visible in this tile
  const float m_new = fmaxf(a.m[i], tile_max);
  const float correction = expf(a.m[i] - m_new);  // 0 while m is still -inf
  const float pj = s == -INFINITY ? 0.0f : expf(s - m_new);
  a.l[i] = a.l[i] * correction + WarpSum(pj);
#pragma unroll
  for (int c = 0; c < kDpl; ++c) a.acc[i][c] *= correction;
  for (int j = 0; j < n; ++j) {
    const float pb = __shfl_sync(kFull, pj, j);
#pragma unroll
    for (int c = 0; c < kDpl; ++c) {
      const int x = lane + 32 * c;
      if (x < d) a.acc[i][c] += pb * sv[j * d + x];
    }
  }
  a.m[i] = m_new;
}

template <int kDpl, Dtype D>
__global__ void __launch_bounds__(kThreads) PrefillKernel(PagedPrefillParams p, int rows_per_tile) {
  const int seq = blockIdx.y, kv_head = blockIdx.z;
  const TileRows t = LocateTile(p, seq, blockIdx.x, rows_per_tile);
  if (t.rows <= 0) return;  // block-uniform: past this sequence's queries
  const int group = p.num_heads / p.num_kv_heads, d = p.head_dim;
  const int num_qv = t.rows * group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  extern __shared__ float smem[];
  float* sq = smem;                   // [kMaxQv][d], scaled
  float* sk = sq + kMaxQv * d;        // [kTileK][d + 1]
  float* sv = sk + kTileK * (d + 1);  // [kTileK][d]
  for (int idx = threadIdx.x; idx < num_qv * d; idx += kThreads) {
    sq[idx] = p.q[QvOffset(p, t, kv_head, group, idx / d) + idx % d] * p.scale;
  }
  Accumulator<kDpl> a;
#pragma unroll
  for (int i = 0; i < kQvPerWarp; ++i) {
    a.m[i] = -INFINITY;
    a.l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < kDpl; ++c) a.acc[i][c] = 0.0f;
  }
  for (int t0 = 0; t0 < t.kv_end; t0 += kTileK) {
    const int n = min(kTileK, t.kv_end - t0);
    __syncthreads();  // the previous tile is consumed (and Q is staged)
    LoadKvTile<D>(p, table, kv_head, t0, n, sk, sv);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kQvPerWarp; ++i) {
      const int qv = warp + kWarps * i;
      if (qv < num_qv) {
        UpdateQv(a, i, sq + qv * d, sk, sv, d, t0, n, t.offset + qv / group + 1);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kQvPerWarp; ++i) {
    const int qv = warp + kWarps * i;
    if (qv >= num_qv) continue;
    float* out = p.out + QvOffset(p, t, kv_head, group, qv);
    const float inv = a.l[i] > 0.0f ? 1.0f / a.l[i] : 0.0f;
#pragma unroll
    for (int c = 0; c < kDpl; ++c) {
      const int x = lane + 32 * c;
      if (x < d) out[x] = a.acc[i][c] * inv;
    }
  }
}

template <int kDpl, Dtype D>
int LaunchInstance(const PagedPrefillParams& p, cudaStream_t stream) {
  const int group = p.num_heads / p.num_kv_heads;
  const int rows_per_tile = kMaxQv / group;
  const unsigned tiles = static_cast<unsigned>((p.max_q_len + rows_per_tile - 1) / rows_per_tile);
  const size_t smem = SharedBytes(p.head_dim);
  cudaError_t e = cudaFuncSetAttribute(
      PrefillKernel<kDpl, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (e != cudaSuccess) return static_cast<int>(e);
  PrefillKernel<kDpl, D>
      <<<dim3(tiles, static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.num_kv_heads)),
         kThreads, smem, stream>>>(p, rows_per_tile);
  return static_cast<int>(cudaGetLastError());
}

template <int kDpl>
int Launch(const PagedPrefillParams& p, cudaStream_t stream) {
  int result = static_cast<int>(cudaErrorInvalidValue);
  DispatchDtype(p.kv_dtype,
                [&](auto tag) { result = LaunchInstance<kDpl, decltype(tag)::value>(p, stream); });
  return result;
}

bool Supported(const PagedPrefillParams& p) {
  if (p.num_kv_heads < 1 || p.num_kv_heads > 65535 || p.num_heads % p.num_kv_heads != 0) {
    return false;
  }
  const int group = p.num_heads / p.num_kv_heads;
  return group >= 1 && group <= kMaxQv && p.head_dim >= 1 && p.head_dim <= 256 &&
         p.block_size >= 1 && p.max_blocks_per_seq >= 0 && p.num_seqs <= 65535 &&
         p.max_q_len >= 1 && p.q != nullptr && p.out != nullptr && p.pool != nullptr &&
         p.block_tables != nullptr && p.q_indptr != nullptr && p.kv_lens != nullptr;
}

}  // namespace

int LaunchPagedPrefillAttention(const PagedPrefillParams& p, void* stream) {
  if (p.num_seqs <= 0) return 0;
  if (!Supported(p)) return static_cast<int>(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  if (p.head_dim <= 32) return Launch<1>(p, s);
  if (p.head_dim <= 64) return Launch<2>(p, s);
  if (p.head_dim <= 128) return Launch<4>(p, s);
  return Launch<8>(p, s);
}

}  // namespace funnel::cuda
