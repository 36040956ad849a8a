// Device-to-device copy bandwidth, the HBM reference the CUDA benchmarks compare against.
#pragma once

#include <cstddef>

#include "kernels/cuda/device.h"

namespace funnel::cuda {

// GB/s counting bytes read + written, over ten copies of a 2 GiB buffer; 0 when the buffers
// cannot be allocated.
inline double CopyBandwidthGBs() {
  const size_t bytes = size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  if (Malloc(&a, bytes) != 0 || Malloc(&b, bytes) != 0) {
    Free(a);
    return 0.0;
  }
  Memset(a, 1, bytes);
  CopyOnDevice(b, a, bytes);
  Timer t;
  t.Start();
  for (int i = 0; i < 10; ++i) CopyOnDevice(b, a, bytes);
  const float ms = t.StopMs();
  Free(a);
  Free(b);
  return 2.0 * bytes * 10 / (ms / 1000.0) / 1e9;
}

}  // namespace funnel::cuda
