// Read-only view of one safetensors file (https://github.com/huggingface/safetensors):
//   [8 bytes: header length N, u64 little-endian] [N bytes: JSON header] [data section]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into
// the data section) plus an optional "__metadata__" object of strings.
//
// The file is memory-mapped (or copied from a caller's buffer); tensor data pointers point into
// that mapping and stay valid for the lifetime of the SafetensorsFile. Parsing validates
// everything the reference implementation does before anything is used, and names the problem:
// header length beyond the file, bad JSON, unknown dtypes, negative or non-integer shapes and
// offsets, byte ranges that do not match dtype x shape, ranges outside the data section, and
// ranges that overlap, leave gaps or leave bytes unused (the data section must be exactly covered).
// Errors are InvalidArgument (NotFound when the file cannot be opened); never a crash.
//
// Immutable after construction; safe to share between threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace funnel {

enum class SafetensorsDtype {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

// "F32", "BF16", ... as written in headers.
const char* SafetensorsDtypeName(SafetensorsDtype dtype);
// Bytes per element.
int64_t SafetensorsDtypeSize(SafetensorsDtype dtype);
// Parses a header dtype string; InvalidArgument naming it when unknown.
absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(std::string_view name);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // row-major: shape.back() is contiguous (PyTorch order)
  uint64_t begin = 0;          // byte range [begin, end) in the data section
  uint64_t end = 0;
  const uint8_t* data = nullptr;  // start of the tensor's bytes (may be unaligned)
  int64_t num_elements = 0;

  int64_t num_bytes() const { return static_cast<int64_t>(end - begin); }
};

class SafetensorsFile {
 public:
  // Headers above this size are rejected (the reference implementation's limit).
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  // Maps and parses the file at `path` (NotFound when it cannot be opened).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses a copy of `bytes` (tests and fuzzers); `name` is used in error messages.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(
      std::span<const uint8_t> bytes, const std::string& name = "<memory>");

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Tensors in data-section order.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* Find(std::string_view name) const;
  // The header's "__metadata__" (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Bytes before the data section (8 + header length).
  uint64_t data_offset() const { return data_offset_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse();
  absl::Status ParseHeader(std::string_view json, uint64_t data_size);
  absl::Status CheckCoverage(uint64_t data_size) const;

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  void* mapping_ = nullptr;     // mmap'd region, or null
  std::vector<uint8_t> owned_;  // FromBytes copy
  uint64_t data_offset_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace funnel
