// All safetensors files of a Hugging Face model directory, as one tensor namespace:
//   model.safetensors                      a single file, or
//   model.safetensors.index.json           {"weight_map": {tensor name: shard file name}, ...}
//                                          with its shards next to it.
// Every shard is validated by SafetensorsFile; the index must name plain file names in the same
// directory, and every tensor it maps must be in the shard it names. A tensor in two files is an
// error. Errors are InvalidArgument naming the file (NotFound when neither file exists).
//
// Immutable after construction; safe to share between threads. Tensor pointers stay valid for
// the checkpoint's lifetime.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/model/safetensors_file.h"

namespace funnel {

inline constexpr char kSafetensorsSingleFile[] = "model.safetensors";
inline constexpr char kSafetensorsIndexFile[] = "model.safetensors.index.json";

class SafetensorsCheckpoint {
 public:
  // Opens the index or the single file in `dir` (the index wins when both exist).
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(const std::string& dir);
  // Parses an index JSON text and maps each tensor to the already-open shard named by it
  // (shards are matched by file name; tests and fuzzers).
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> FromIndex(
      std::string_view index_json, std::vector<std::shared_ptr<const SafetensorsFile>> shards);
  // One namespace over `files` (no index).
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> FromFiles(
      std::vector<std::shared_ptr<const SafetensorsFile>> files);

  const SafetensorsTensor* Find(std::string_view name) const;
  // Every tensor name, in file order.
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<std::shared_ptr<const SafetensorsFile>>& files() const { return files_; }

 private:
  SafetensorsCheckpoint() = default;
  absl::Status Add(const SafetensorsTensor& t, const std::string& file);

  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, const SafetensorsTensor*> tensors_;
  absl::flat_hash_map<std::string, std::string> file_of_;  // tensor name -> file, for errors
  std::vector<std::string> names_;
};

}  // namespace funnel
