// Scalar-type conversions and row dequantization for weight matrices.
#pragma once

#include <cstdint>
#include <cstring>

namespace funnel {

// Element types of weight matrices the CPU kernels read directly (values match ggml's).
enum class WeightType : uint32_t { kF32 = 0, kF16 = 1, kQ8_0 = 8, kBF16 = 30 };

float Fp16ToFp32(uint16_t h);
uint16_t Fp32ToFp16(float f);  // round to nearest even, saturating to inf

inline float Bf16ToFp32(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
uint16_t Fp32ToBf16(float f);  // round to nearest even

// Bytes of one row of `cols` elements (cols must be a multiple of 32 for Q8_0).
int64_t RowBytes(WeightType type, int64_t cols);

// Converts `n` elements of `type` starting at `src` to fp32 (n multiple of 32 for Q8_0).
void DequantizeRow(WeightType type, const void* src, float* dst, int64_t n);

// Q8_0 encoding of `n` floats (n multiple of 32) into 34-byte blocks, as ggml does it.
void QuantizeRowQ8_0(const float* src, void* dst, int64_t n);

}  // namespace funnel
