#include <cuda_runtime.h>

#include "kernels/cuda/device.h"

namespace funnel::cuda {

int DeviceCount(int* count) {
  *count = 0;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess) *count = n;
  return static_cast<int>(e);
}

const char* ErrorString(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

int Malloc(void** ptr, size_t bytes) { return static_cast<int>(cudaMalloc(ptr, bytes)); }
int Free(void* ptr) { return static_cast<int>(cudaFree(ptr)); }
int CopyToDevice(void* dst, const void* src, size_t bytes) {
  return static_cast<int>(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
int CopyToHost(void* dst, const void* src, size_t bytes) {
  return static_cast<int>(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
int CopyOnDevice(void* dst, const void* src, size_t bytes) {
  return static_cast<int>(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}
int Memset(void* ptr, int value, size_t bytes) { return static_cast<int>(cudaMemset(ptr, value, bytes)); }
int Synchronize() { return static_cast<int>(cudaDeviceSynchronize()); }
int LastError() { return static_cast<int>(cudaGetLastError()); }

Timer::Timer() {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  start_ = a;
  stop_ = b;
}

Timer::~Timer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}

void Timer::Start() { cudaEventRecord(static_cast<cudaEvent_t>(start_)); }

float Timer::StopMs() {
  cudaEventRecord(static_cast<cudaEvent_t>(stop_));
  cudaEventSynchronize(static_cast<cudaEvent_t>(stop_));
  float ms = 0.0f;
  cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_));
  return ms;
}

}  // namespace funnel::cuda
