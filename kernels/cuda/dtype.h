// Storage formats of device arrays (weight matrices, the KV pool). Interfaces pass such arrays
// as void pointers (raw bits) with their Dtype; arithmetic is always fp32.
#pragma once

#include <cstdint>

namespace funnel::cuda {

enum class Dtype : int32_t { kF32 = 0, kBf16 = 1, kF16 = 2 };

constexpr int64_t DtypeBytes(Dtype t) { return t == Dtype::kF32 ? 4 : 2; }

}  // namespace funnel::cuda
