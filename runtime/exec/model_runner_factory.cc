#include "runtime/exec/model_runner_factory.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

#ifdef FUNNEL_HAVE_CUDA
#include "kernels/cuda/device.h"
#include "runtime/exec/cuda_model_runner.h"
#endif

namespace funnel {

const char* DeviceName(Device device) {
  switch (device) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "?";
}

absl::StatusOr<Device> ParseDevice(std::string_view name) {
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda") return Device::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", std::string(name), "' (cpu|cuda)"));
}

absl::Status CheckDeviceAvailable(Device device) {
  if (device == Device::kCpu) return absl::OkStatus();
#ifdef FUNNEL_HAVE_CUDA
  int count = 0;
  const int error = cuda::DeviceCount(&count);
  if (error != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no usable CUDA device: cudaGetDeviceCount failed with error ", error, " (",
                     cuda::ErrorString(error), ")"));
  }
  if (count == 0) return absl::FailedPreconditionError("no usable CUDA device: none found");
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(
      "this build has no CUDA backend (configure with -DFUNNEL_WITH_CUDA=ON on a machine with "
      "nvcc)");
#endif
}

absl::StatusOr<std::unique_ptr<ModelRunner>> CreateModelRunner(Device device,
                                                               const ModelWeights& weights,
                                                               const RunnerOptions& options) {
  RETURN_IF_ERROR(CheckDeviceAvailable(device));
  switch (device) {
    case Device::kCpu: {
      ASSIGN_OR_RETURN(std::unique_ptr<CpuModelRunner> cpu,
                       CpuModelRunner::Create(weights, options));
      return std::unique_ptr<ModelRunner>(std::move(cpu));
    }
    case Device::kCuda: {
#ifdef FUNNEL_HAVE_CUDA
      ASSIGN_OR_RETURN(std::unique_ptr<CudaModelRunner> gpu,
                       CudaModelRunner::Create(weights, options));
      return std::unique_ptr<ModelRunner>(std::move(gpu));
#else
      break;  // refused by CheckDeviceAvailable
#endif
    }
  }
  return absl::InternalError("unreachable device");
}

}  // namespace funnel
