// GPU test helpers: skip without a device, device buffers, comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cuda/device.h"

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
