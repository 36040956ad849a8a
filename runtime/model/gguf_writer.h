// Writes GGUF v3 files: metadata key-values and tensors (used by the random-model tool and tests).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/gguf_file.h"

namespace funnel {

class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32) : alignment_(alignment) {}

  void AddString(const std::string& key, const std::string& value);
  void AddUint32(const std::string& key, uint32_t value);
  void AddInt32(const std::string& key, int32_t value);
  void AddFloat32(const std::string& key, float value);
  void AddBool(const std::string& key, bool value);
  void AddStringArray(const std::string& key, const std::vector<std::string>& values);
  void AddFloat32Array(const std::string& key, const std::vector<float>& values);
  void AddInt32Array(const std::string& key, const std::vector<int32_t>& values);
  // Any already-encoded value (used to copy metadata between files).
  void AddValue(const std::string& key, const GgufValue& value);

  // `dims` in ggml order (dims[0] contiguous); `bytes` must hold exactly the encoded tensor.
  void AddTensor(const std::string& name, std::vector<int64_t> dims, GgmlType type,
                 std::vector<uint8_t> bytes);

  // The whole file in memory.
  std::vector<uint8_t> Serialize() const;
  // Everything before the tensor data (header, metadata, tensor infos, padding).
  std::vector<uint8_t> SerializeHeader() const;
  // Writes to `path` through a temporary file and rename.
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> dims;
    GgmlType type;
    std::vector<uint8_t> bytes;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace funnel
