// CUDA RMSNorm, RoPE, SwiGLU, embedding gather (fp32, bf16, fp16), 16-bit rounding and uniform
// fill vs the CPU twins, on awkward shapes.
#include "kernels/cuda/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/norm_rope_act.h"
#include "kernels/cpu/random_fill.h"
#include "tests/testing/gpu_test.h"

namespace funnel {
namespace {

using testing::DeviceVector;
using testing::ToleranceRatio;

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

TEST(CudaElementwise, RmsNormMatchesCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  for (int64_t rows : {1, 3, 17}) {
    for (int64_t dim : {1, 7, 64, 300, 4096, 5000}) {
      auto x = Random(rows * dim, 1, 3.0f), w = Random(dim, 2);
      std::vector<float> ref(x.size());
      RmsNorm(x.data(), w.data(), ref.data(), rows, dim, 1e-5f);
      DeviceVector<float> dx(x), dw(w), dout(x.size());
      ASSERT_EQ(cuda::LaunchRmsNorm(dx.get(), dw.get(), dout.get(), rows, dim, 1e-5f, nullptr), 0);
      ASSERT_EQ(cuda::Synchronize(), 0);
      EXPECT_LE(ToleranceRatio(dout.ToHost(), ref, 1e-5, 1e-5), 1.0) << rows << "x" << dim;
    }
  }
}

TEST(CudaElementwise, RopeMatchesCpuBothStyles) {
  FUNNEL_SKIP_WITHOUT_GPU();
  for (bool half : {false, true}) {
    for (int64_t head_dim : {8, 64, 128}) {
      for (int64_t rot_dim : {head_dim, head_dim / 2}) {
        const int64_t tokens = 5, heads = 3;
        auto x = Random(tokens * heads * head_dim, 3);
        std::vector<int32_t> pos = {0, 1, 7, 1000, 32767};
        std::vector<float> ref = x;
        ApplyRope(ref.data(), pos.data(), tokens, heads, head_dim, rot_dim, 10000.0f,
                  half ? RopeStyle::kHalfSplit : RopeStyle::kAdjacentPairs);
        DeviceVector<float> dx(x);
        DeviceVector<int32_t> dpos(pos);
        ASSERT_EQ(cuda::LaunchRope(dx.get(), dpos.get(), tokens, heads, head_dim, rot_dim, 10000.0f,
                                   half, nullptr),
                  0);
        ASSERT_EQ(cuda::Synchronize(), 0);
        // Large positions amplify float differences in the angle: absolute 2e-3.
        EXPECT_LE(ToleranceRatio(dx.ToHost(), ref, 2e-3, 1e-4), 1.0)
            << "half " << half << " d " << head_dim << " rot " << rot_dim;
      }
    }
  }
}

// Scaled RoPE (llama3-style frequencies, as RopeInverseFrequencies gives them): the same
// per-pair frequencies on both sides, so only sin/cos rounding differs.
TEST(CudaElementwise, RopeWithFrequenciesMatchesCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  for (bool half : {false, true}) {
    for (int64_t head_dim : {8, 96, 128}) {
      for (int64_t rot_dim : {head_dim, head_dim / 2}) {
        const int64_t tokens = 6, heads = 5;
        std::vector<float> inv_freq(static_cast<size_t>(rot_dim / 2));
        for (size_t i = 0; i < inv_freq.size(); ++i) {
          const float base =
              std::pow(500000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(rot_dim));
          inv_freq[i] = i >= inv_freq.size() / 2 ? base / 8.0f : base;  // long wavelengths / 8
        }
        auto x = Random(tokens * heads * head_dim, 9);
        std::vector<int32_t> pos = {0, 3, 17, 4095, 8191, 131071};
        std::vector<float> ref = x;
        ApplyRopeWithFrequencies(ref.data(), pos.data(), tokens, heads, head_dim, rot_dim,
                                 inv_freq.data(),
                                 half ? RopeStyle::kHalfSplit : RopeStyle::kAdjacentPairs);
        DeviceVector<float> dx(x), dfreq(inv_freq);
        DeviceVector<int32_t> dpos(pos);
        ASSERT_EQ(cuda::LaunchRopeWithFrequencies(dx.get(), dpos.get(), tokens, heads, head_dim,
                                                  rot_dim, dfreq.get(), half, nullptr),
                  0);
        ASSERT_EQ(cuda::Synchronize(), 0);
        // Angles up to ~1.3e5 rad: float sin/cos of the same float angle, absolute 2e-3.
        EXPECT_LE(ToleranceRatio(dx.ToHost(), ref, 2e-3, 1e-4), 1.0)
            << "half " << half << " d " << head_dim << " rot " << rot_dim;
      }
    }
  }
}

TEST(CudaElementwise, SwiGluAndGatherMatchCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 255, 257, 100003}) {
    auto g = Random(n, 4, 8.0f), u = Random(n, 5);
    std::vector<float> ref(n);
    SwiGlu(g.data(), u.data(), ref.data(), n);
    DeviceVector<float> dg(g), du(u), dout(n);
    ASSERT_EQ(cuda::LaunchSwiGlu(dg.get(), du.get(), dout.get(), n, nullptr), 0);
    ASSERT_EQ(cuda::Synchronize(), 0);
    EXPECT_LE(ToleranceRatio(dout.ToHost(), ref, 1e-6, 1e-5), 1.0) << n;
  }
  const int64_t vocab = 37, dim = 300;
  auto table = Random(vocab * dim, 6);
  std::vector<int32_t> ids = {0, 36, 5, 5, 17};
  DeviceVector<float> dt(table), dout(ids.size() * dim);
  DeviceVector<int32_t> di(ids);
  ASSERT_EQ(cuda::LaunchEmbeddingGather(dt.get(), di.get(), dout.get(), 5, dim, nullptr), 0);
  auto out = dout.ToHost();
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int64_t i = 0; i < dim; ++i) ASSERT_EQ(out[t * dim + i], table[ids[t] * dim + i]);
  }
}

// Conversion to each 16-bit format (round to nearest even) bit for bit against the CPU twins,
// incl. ties, subnormals, infinities and values that round to infinity; NaN stays NaN. fp32 is a
// copy. LaunchRoundTrip equals the conversion read back.
TEST(CudaElementwise, ConvertMatchesCpuExactly) {
  FUNNEL_SKIP_WITHOUT_GPU();
  std::vector<float> x = Random(70000, 21, 100.0f);
  auto bits = [](uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  };
  // bf16 ties and edges; then fp16: max finite 65504, 65519 (rounds down), 65520 (ties to inf),
  // 2^-24 (smallest subnormal), 2^-25 (a tie to zero), 3 * 2^-25 (a tie up), 1 + 2^-11 (a tie).
  for (uint32_t b : {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x00000001u, 0x807fffffu, 0x7f7fffffu,
                     0xff7fffffu, 0x7f800000u, 0xff800000u, 0x80000000u, 0x477fe000u, 0x477fef00u,
                     0x477ff000u, 0x33800000u, 0x33000000u, 0x33c00000u, 0x3f801000u}) {
    x.push_back(bits(b));
  }
  for (float f : {1e-6f, -3e-5f, 6.1e-5f, 1e5f, -7e4f}) x.push_back(f);
  const int64_t n = static_cast<int64_t>(x.size());
  DeviceVector<float> dx(x);
  for (cuda::Dtype type : {cuda::Dtype::kBf16, cuda::Dtype::kF16}) {
    std::vector<uint16_t> ref(x.size());
    for (size_t i = 0; i < x.size(); ++i) ref[i] = cuda::HostNarrow(x[i], type);
    DeviceVector<uint16_t> dout(x.size());
    ASSERT_EQ(cuda::LaunchConvert(dx.get(), dout.get(), n, type, nullptr), 0);
    ASSERT_EQ(cuda::Synchronize(), 0);
    EXPECT_EQ(dout.ToHost(), ref) << testing::DtypeName(type);

    std::vector<float> round = x;
    testing::RoundInPlace(round, type);
    DeviceVector<float> dround(x);
    ASSERT_EQ(cuda::LaunchRoundTrip(dround.get(), n, type, nullptr), 0);
    const std::vector<float> got = dround.ToHost();
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(std::memcmp(&got[i], &round[i], 4), 0) << testing::DtypeName(type) << " " << x[i];
    }

    const std::vector<float> nan = {std::nanf("")};
    DeviceVector<float> dnan(nan);
    ASSERT_EQ(cuda::LaunchConvert(dnan.get(), dout.get(), 1, type, nullptr), 0);
    ASSERT_EQ(cuda::Synchronize(), 0);
    EXPECT_TRUE(std::isnan(cuda::HostWiden(dout.ToHost()[0], type)));
  }
  DeviceVector<float> copy(x.size());
  ASSERT_EQ(cuda::LaunchConvert(dx.get(), copy.get(), n, cuda::Dtype::kF32, nullptr), 0);
  EXPECT_EQ(copy.ToHost(), x);
}

TEST(CudaElementwise, EmbeddingGatherTypedMatchesCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  for (int64_t dim : {1, 63, 4096}) {
    for (cuda::Dtype type : testing::kAllDtypes) {
      const int64_t vocab = 37;
      std::vector<float> table = Random(vocab * dim, 22);
      testing::DeviceTyped dtable(table, type);  // rounds `table` to the stored values
      const std::vector<int32_t> ids = {36, 0, 5, 5, 17};
      std::vector<float> ref;
      for (int32_t id : ids) {
        for (int64_t c = 0; c < dim; ++c) ref.push_back(table[id * dim + c]);
      }
      DeviceVector<int32_t> dids(ids);
      DeviceVector<float> dout(ref.size());
      ASSERT_EQ(cuda::LaunchEmbeddingGatherTyped(dtable.get(), type, dids.get(), dout.get(), 5, dim,
                                                 nullptr),
                0);
      ASSERT_EQ(cuda::Synchronize(), 0);
      EXPECT_EQ(dout.ToHost(), ref) << testing::DtypeName(type) << " " << dim;
    }
  }
}

// Bit-identical to the CPU twin, including past the grid cap (grid-stride loop).
TEST(CudaElementwise, FillUniformMatchesCpuExactly) {
  FUNNEL_SKIP_WITHOUT_GPU();
  for (int64_t n : {int64_t{1}, int64_t{255}, int64_t{4097}, int64_t{65535} * 256 + 17}) {
    std::vector<float> ref(static_cast<size_t>(n));
    FillUniform(ref.data(), n, 11, 0.02f);
    DeviceVector<float> d(static_cast<size_t>(n));
    ASSERT_EQ(cuda::LaunchFillUniform(d.get(), n, 11, 0.02f, nullptr), 0);
    ASSERT_EQ(cuda::Synchronize(), 0);
    EXPECT_EQ(d.ToHost(), ref) << n;
  }
}

}  // namespace
}  // namespace funnel
