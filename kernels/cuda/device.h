// Plain C++ access to the CUDA runtime for tests, benchmarks and the CUDA backend.
// Every function returns a CUDA error code (0 = success); no CUDA header is needed to call them.
#pragma once

#include <cstddef>

namespace funnel::cuda {

// Number of devices. Without a driver or device this returns the error (e.g. 35, insufficient
// driver; 100, no device) and leaves *count at 0: check the code, not the count.
int DeviceCount(int* count);
const char* ErrorString(int error);

int Malloc(void** ptr, size_t bytes);
int Free(void* ptr);
int CopyToDevice(void* dst, const void* src, size_t bytes);
int CopyToHost(void* dst, const void* src, size_t bytes);
int CopyOnDevice(void* dst, const void* src, size_t bytes);
int Memset(void* ptr, int value, size_t bytes);
int Synchronize();
// The error of the last launch, if any (also clears it).
int LastError();

// Event-based timing on the default stream: milliseconds between Record() calls.
class Timer {
 public:
  Timer();
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  void Start();
  float StopMs();  // synchronizes

 private:
  void* start_ = nullptr;
  void* stop_ = nullptr;
};

}  // namespace funnel::cuda
