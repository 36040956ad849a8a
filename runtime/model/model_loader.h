// One entry point for every model format a user can point at.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/model/model_weights.h"

namespace funnel {

// Opens the model at `path`: a directory is a Hugging Face model directory
// (ModelWeights::FromHfDir), a file is a GGUF file (ModelWeights::Open). A lone *.safetensors,
// index or config.json file is InvalidArgument (name the directory holding them instead).
absl::StatusOr<std::unique_ptr<ModelWeights>> OpenModel(const std::string& path);

}  // namespace funnel
