// Device-side loads and stores of each Dtype (kernels/cuda/dtype.h), for kernels templated on the
// storage format. Rounding is to nearest even (bf16 as Fp32ToBf16, fp16 as Fp32ToFp16 of
// kernels/cpu/convert.h; fp16 overflows to inf). Only .cu files include this.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "kernels/cuda/dtype.h"

namespace funnel::cuda {

template <Dtype D>
struct Storage;

template <>
struct Storage<Dtype::kF32> {
  using T = float;
  static __device__ __forceinline__ float Load(const float* p) { return *p; }
  static __device__ __forceinline__ void Store(float* p, float v) { *p = v; }
};

template <>
struct Storage<Dtype::kBf16> {
  using T = __nv_bfloat16;
  static __device__ __forceinline__ float Load(const T* p) { return __bfloat162float(*p); }
  static __device__ __forceinline__ void Store(T* p, float v) { *p = __float2bfloat16_rn(v); }
};

template <>
struct Storage<Dtype::kF16> {
  using T = __half;
  static __device__ __forceinline__ float Load(const T* p) { return __half2float(*p); }
  static __device__ __forceinline__ void Store(T* p, float v) { *p = __float2half_rn(v); }
};

// v as stored in format D and read back.
template <Dtype D>
__device__ __forceinline__ float RoundTrip(float v) {
  typename Storage<D>::T t;
  Storage<D>::Store(&t, v);
  return Storage<D>::Load(&t);
}

// Calls f(std::integral_constant<Dtype, D>{}) for the runtime format d (host code, to pick a
// kernel instance); false, without calling f, for a value outside the enum.
template <typename F>
bool DispatchDtype(Dtype d, F&& f) {
  switch (d) {
    case Dtype::kF32:
      f(std::integral_constant<Dtype, Dtype::kF32>{});
      return true;
    case Dtype::kBf16:
      f(std::integral_constant<Dtype, Dtype::kBf16>{});
      return true;
    case Dtype::kF16:
      f(std::integral_constant<Dtype, Dtype::kF16>{});
      return true;
  }
  return false;
}

}  // namespace funnel::cuda
