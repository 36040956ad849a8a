// Choosing the backend: `--device cpu|cuda` → a ModelRunner.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/exec/model_runner.h"
#include "runtime/model/model_weights.h"

namespace funnel {

enum class Device { kCpu, kCuda };

const char* DeviceName(Device device);
// "cpu" or "cuda"; InvalidArgument otherwise.
absl::StatusOr<Device> ParseDevice(std::string_view name);

// OK when `device` can run here. FailedPrecondition for kCuda when this build has no CUDA
// backend, or when no CUDA device is usable (the message carries the CUDA error).
absl::Status CheckDeviceAvailable(Device device);

// The runner for `device` over `weights` (which must outlive it). `options.num_threads` is used
// by the CPU backend only. FailedPrecondition as CheckDeviceAvailable; InvalidArgument for bad
// options; Unimplemented for model shapes the CUDA backend does not support yet; Internal for a
// CUDA failure while setting up.
absl::StatusOr<std::unique_ptr<ModelRunner>> CreateModelRunner(Device device,
                                                               const ModelWeights& weights,
                                                               const RunnerOptions& options);

}  // namespace funnel
