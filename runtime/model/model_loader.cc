#include "runtime/model/model_loader.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace funnel {

absl::StatusOr<std::unique_ptr<ModelWeights>> OpenModel(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return ModelWeights::FromHfDir(path);
  if (absl::EndsWith(path, ".safetensors") || absl::EndsWith(path, ".safetensors.index.json") ||
      std::filesystem::path(path).filename() == "config.json") {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path,
                     "' is one file of a Hugging Face model; pass the directory holding it and "
                     "its config.json"));
  }
  return ModelWeights::Open(path);
}

}  // namespace funnel
