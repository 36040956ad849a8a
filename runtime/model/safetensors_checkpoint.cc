#include "runtime/model/safetensors_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::string BaseName(const std::string& path) { return fs::path(path).filename().string(); }

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A shard name from an index: a plain file name in the index's directory.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

// weight_map of an index, as (tensor name, shard file name) pairs.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseWeightMap(
    std::string_view index_json) {
  Json index;
  try {
    index = Json::parse(index_json.begin(), index_json.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("index is not valid JSON: ", e.what()));
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError("index has no \"weight_map\" object");
  }
  std::vector<std::pair<std::string, std::string>> map;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string() || !IsPlainFileName(file.get<std::string>())) {
      return absl::InvalidArgumentError(
          absl::StrCat("index maps tensor '", tensor, "' to ", file.dump(),
                       ", which is not a file name in the same directory"));
    }
    map.emplace_back(tensor, file.get<std::string>());
  }
  if (map.empty()) return absl::InvalidArgumentError("index has an empty weight_map");
  return map;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::Open(
    const std::string& dir) {
  const std::string index_path = (fs::path(dir) / kSafetensorsIndexFile).string();
  const std::string single_path = (fs::path(dir) / kSafetensorsSingleFile).string();
  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    ASSIGN_OR_RETURN(std::string text, ReadText(index_path));
    auto map = ParseWeightMap(text);
    if (!map.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", map.status().message()));
    }
    std::vector<std::shared_ptr<const SafetensorsFile>> shards;
    absl::flat_hash_map<std::string, bool> opened;
    for (const auto& [tensor, file] : *map) {
      if (!opened.emplace(file, true).second) continue;
      auto shard = SafetensorsFile::Open((fs::path(dir) / file).string());
      if (!shard.ok()) {
        return absl::Status(shard.status().code(),
                            absl::StrCat(index_path, " names shard '", file, "' (for tensor '",
                                         tensor, "'): ", shard.status().message()));
      }
      shards.push_back(std::move(*shard));
    }
    auto checkpoint = FromIndex(text, std::move(shards));
    if (!checkpoint.ok()) {
      return absl::Status(checkpoint.status().code(),
                          absl::StrCat(index_path, ": ", checkpoint.status().message()));
    }
    return checkpoint;
  }
  if (fs::exists(single_path, ec)) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(single_path));
    std::vector<std::shared_ptr<const SafetensorsFile>> files;
    files.push_back(std::move(file));
    return FromFiles(std::move(files));
  }
  return absl::NotFoundError(absl::StrCat("no ", kSafetensorsIndexFile, " or ",
                                          kSafetensorsSingleFile, " in '", dir, "'"));
}

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::FromIndex(
    std::string_view index_json, std::vector<std::shared_ptr<const SafetensorsFile>> shards) {
  ASSIGN_OR_RETURN(auto map, ParseWeightMap(index_json));
  auto c = std::unique_ptr<SafetensorsCheckpoint>(new SafetensorsCheckpoint());
  absl::flat_hash_map<std::string, const SafetensorsFile*> by_name;
  for (const auto& shard : shards) by_name.emplace(BaseName(shard->path()), shard.get());
  for (const auto& [tensor, file] : map) {
    auto it = by_name.find(file);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", tensor, "' is mapped to shard '", file, "', which is missing"));
    }
    const SafetensorsTensor* t = it->second->Find(tensor);
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("index maps tensor '", tensor, "' to '", file,
                                                     "', which has no such tensor"));
    }
    RETURN_IF_ERROR(c->Add(*t, file));
  }
  c->files_ = std::move(shards);
  return c;
}

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::FromFiles(
    std::vector<std::shared_ptr<const SafetensorsFile>> files) {
  auto c = std::unique_ptr<SafetensorsCheckpoint>(new SafetensorsCheckpoint());
  for (const auto& file : files) {
    for (const SafetensorsTensor& t : file->tensors()) {
      RETURN_IF_ERROR(c->Add(t, BaseName(file->path())));
    }
  }
  c->files_ = std::move(files);
  return c;
}

absl::Status SafetensorsCheckpoint::Add(const SafetensorsTensor& t, const std::string& file) {
  auto [it, inserted] = tensors_.emplace(t.name, &t);
  if (!inserted) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' appears in both '",
                                                   file_of_[t.name], "' and '", file, "'"));
  }
  file_of_.emplace(t.name, file);
  names_.push_back(t.name);
  return absl::OkStatus();
}

const SafetensorsTensor* SafetensorsCheckpoint::Find(std::string_view name) const {
  auto it = tensors_.find(absl::string_view(name.data(), name.size()));
  return it == tensors_.end() ? nullptr : it->second;
}

}  // namespace funnel
