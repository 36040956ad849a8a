#include <cuda_runtime.h>

#include <cfloat>

#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/paged_attention.h"

namespace funnel::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxGroup = 8;
constexpr int kMaxDimPerLane = 8;  // head_dim <= 256

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Partial results of one split: per head m (running max), l (sum of exp), acc[head_dim].
// Layout in the workspace: [(seq * num_heads + head) * num_splits + split] * (head_dim + 2).
template <Dtype D>
__global__ void DecodeSplitKernel(PagedDecodeParams p) {
  using S = Storage<D>;
  const int seq = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = p.num_heads / p.num_kv_heads;
  const int d = p.head_dim;
  const int per_lane = (d + 31) / 32;
  const int len = p.kv_lens[seq];
  const int chunk = (p.max_kv_len + p.num_splits - 1) / p.num_splits;
  const int begin = split * chunk;
  const int end = min(len, begin + chunk);
  const int64_t block_elems = 2LL * p.num_kv_heads * p.block_size * d;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const auto* pool = static_cast<const typename S::T*>(p.pool);

  float q[kMaxGroup][kMaxDimPerLane], acc[kMaxGroup][kMaxDimPerLane];
  float m[kMaxGroup], l[kMaxGroup];
  for (int g = 0; g < group; ++g) {
    const float* qh = p.q + (static_cast<int64_t>(seq) * p.num_heads + kv_head * group + g) * d;
    for (int i = 0; i < per_lane; ++i) {
      const int x = lane + 32 * i;
      q[g][i] = x < d ? qh[x] * p.scale : 0.0f;
      acc[g][i] = 0.0f;
    }
    m[g] = -FLT_MAX;
    l[g] = 0.0f;
  }
  for (int j = begin + warp; j < end; j += kWarps) {
    const auto* block = pool + static_cast<int64_t>(table[j / p.block_size]) * block_elems;
    const int slot = j % p.block_size;
    const auto* k = block + (static_cast<int64_t>(kv_head) * p.block_size + slot) * d;
    const auto* v = k + static_cast<int64_t>(p.num_kv_heads) * p.block_size * d;
    float kr[kMaxDimPerLane], vr[kMaxDimPerLane];
    for (int i = 0; i < per_lane; ++i) {
      const int x = lane + 32 * i;
      kr[i] = x < d ? S::Load(k + x) : 0.0f;
      vr[i] = x < d ? S::Load(v + x) : 0.0f;
    }
    for (int g = 0; g < group; ++g) {
      float dot = 0.0f;
      for (int i = 0; i < per_lane; ++i) dot += q[g][i] * kr[i];
      const float s = WarpSum(dot);
      const float m_new = fmaxf(m[g], s);
      const float correction = __expf(m[g] - m_new);
      const float pj = __expf(s - m_new);
      l[g] = l[g] * correction + pj;
      for (int i = 0; i < per_lane; ++i) acc[g][i] = acc[g][i] * correction + pj * vr[i];
      m[g] = m_new;
    }
  }
  // Combine the warps of this block through shared memory, then write the split's partial.
  __shared__ float sm_m[kWarps][kMaxGroup], sm_l[kWarps][kMaxGroup];
  extern __shared__ float sm_acc[];  // [kWarps][group][d]
  for (int g = 0; g < group; ++g) {
    if (lane == 0) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
    for (int i = 0; i < per_lane; ++i) {
      const int x = lane + 32 * i;
      if (x < d) sm_acc[(warp * group + g) * d + x] = acc[g][i];
    }
  }
  __syncthreads();
  const int stride = d + 2;
  for (int idx = threadIdx.x; idx < group * d; idx += blockDim.x) {
    const int g = idx / d, x = idx % d;
    float mm = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, sm_m[w][g]);
    float ll = 0.0f, aa = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const float c = sm_l[w][g] > 0.0f ? __expf(sm_m[w][g] - mm) : 0.0f;
      ll += sm_l[w][g] * c;
      aa += sm_acc[(w * group + g) * d + x] * c;
    }
    const int head = kv_head * group + g;
    float* part = p.workspace + ((static_cast<int64_t>(seq) * p.num_heads + head) * p.num_splits + split) * stride;
    part[2 + x] = aa;
    if (x == 0) {
      part[0] = mm;
      part[1] = ll;
    }
  }
}

__global__ void DecodeCombineKernel(PagedDecodeParams p) {
  const int seq = blockIdx.x, head = blockIdx.y;
  const int d = p.head_dim, stride = d + 2;
  const float* parts = p.workspace + (static_cast<int64_t>(seq) * p.num_heads + head) * p.num_splits * stride;
  float mm = -FLT_MAX;
  for (int s = 0; s < p.num_splits; ++s) {
    if (parts[s * stride + 1] > 0.0f) mm = fmaxf(mm, parts[s * stride]);
  }
  for (int x = threadIdx.x; x < d; x += blockDim.x) {
    float ll = 0.0f, aa = 0.0f;
    for (int s = 0; s < p.num_splits; ++s) {
      const float* part = parts + s * stride;
      if (part[1] <= 0.0f) continue;
      const float c = __expf(part[0] - mm);
      ll += part[1] * c;
      aa += part[2 + x] * c;
    }
    p.out[(static_cast<int64_t>(seq) * p.num_heads + head) * d + x] = aa / ll;
  }
}

template <Dtype D>
__global__ void AppendKvKernel(const float* k, const float* v, const int64_t* slots,
                               int32_t kv_heads, int32_t head_dim, int32_t block_size,
                               void* pool_bits) {
  using S = Storage<D>;
  auto* pool = static_cast<typename S::T*>(pool_bits);
  const int64_t r = blockIdx.x;
  const int64_t slot = slots[r];
  const int64_t block = slot / block_size, s = slot % block_size;
  const int64_t block_elems = 2LL * kv_heads * block_size * head_dim;
  for (int idx = threadIdx.x; idx < kv_heads * head_dim; idx += blockDim.x) {
    const int h = idx / head_dim, x = idx % head_dim;
    auto* kdst =
        pool + block * block_elems + (static_cast<int64_t>(h) * block_size + s) * head_dim + x;
    S::Store(kdst, k[r * kv_heads * head_dim + idx]);
    S::Store(kdst + static_cast<int64_t>(kv_heads) * block_size * head_dim,
             v[r * kv_heads * head_dim + idx]);
  }
}

// One block per entry e < count: its K and V rows of every KV head into the workspace.
template <Dtype D>
__global__ void ReadEntriesKernel(const void* pool_bits, const int32_t* table, int32_t block_size,
                                  int32_t kv_heads, int32_t head_dim, int64_t n, float* ws) {
  using S = Storage<D>;
  const auto* pool = static_cast<const typename S::T*>(pool_bits);
  const int64_t e = blockIdx.x;
  const int64_t block_elems = 2LL * kv_heads * block_size * head_dim;
  const auto* block = pool + static_cast<int64_t>(table[e / block_size]) * block_elems;
  const int64_t v_offset = static_cast<int64_t>(kv_heads) * block_size * head_dim;
  for (int idx = threadIdx.x; idx < kv_heads * head_dim; idx += blockDim.x) {
    const int h = idx / head_dim, x = idx % head_dim;
    const auto* k = block + (static_cast<int64_t>(h) * block_size + e % block_size) * head_dim + x;
    float* dst = ws + (static_cast<int64_t>(h) * n + e) * head_dim + x;
    dst[0] = S::Load(k);
    dst[static_cast<int64_t>(kv_heads) * n * head_dim] = S::Load(k + v_offset);
  }
}

}  // namespace

int64_t PagedDecodeWorkspaceFloats(const PagedDecodeParams& p) {
  return static_cast<int64_t>(p.num_seqs) * p.num_heads * p.num_splits * (p.head_dim + 2);
}

int LaunchPagedDecodeAttention(const PagedDecodeParams& p, void* stream) {
  const int group = p.num_kv_heads > 0 ? p.num_heads / p.num_kv_heads : 0;
  if (p.num_seqs <= 0) return 0;
  if (group < 1 || group > kMaxGroup || p.head_dim < 1 || p.head_dim > 32 * kMaxDimPerLane ||
      p.num_splits < 1 || p.max_kv_len < 1 || p.workspace == nullptr) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  auto s = static_cast<cudaStream_t>(stream);
  const bool known = DispatchDtype(p.kv_dtype, [&](auto tag) {
    const size_t smem = static_cast<size_t>(kWarps) * group * p.head_dim * sizeof(float);
    DecodeSplitKernel<decltype(tag)::value>
        <<<dim3(p.num_seqs, p.num_kv_heads, p.num_splits), kWarps * 32, smem, s>>>(p);
  });
  if (!known) return static_cast<int>(cudaErrorInvalidValue);
  DecodeCombineKernel<<<dim3(p.num_seqs, p.num_heads), 128, 0, s>>>(p);
  return static_cast<int>(cudaGetLastError());
}

int LaunchAppendKv(const float* k, const float* v, const int64_t* slots, int64_t rows,
                   int32_t num_kv_heads, int32_t head_dim, int32_t block_size, void* pool,
                   Dtype kv_dtype, void* stream) {
  if (rows <= 0) return 0;
  const dim3 grid(static_cast<unsigned>(rows));
  auto s = static_cast<cudaStream_t>(stream);
  const bool known = DispatchDtype(kv_dtype, [&](auto tag) {
    AppendKvKernel<decltype(tag)::value>
        <<<grid, 128, 0, s>>>(k, v, slots, num_kv_heads, head_dim, block_size, pool);
  });
  if (!known) return static_cast<int>(cudaErrorInvalidValue);
  return static_cast<int>(cudaGetLastError());
}

int LaunchReadEntries(const void* pool, Dtype kv_dtype, const int32_t* table, int32_t block_size,
                      int64_t count, int32_t num_kv_heads, int32_t head_dim, int64_t n,
                      float* workspace, void* stream) {
  if (count <= 0) return 0;
  if (count > n || block_size < 1) return static_cast<int>(cudaErrorInvalidValue);
  const dim3 grid(static_cast<unsigned>(count));
  auto s = static_cast<cudaStream_t>(stream);
  const bool known = DispatchDtype(kv_dtype, [&](auto tag) {
    ReadEntriesKernel<decltype(tag)::value>
        <<<grid, 128, 0, s>>>(pool, table, block_size, num_kv_heads, head_dim, n, workspace);
  });
  if (!known) return static_cast<int>(cudaErrorInvalidValue);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace funnel::cuda
