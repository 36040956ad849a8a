#include "kernels/cpu/convert.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace funnel {
namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Independent IEEE binary16 decode: value = (-1)^s * 2^(e-15) * 1.m, subnormals 2^-14 * 0.m.
double RefHalfToDouble(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -24);
  } else if (exp == 0x1f) {
    v = mant == 0 ? std::numeric_limits<double>::infinity()
                  : std::numeric_limits<double>::quiet_NaN();
  } else {
    v = std::ldexp(static_cast<double>(1024 + mant), exp - 25);
  }
  return sign ? -v : v;
}

// Independent bfloat16 decode: 8-bit exponent (bias 127), 7-bit mantissa.
double RefBf16ToDouble(uint16_t b) {
  const int sign = (b >> 15) & 1;
  const int exp = (b >> 7) & 0xff;
  const int mant = b & 0x7f;
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -133);
  } else if (exp == 0xff) {
    v = mant == 0 ? std::numeric_limits<double>::infinity()
                  : std::numeric_limits<double>::quiet_NaN();
  } else {
    v = std::ldexp(static_cast<double>(128 + mant), exp - 134);
  }
  return sign ? -v : v;
}

bool IsHalfNaN(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }
bool IsBf16NaN(uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0; }

// ---------------------------------------------------------------------------------------------
// fp16

TEST(Fp16Test, DecodesEveryBitPattern) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float got = Fp16ToFp32(h);
    const double want = RefHalfToDouble(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << i;
      ASSERT_EQ(std::signbit(got), (i & 0x8000) != 0) << std::hex << i;
    } else {
      // Exact, including the sign of zero.
      ASSERT_EQ(FloatBits(got), FloatBits(static_cast<float>(want))) << std::hex << i;
    }
  }
}

TEST(Fp16Test, KnownValues) {
  EXPECT_EQ(Fp16ToFp32(0x3c00), 1.0f);
  EXPECT_EQ(Fp16ToFp32(0xc000), -2.0f);
  EXPECT_EQ(Fp16ToFp32(0x7bff), 65504.0f);
  EXPECT_EQ(Fp16ToFp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16ToFp32(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(Fp16ToFp32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(Fp16ToFp32(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(Fp32ToFp16(1.0f), 0x3c00);
  EXPECT_EQ(Fp32ToFp16(-2.0f), 0xc000);
  EXPECT_EQ(Fp32ToFp16(0.0f), 0x0000);
  EXPECT_EQ(Fp32ToFp16(-0.0f), 0x8000);
}

TEST(Fp16Test, RoundTripsEveryFiniteHalfExactly) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(Fp32ToFp16(Fp16ToFp32(h)), h) << std::hex << i;
  }
  EXPECT_EQ(Fp32ToFp16(Fp16ToFp32(0x7c00)), 0x7c00);
  EXPECT_EQ(Fp32ToFp16(Fp16ToFp32(0xfc00)), 0xfc00);
}

// Between each pair of adjacent finite halves (including 65504 -> inf): the exact midpoint rounds
// to the even one, anything just off the midpoint to the nearer one. Covers subnormals.
TEST(Fp16Test, RoundsToNearestEven) {
  for (uint32_t lo = 0; lo < 0x7c00; ++lo) {
    const uint32_t hi = lo + 1;
    const double a = RefHalfToDouble(static_cast<uint16_t>(lo));
    // Next magnitude above 65504 is 65536 for rounding purposes (its binade continues).
    const double b = hi == 0x7c00 ? 65536.0 : RefHalfToDouble(static_cast<uint16_t>(hi));
    const float mid = static_cast<float>((a + b) / 2);
    ASSERT_EQ(static_cast<double>(mid), (a + b) / 2) << "midpoint not exact in fp32";
    const uint32_t even = (lo & 1) == 0 ? lo : hi;
    for (uint32_t sign : {0u, 0x8000u}) {
      const float s = sign ? -1.0f : 1.0f;
      ASSERT_EQ(Fp32ToFp16(s * mid), sign | even) << std::hex << lo;
      const float above = std::nextafter(mid, std::numeric_limits<float>::infinity());
      const float below = std::nextafter(mid, 0.0f);
      ASSERT_EQ(Fp32ToFp16(s * above), sign | hi) << std::hex << lo;
      ASSERT_EQ(Fp32ToFp16(s * below), sign | lo) << std::hex << lo;
    }
  }
}

TEST(Fp16Test, OverflowAndSpecials) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(Fp32ToFp16(65504.0f), 0x7bff);
  EXPECT_EQ(Fp32ToFp16(65519.99f), 0x7bff);
  EXPECT_EQ(Fp32ToFp16(65520.0f), 0x7c00);  // tie with odd 0x7bff -> up to inf
  EXPECT_EQ(Fp32ToFp16(1e5f), 0x7c00);
  EXPECT_EQ(Fp32ToFp16(-1e5f), 0xfc00);
  EXPECT_EQ(Fp32ToFp16(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(Fp32ToFp16(inf), 0x7c00);
  EXPECT_EQ(Fp32ToFp16(-inf), 0xfc00);
  EXPECT_TRUE(IsHalfNaN(Fp32ToFp16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(IsHalfNaN(Fp32ToFp16(-std::numeric_limits<float>::quiet_NaN())));
  // NaNs whose payload lives only in the low mantissa bits must not collapse to inf.
  EXPECT_TRUE(IsHalfNaN(Fp32ToFp16(BitsToFloat(0x7f800001))));
  EXPECT_TRUE(IsHalfNaN(Fp32ToFp16(BitsToFloat(0xffc00000))));
  // Underflow: below half the smallest subnormal goes to (signed) zero; the tie to even zero.
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(Fp32ToFp16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(Fp32ToFp16(-std::ldexp(1.0f, -26)), 0x8000);
  EXPECT_EQ(Fp32ToFp16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(Fp32ToFp16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp tie -> even 2
}

// Random floats over many binades: the result is a nearest half (no neighbour is closer).
TEST(Fp16Test, RandomFloatsRoundToNearest) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exp(-30, 17);
  for (int it = 0; it < 200000; ++it) {
    const float f = std::ldexp(mant(rng), exp(rng));
    const uint16_t h = Fp32ToFp16(f);
    const double got = RefHalfToDouble(h);
    if (std::fabs(f) >= 65520.0f) {
      ASSERT_TRUE(std::isinf(got)) << f;
      continue;
    }
    ASSERT_FALSE(std::isinf(got)) << f;
    ASSERT_EQ(std::signbit(got), std::signbit(f)) << f;
    const double err = std::fabs(got - f);
    const uint16_t mag = h & 0x7fff;
    if (mag > 0) {
      ASSERT_LE(err, std::fabs(RefHalfToDouble(static_cast<uint16_t>(mag - 1)) - std::fabs(f)))
          << f;
    }
    if (mag < 0x7bff) {
      ASSERT_LE(err, std::fabs(RefHalfToDouble(static_cast<uint16_t>(mag + 1)) - std::fabs(f)))
          << f;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// bf16

TEST(Bf16Test, DecodesEveryBitPattern) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t b = static_cast<uint16_t>(i);
    const float got = Bf16ToFp32(b);
    const double want = RefBf16ToDouble(b);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << i;
    } else {
      ASSERT_EQ(FloatBits(got), FloatBits(static_cast<float>(want))) << std::hex << i;
    }
  }
}

TEST(Bf16Test, RoundTripsEveryNonNaNExactly) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t b = static_cast<uint16_t>(i);
    if (IsBf16NaN(b)) {
      ASSERT_TRUE(IsBf16NaN(Fp32ToBf16(Bf16ToFp32(b)))) << std::hex << i;
      continue;
    }
    ASSERT_EQ(Fp32ToBf16(Bf16ToFp32(b)), b) << std::hex << i;
  }
}

TEST(Bf16Test, RoundsToNearestEven) {
  // For every adjacent pair of non-NaN bf16 patterns of one sign (including max -> inf), the low
  // 16 bits of an fp32 between them decide: 0x8000 is the tie, one ulp off it picks a side.
  for (uint32_t lo = 0; lo < 0x7f80; ++lo) {
    for (uint32_t sign : {0u, 0x8000u}) {
      const uint32_t base = (sign | lo) << 16;
      const uint32_t even = (lo & 1) == 0 ? lo : lo + 1;
      ASSERT_EQ(Fp32ToBf16(BitsToFloat(base | 0x8000)), sign | even) << std::hex << lo;
      ASSERT_EQ(Fp32ToBf16(BitsToFloat(base | 0x7fff)), sign | lo) << std::hex << lo;
      ASSERT_EQ(Fp32ToBf16(BitsToFloat(base | 0x8001)), sign | (lo + 1)) << std::hex << lo;
      ASSERT_EQ(Fp32ToBf16(BitsToFloat(base | 0xffff)), sign | (lo + 1)) << std::hex << lo;
      ASSERT_EQ(Fp32ToBf16(BitsToFloat(base | 0x0001)), sign | lo) << std::hex << lo;
    }
  }
}

TEST(Bf16Test, SpecialsAndOverflow) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(Fp32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Fp32ToBf16(-0.0f), 0x8000);
  EXPECT_EQ(Fp32ToBf16(inf), 0x7f80);
  EXPECT_EQ(Fp32ToBf16(-inf), 0xff80);
  EXPECT_EQ(Fp32ToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to inf
  EXPECT_EQ(Fp32ToBf16(-std::numeric_limits<float>::max()), 0xff80);
  EXPECT_EQ(Fp32ToBf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  // Every NaN stays a NaN, including payloads only in the bits rounding would drop.
  for (uint32_t bits : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f80ffffu,
                        0x7fffffffu, 0xffffffffu, 0x7f808000u}) {
    const uint16_t b = Fp32ToBf16(BitsToFloat(bits));
    EXPECT_TRUE(IsBf16NaN(b)) << std::hex << bits << " -> " << b;
    EXPECT_EQ(static_cast<uint32_t>(b & 0x8000), (bits >> 16) & 0x8000) << std::hex << bits;
  }
}

// ---------------------------------------------------------------------------------------------
// RowBytes / DequantizeRow

TEST(RowBytesTest, AllTypes) {
  EXPECT_EQ(RowBytes(WeightType::kF32, 40), 160);
  EXPECT_EQ(RowBytes(WeightType::kF16, 40), 80);
  EXPECT_EQ(RowBytes(WeightType::kBF16, 40), 80);
  EXPECT_EQ(RowBytes(WeightType::kQ8_0, 32), 34);
  EXPECT_EQ(RowBytes(WeightType::kQ8_0, 4096), 128 * 34);
}

TEST(DequantizeRowTest, HalfTypesMatchScalarDecodeForAllLengths) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits(0, 0xffff);
  for (int64_t n : {1, 7, 8, 9, 16, 37, 100}) {
    std::vector<uint16_t> src(static_cast<size_t>(n));
    for (auto& s : src) {
      s = static_cast<uint16_t>(bits(rng));
      if ((s & 0x7c00) == 0x7c00) s &= 0xbfff;  // keep finite for exact compare
    }
    std::vector<float> dst(static_cast<size_t>(n) + 1, 12345.0f);
    DequantizeRow(WeightType::kF16, src.data(), dst.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(dst[i], static_cast<float>(RefHalfToDouble(src[i]))) << n << " " << i;
    }
    EXPECT_EQ(dst[n], 12345.0f);  // no write past n
    DequantizeRow(WeightType::kBF16, src.data(), dst.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(dst[i], static_cast<float>(RefBf16ToDouble(src[i]))) << n << " " << i;
    }
    EXPECT_EQ(dst[n], 12345.0f);
    std::vector<float> f32(static_cast<size_t>(n));
    for (auto& f : f32) f = static_cast<float>(bits(rng)) - 30000.0f;
    DequantizeRow(WeightType::kF32, f32.data(), dst.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(dst[i], f32[i]);
    EXPECT_EQ(dst[n], 12345.0f);
  }
}

// ---------------------------------------------------------------------------------------------
// Q8_0

TEST(Q8_0Test, BlockLayoutIsFp16ScaleThen32Int8) {
  // Block 0: x = k * 0.25 for k in [-127, 127] spread: amax 31.75 -> scale exactly 0.25.
  // Block 1: x = k * 0.5 -> scale 0.5. Scales and quants are then exact.
  std::vector<float> x(64);
  std::vector<int> k(64);
  for (int j = 0; j < 32; ++j) {
    k[j] = j == 5 ? -127 : (j * 37) % 255 - 127;
    k[32 + j] = j == 31 ? 127 : (j * 11) % 200 - 100;
  }
  for (int j = 0; j < 32; ++j) {
    x[j] = 0.25f * static_cast<float>(k[j]);
    x[32 + j] = 0.5f * static_cast<float>(k[32 + j]);
  }
  std::vector<uint8_t> q(static_cast<size_t>(RowBytes(WeightType::kQ8_0, 64)) + 4, 0xAB);
  QuantizeRowQ8_0(x.data(), q.data(), 64);
  ASSERT_EQ(RowBytes(WeightType::kQ8_0, 64), 68);
  EXPECT_EQ(q[0] | (q[1] << 8), 0x3400);    // fp16(0.25), little endian
  EXPECT_EQ(q[34] | (q[35] << 8), 0x3800);  // fp16(0.5)
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(static_cast<int8_t>(q[2 + j]), k[j]) << j;
    EXPECT_EQ(static_cast<int8_t>(q[36 + j]), k[32 + j]) << j;
  }
  for (size_t i = 68; i < q.size(); ++i) EXPECT_EQ(q[i], 0xAB) << "wrote past the row";

  std::vector<float> back(64);
  DequantizeRow(WeightType::kQ8_0, q.data(), back.data(), 64);
  for (int j = 0; j < 64; ++j) EXPECT_EQ(back[j], x[j]) << j;
}

TEST(Q8_0Test, ZeroBlock) {
  std::vector<float> x(32, 0.0f);
  std::vector<uint8_t> q(34, 0xff);
  QuantizeRowQ8_0(x.data(), q.data(), 32);
  for (uint8_t b : q) EXPECT_EQ(b, 0);
  std::vector<float> back(32, 1.0f);
  DequantizeRow(WeightType::kQ8_0, q.data(), back.data(), 32);
  for (float v : back) EXPECT_EQ(v, 0.0f);
}

TEST(Q8_0Test, RoundTripErrorBound) {
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> e(-12, 12);
  constexpr int64_t kBlocks = 2000;
  std::vector<float> x(kBlocks * 32);
  for (int64_t b = 0; b < kBlocks; ++b) {
    const int ex = e(rng);
    for (int j = 0; j < 32; ++j) x[b * 32 + j] = std::ldexp(u(rng), ex);
    if (b % 7 == 0) x[b * 32 + (b % 32)] = 0.0f;
  }
  std::vector<uint8_t> q(static_cast<size_t>(RowBytes(WeightType::kQ8_0, kBlocks * 32)));
  QuantizeRowQ8_0(x.data(), q.data(), kBlocks * 32);
  std::vector<float> back(x.size());
  DequantizeRow(WeightType::kQ8_0, q.data(), back.data(), kBlocks * 32);
  for (int64_t b = 0; b < kBlocks; ++b) {
    double amax = 0.0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(double{x[b * 32 + j]}));
    const double d = amax / 127.0;
    const uint16_t scale_bits = static_cast<uint16_t>(q[b * 34] | (q[b * 34 + 1] << 8));
    const double d16 = RefHalfToDouble(scale_bits);
    // The stored scale is the fp16 nearest to amax / 127.
    // (fp16 subnormals below 2^-14 have an absolute spacing of 2^-24).
    ASSERT_LE(std::fabs(d16 - d), std::max(std::ldexp(d, -11), std::ldexp(1.0, -25)) * 1.0001) << b;
    // |x - d16 * q| <= |x - d * q| + |q| |d - d16| <= d / 2 + 127 |d - d16|.
    const double bound = 0.5 * d + 127.0 * std::fabs(d - d16) + 1e-6 * amax;
    for (int j = 0; j < 32; ++j) {
      const int8_t qj = static_cast<int8_t>(q[b * 34 + 2 + j]);
      ASSERT_GE(qj, -127);
      ASSERT_EQ(back[b * 32 + j], static_cast<float>(d16) * static_cast<float>(qj))
          << b << " " << j;
      ASSERT_LE(std::fabs(double{x[b * 32 + j]} - back[b * 32 + j]), bound) << b << " " << j;
    }
  }
}

}  // namespace
}  // namespace funnel
