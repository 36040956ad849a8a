// Storage formats of device arrays (weight matrices, the KV pool). Interfaces pass such arrays
// as void pointers (raw bits) with their Dtype; arithmetic is always fp32.
#pragma once

#include <cstdint>

#include "kernels/cpu/convert.h"

namespace funnel::cuda {

enum class Dtype : int32_t { kF32 = 0, kBf16 = 1, kF16 = 2 };

constexpr int64_t DtypeBytes(Dtype t) { return t == Dtype::kF32 ? 4 : 2; }

// Host twins of the 16-bit formats (kernels/cpu/convert.h, as the device rounds): the bits of x
// as `t` (kBf16 or kF16), round to nearest even; and the value of such bits.
inline uint16_t HostNarrow(float x, Dtype t) {
  return t == Dtype::kBf16 ? Fp32ToBf16(x) : Fp32ToFp16(x);
}
inline float HostWiden(uint16_t bits, Dtype t) {
  return t == Dtype::kBf16 ? Bf16ToFp32(bits) : Fp16ToFp32(bits);
}

}  // namespace funnel::cuda
