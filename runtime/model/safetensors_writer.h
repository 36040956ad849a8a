// Writes safetensors files: the header (tensors in the given order, "__metadata__" first, padded
// with spaces so the data section starts 8-byte aligned), then each tensor's bytes, produced by a
// per-tensor callback so large models stream through without a second copy in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/safetensors_file.h"

namespace funnel {

struct SafetensorsWriteEntry {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // row-major (PyTorch order)
  // Writes exactly product(shape) * SafetensorsDtypeSize(dtype) bytes to `out`; called once, in
  // entry order. A different byte count fails the whole write (Internal).
  std::function<absl::Status(std::ostream& out)> write;
};

// An entry whose bytes are `data` (which must stay valid until the write is done).
SafetensorsWriteEntry SafetensorsBytesEntry(std::string name, SafetensorsDtype dtype,
                                            std::vector<int64_t> shape,
                                            std::span<const uint8_t> data);

// Writes the file to `out`. InvalidArgument for duplicate or empty names and bad shapes.
absl::Status WriteSafetensors(std::ostream& out, const std::vector<SafetensorsWriteEntry>& entries,
                              const std::map<std::string, std::string>& metadata);

// Writes to `path` through a temporary file in the same directory and a rename.
absl::Status WriteSafetensorsFile(const std::string& path,
                                  const std::vector<SafetensorsWriteEntry>& entries,
                                  const std::map<std::string, std::string>& metadata);

// Writes `text` to `path` through a temporary file and a rename (for the JSON files next to it).
absl::Status WriteTextFile(const std::string& path, const std::string& text);

}  // namespace funnel
