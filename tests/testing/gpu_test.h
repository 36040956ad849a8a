// GPU test helpers: skip without a device, device buffers, comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "kernels/cuda/device.h"
#include "kernels/cuda/dtype.h"

// Skips the test when no CUDA device is usable (checks the error code, not only the count).
#define FUNNEL_SKIP_WITHOUT_GPU()                                                      \
  do {                                                                                 \
    int count_ = 0;                                                                    \
    const int error_ = ::funnel::cuda::DeviceCount(&count_);                           \
    if (error_ != 0 || count_ == 0) {                                                  \
      GTEST_SKIP() << "no CUDA device (" << ::funnel::cuda::ErrorString(error_) << ")"; \
    }                                                                                  \
  } while (0)

namespace funnel::testing {

// A device copy of a host vector; freed on destruction.
template <typename T>
class DeviceVector {
 public:
  explicit DeviceVector(const std::vector<T>& host) : size_(host.size()) {
    EXPECT_EQ(cuda::Malloc(reinterpret_cast<void**>(&ptr_), bytes()), 0);
    if (!host.empty()) {
      EXPECT_EQ(cuda::CopyToDevice(ptr_, host.data(), bytes()), 0);
    }
  }
  explicit DeviceVector(size_t n) : DeviceVector(std::vector<T>(n)) {}
  ~DeviceVector() { cuda::Free(ptr_); }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;

  T* get() const { return ptr_; }
  std::vector<T> ToHost() const {
    std::vector<T> out(size_);
    EXPECT_EQ(cuda::CopyToHost(out.data(), ptr_, bytes()), 0);
    return out;
  }

 private:
  size_t bytes() const { return std::max<size_t>(1, size_) * sizeof(T); }
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

// Every storage format, for tests that run each kernel on each; and its name for messages.
inline constexpr cuda::Dtype kAllDtypes[] = {cuda::Dtype::kF32, cuda::Dtype::kBf16,
                                             cuda::Dtype::kF16};
inline const char* DtypeName(cuda::Dtype t) {
  return t == cuda::Dtype::kF32 ? "f32" : (t == cuda::Dtype::kBf16 ? "bf16" : "f16");
}

// values[i] = values[i] stored as `t` and read back (fp32: unchanged).
inline void RoundInPlace(std::vector<float>& values, cuda::Dtype t) {
  if (t == cuda::Dtype::kF32) return;
  for (float& x : values) x = cuda::HostWiden(cuda::HostNarrow(x, t), t);
}

// A device copy of `values` stored as `t`. Rounds `values` in place first, so that a CPU
// reference over them sees exactly what the device holds.
class DeviceTyped {
 public:
  DeviceTyped(std::vector<float>& values, cuda::Dtype t) : type_(t) {
    if (t == cuda::Dtype::kF32) {
      f32_.emplace(values);
      return;
    }
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      bits[i] = cuda::HostNarrow(values[i], t);
      values[i] = cuda::HostWiden(bits[i], t);
    }
    bits_.emplace(bits);
  }
  void* get() const {
    return f32_ ? static_cast<void*>(f32_->get()) : static_cast<void*>(bits_->get());
  }
  // The device contents, widened to fp32.
  std::vector<float> ToHost() const {
    if (f32_) return f32_->ToHost();
    const std::vector<uint16_t> bits = bits_->ToHost();
    std::vector<float> out(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) out[i] = cuda::HostWiden(bits[i], type_);
    return out;
  }

 private:
  cuda::Dtype type_;
  std::optional<DeviceVector<float>> f32_;
  std::optional<DeviceVector<uint16_t>> bits_;
};

// Max |a - b| / (atol + rtol * |b|) over the vectors; <= 1 means within tolerance.
inline double ToleranceRatio(const std::vector<float>& a, const std::vector<float>& b, double atol,
                             double rtol) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double r = std::fabs(double{a[i]} - b[i]) / (atol + rtol * std::fabs(double{b[i]}));
    if (!(r <= worst)) worst = std::isnan(r) ? INFINITY : r;
  }
  return worst;
}

}  // namespace funnel::testing
