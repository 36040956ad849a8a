#include <cuda_runtime.h>

#include "kernels/cpu/random_fill.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/elementwise.h"

namespace funnel::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float BlockSum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  v = threadIdx.x < warps ? shared[threadIdx.x] : 0.0f;
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  return shared[0];
}

__global__ void RmsNormKernel(const float* x, const float* w, float* out, int64_t dim, float eps) {
  __shared__ float shared[32];
  const float* xr = x + blockIdx.x * dim;
  float* orow = out + blockIdx.x * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  const float total = BlockSum(ss, shared);
  const float scale = rsqrtf(total / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = xr[i] * scale * w[i];
}

__global__ void RopeKernel(float* x, const int32_t* positions, int64_t heads, int64_t head_dim,
                           int64_t rot_dim, float theta, bool half_split) {
  const int64_t t = blockIdx.x;
  const int64_t half = rot_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  for (int64_t k = threadIdx.x; k < heads * half; k += blockDim.x) {
    const int64_t h = k / half, i = k % half;
    const float inv_freq = powf(theta, -2.0f * static_cast<float>(i) / static_cast<float>(rot_dim));
    float s, c;
    sincosf(pos * inv_freq, &s, &c);
    float* v = x + (t * heads + h) * head_dim;
    const int64_t a = half_split ? i : 2 * i;
    const int64_t b = half_split ? i + half : 2 * i + 1;
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
  }
}

__global__ void RopeFrequenciesKernel(float* x, const int32_t* positions, int64_t heads,
                                      int64_t head_dim, int64_t rot_dim, const float* inv_freq,
                                      bool half_split) {
  const int64_t t = blockIdx.x;
  const int64_t half = rot_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  for (int64_t k = threadIdx.x; k < heads * half; k += blockDim.x) {
    const int64_t h = k / half, i = k % half;
    float s, c;
    sincosf(pos * inv_freq[i], &s, &c);
    float* v = x + (t * heads + h) * head_dim;
    const int64_t a = half_split ? i : 2 * i;
    const int64_t b = half_split ? i + half : 2 * i + 1;
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
  }
}

__global__ void SwiGluKernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void FillUniformKernel(float* out, int64_t n, uint64_t seed, float bound) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = UniformAt(seed, static_cast<uint64_t>(i), bound);
  }
}

template <Dtype D>
__global__ void ConvertKernel(const float* in, void* out_bits, int64_t n) {
  auto* out = static_cast<typename Storage<D>::T*>(out_bits);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    Storage<D>::Store(out + i, in[i]);
  }
}

template <Dtype D>
__global__ void RoundTripKernel(float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = RoundTrip<D>(x[i]);
  }
}

template <Dtype D>
__global__ void GatherTypedKernel(const void* table_bits, const int32_t* ids, float* out,
                                  int64_t dim) {
  const auto* src = static_cast<const typename Storage<D>::T*>(table_bits) +
                    static_cast<int64_t>(ids[blockIdx.x]) * dim;
  float* dst = out + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = Storage<D>::Load(src + i);
}

int Launched() { return static_cast<int>(cudaGetLastError()); }

// Grid size of the grid-stride element-wise kernels.
unsigned ElementwiseBlocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
}

}  // namespace

int LaunchRmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
                  float eps, void* stream) {
  if (rows <= 0) return 0;
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, weight, out, dim, eps);
  return Launched();
}

int LaunchRope(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
               int64_t rot_dim, float theta, bool half_split, void* stream) {
  if (tokens <= 0) return 0;
  RopeKernel<<<static_cast<unsigned>(tokens), 128, 0, static_cast<cudaStream_t>(stream)>>>(
      x, positions, heads, head_dim, rot_dim, theta, half_split);
  return Launched();
}

int LaunchRopeWithFrequencies(float* x, const int32_t* positions, int64_t tokens, int64_t heads,
                              int64_t head_dim, int64_t rot_dim, const float* inv_freq,
                              bool half_split, void* stream) {
  if (tokens <= 0) return 0;
  RopeFrequenciesKernel<<<static_cast<unsigned>(tokens), 128, 0,
                          static_cast<cudaStream_t>(stream)>>>(x, positions, heads, head_dim,
                                                               rot_dim, inv_freq, half_split);
  return Launched();
}

int LaunchSwiGlu(const float* gate, const float* up, float* out, int64_t n, void* stream) {
  if (n <= 0) return 0;
  SwiGluKernel<<<ElementwiseBlocks(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(gate, up,
                                                                                         out, n);
  return Launched();
}

int LaunchEmbeddingGather(const float* table, const int32_t* ids, float* out, int64_t tokens,
                          int64_t dim, void* stream) {
  return LaunchEmbeddingGatherTyped(table, Dtype::kF32, ids, out, tokens, dim, stream);
}

int LaunchFillUniform(float* out, int64_t n, uint64_t seed, float bound, void* stream) {
  if (n <= 0) return 0;
  FillUniformKernel<<<ElementwiseBlocks(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      out, n, seed, bound);
  return Launched();
}

int LaunchConvert(const float* in, void* out, int64_t n, Dtype to, void* stream) {
  if (n <= 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const bool known = DispatchDtype(to, [&](auto tag) {
    ConvertKernel<decltype(tag)::value><<<ElementwiseBlocks(n), kThreads, 0, s>>>(in, out, n);
  });
  return known ? Launched() : static_cast<int>(cudaErrorInvalidValue);
}

int LaunchRoundTrip(float* x, int64_t n, Dtype to, void* stream) {
  if (n <= 0 || to == Dtype::kF32) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const bool known = DispatchDtype(to, [&](auto tag) {
    RoundTripKernel<decltype(tag)::value><<<ElementwiseBlocks(n), kThreads, 0, s>>>(x, n);
  });
  return known ? Launched() : static_cast<int>(cudaErrorInvalidValue);
}

int LaunchEmbeddingGatherTyped(const void* table, Dtype table_dtype, const int32_t* ids, float* out,
                               int64_t tokens, int64_t dim, void* stream) {
  if (tokens <= 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const bool known = DispatchDtype(table_dtype, [&](auto tag) {
    GatherTypedKernel<decltype(tag)::value>
        <<<static_cast<unsigned>(tokens), kThreads, 0, s>>>(table, ids, out, dim);
  });
  return known ? Launched() : static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace funnel::cuda
