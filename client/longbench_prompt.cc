#include "client/longbench_prompt.h"

#include <fstream>
#include <span>

#include "absl/strings/str_cat.h"
#include "client/eval_runner.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer.h"

namespace funnel {
namespace {

std::vector<std::string> StringList(const nlohmann::json& j) {
  std::vector<std::string> out;
  if (j.is_string()) {
    out.push_back(j.get<std::string>());
  } else if (j.is_array()) {
    for (const auto& v : j) out.push_back(v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out;
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
}

}  // namespace

absl::StatusOr<std::vector<LongBenchSample>> LoadLongBenchTask(const std::string& path,
                                                               int64_t limit) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read task file ", path));
  std::vector<LongBenchSample> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line) && (limit <= 0 || static_cast<int64_t>(out.size()) < limit)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    LongBenchSample s;
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (!j.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(path, " line ", line_no, ": not an object"));
      }
      for (const auto& [key, value] : j.items()) {
        if (value.is_string()) {
          s.fields[key] = value.get<std::string>();
        } else if (value.is_number()) {
          s.fields[key] = value.dump();
        }
      }
      s.id = j.value("_id", absl::StrCat("line", line_no));
      s.answers = StringList(j.at("answers"));
      if (j.contains("all_classes")) s.all_classes = StringList(j["all_classes"]);
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, " line ", line_no, ": ", e.what()));
    }
    if (s.answers.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, " line ", line_no, ": no answers"));
    }
    out.push_back(std::move(s));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " has no samples"));
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> LoadStringMap(const std::string& path) {
  absl::StatusOr<nlohmann::json> j = ReadJsonFile(path);
  if (!j.ok()) return j.status();
  std::map<std::string, std::string> out;
  if (!j->is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  for (const auto& [k, v] : j->items()) {
    if (!v.is_string())
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", k, " is not a string"));
    out[k] = v.get<std::string>();
  }
  return out;
}

absl::StatusOr<std::map<std::string, int64_t>> LoadIntMap(const std::string& path) {
  absl::StatusOr<nlohmann::json> j = ReadJsonFile(path);
  if (!j.ok()) return j.status();
  std::map<std::string, int64_t> out;
  if (!j->is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  for (const auto& [k, v] : j->items()) {
    if (!v.is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", k, " is not an integer"));
    }
    out[k] = v.get<int64_t>();
  }
  return out;
}

absl::StatusOr<std::string> FormatLongBenchPrompt(
    const std::string& tmpl, const std::map<std::string, std::string>& fields) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    const char c = tmpl[i];
    if ((c == '{' || c == '}') && i + 1 < tmpl.size() && tmpl[i + 1] == c) {
      out.push_back(c);
      i += 2;
    } else if (c == '{') {
      const size_t end = tmpl.find('}', i);
      if (end == std::string::npos)
        return absl::InvalidArgumentError("prompt template: unmatched '{'");
      const std::string name = tmpl.substr(i + 1, end - i - 1);
      auto it = fields.find(name);
      if (it == fields.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt template field {", name, "} is not in the sample"));
      }
      out += it->second;
      i = end + 1;
    } else if (c == '}') {
      return absl::InvalidArgumentError("prompt template: single '}'");
    } else {
      out.push_back(c);
      ++i;
    }
  }
  return out;
}

std::string TruncateMiddle(const Tokenizer& tokenizer, const std::string& prompt,
                           int64_t max_tokens) {
  const std::vector<int32_t> ids = tokenizer.Encode(prompt);
  if (static_cast<int64_t>(ids.size()) <= max_tokens) return prompt;
  const size_t half = static_cast<size_t>(max_tokens / 2);
  const std::span<const int32_t> all(ids);
  return ReplaceInvalidUtf8(tokenizer.Decode(all.first(half))) +
         ReplaceInvalidUtf8(tokenizer.Decode(all.last(half)));
}

bool LongBenchUsesChatTemplate(const std::string& task) {
  for (const char* t : {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}) {
    if (task == t) return false;
  }
  return true;
}

}  // namespace funnel
