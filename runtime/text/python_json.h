// JSON text as Python's json.dumps(value, ensure_ascii=False) writes it (", " and ": "
// separators, keys in their original order, non-ASCII characters as is), which is what
// mistral-common feeds its tokenizer for tool definitions, calls and results.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace funnel {

// Serializes `value` as json.dumps does. InvalidArgument when a string is not valid UTF-8.
absl::StatusOr<std::string> PythonJsonDumps(const nlohmann::ordered_json& value);

// json.loads(text) when `text` parses as JSON (keys kept in order), else nullopt-like: the text as
// a JSON string value. mistral-common's _parse_json_content.
nlohmann::ordered_json ParseJsonOrString(std::string_view text);

}  // namespace funnel
