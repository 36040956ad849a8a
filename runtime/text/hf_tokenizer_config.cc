#include "runtime/text/hf_tokenizer_config.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

constexpr int64_t kMaxTokenId = 1 << 22;

// Parses `text` and runs `read` on it, turning JSON errors into InvalidArgument naming `file`.
template <typename Read>
absl::Status WithJson(std::string_view text, std::string_view file, Read&& read) {
  try {
    const Json root = Json::parse(text.begin(), text.end());
    if (!root.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(file), ": not a JSON object"));
    }
    return read(root);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(file), ": ", e.what()));
  }
}

void ReadSpecial(const Json& root, const char* key, HfSpecialToken& token) {
  if (token.given || !root.contains(key)) return;
  const Json& v = root.at(key);
  token.given = true;
  if (v.is_string()) token.content = v.get<std::string>();
  if (v.is_object()) token.content = v.at("content").get<std::string>();
}

void ReadSpecials(const Json& root, HfTokenizerConfig& c) {
  ReadSpecial(root, "bos_token", c.bos);
  ReadSpecial(root, "eos_token", c.eos);
  ReadSpecial(root, "unk_token", c.unk);
  ReadSpecial(root, "pad_token", c.pad);
}

// One id or a list of ids (null: none).
absl::StatusOr<std::vector<int32_t>> ReadIds(const Json& v, std::string_view what) {
  std::vector<int32_t> ids;
  auto add = [&](const Json& x) -> absl::Status {
    const int64_t id = x.get<int64_t>();
    if (id < 0 || id > kMaxTokenId) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(what), ": token id ", id, " is out of range"));
    }
    ids.push_back(static_cast<int32_t>(id));
    return absl::OkStatus();
  };
  if (v.is_array()) {
    for (const Json& x : v) RETURN_IF_ERROR(add(x));
  } else if (!v.is_null()) {
    RETURN_IF_ERROR(add(v));
  }
  return ids;
}

std::string ChatTemplateOf(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array() || v.empty()) return "";
  for (const Json& named : v) {
    if (named.value("name", std::string()) == "default")
      return named.at("template").get<std::string>();
  }
  return v.front().at("template").get<std::string>();
}

int32_t FindContent(const Vocabulary& v, const std::string& content) {
  int32_t found = -1;
  for (int32_t id = 0; id < static_cast<int32_t>(v.tokens.size()); ++id) {
    if (v.tokens[id] != content) continue;
    if (v.types[id] == TokenType::kControl || v.types[id] == TokenType::kUserDefined) return id;
    if (found < 0) found = id;
  }
  return found;
}

void Grow(Vocabulary& v, int32_t id) {
  while (static_cast<int32_t>(v.tokens.size()) <= id) {
    v.tokens.push_back(absl::StrCat("[PAD", v.tokens.size(), "]"));
    v.types.push_back(TokenType::kControl);
    if (!v.scores.empty()) v.scores.push_back(0.0f);
  }
}

absl::Status Resolve(const HfSpecialToken& token, std::string_view name,
                     const std::vector<int32_t>& config_ids, const Vocabulary& v, int32_t& id) {
  if (token.given) {
    if (token.content.empty()) {
      id = -1;
      return absl::OkStatus();
    }
    id = FindContent(v, token.content);
    if (id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(name), " '", token.content, "' is not in the vocabulary"));
    }
  } else if (!config_ids.empty()) {
    id = config_ids.front();
  }
  return absl::OkStatus();
}

void MarkControl(Vocabulary& v, int32_t id) {
  if (id < 0 || id >= static_cast<int32_t>(v.types.size())) return;
  if (v.types[id] == TokenType::kNormal || v.types[id] == TokenType::kUndefined) {
    v.types[id] = TokenType::kControl;
  }
}

}  // namespace

absl::Status ReadTokenizerConfigJson(std::string_view json, HfTokenizerConfig& c) {
  return WithJson(json, "tokenizer_config.json", [&](const Json& root) -> absl::Status {
    if (root.contains("added_tokens_decoder") && root.at("added_tokens_decoder").is_object()) {
      for (const auto& [key, t] : root.at("added_tokens_decoder").items()) {
        int64_t id = 0;
        if (!absl::SimpleAtoi(key, &id) || id < 0 || id > kMaxTokenId) {
          return absl::InvalidArgumentError(absl::StrCat(
              "tokenizer_config.json: added_tokens_decoder key '", key, "' is not a token id"));
        }
        c.added_tokens.push_back({static_cast<int32_t>(id), t.at("content").get<std::string>(),
                                  t.value("special", false)});
      }
    }
    ReadSpecials(root, c);
    if (root.contains("add_bos_token") && root.at("add_bos_token").is_boolean()) {
      c.add_bos_token = root.at("add_bos_token").get<bool>();
    }
    if (root.contains("add_eos_token") && root.at("add_eos_token").is_boolean()) {
      c.add_eos_token = root.at("add_eos_token").get<bool>();
    }
    if (root.contains("chat_template")) c.chat_template = ChatTemplateOf(root.at("chat_template"));
    c.tokenizer_class = root.value("tokenizer_class", std::string());
    return absl::OkStatus();
  });
}

absl::Status ReadSpecialTokensMapJson(std::string_view json, HfTokenizerConfig& c) {
  return WithJson(json, "special_tokens_map.json", [&](const Json& root) {
    ReadSpecials(root, c);
    return absl::OkStatus();
  });
}

absl::Status ReadAddedTokensJson(std::string_view json, HfTokenizerConfig& c) {
  return WithJson(json, "added_tokens.json", [&](const Json& root) -> absl::Status {
    for (const auto& [content, id_json] : root.items()) {
      ASSIGN_OR_RETURN(std::vector<int32_t> id, ReadIds(id_json, "added_tokens.json"));
      if (id.size() != 1) continue;
      const bool known = std::any_of(c.added_tokens.begin(), c.added_tokens.end(),
                                     [&](const HfAddedToken& t) { return t.id == id[0]; });
      if (!known) c.added_tokens.push_back({id[0], content, true});
    }
    return absl::OkStatus();
  });
}

absl::Status ReadModelConfigJson(std::string_view json, HfTokenizerConfig& c) {
  return WithJson(json, "config.json", [&](const Json& root) -> absl::Status {
    c.model_type = root.value("model_type", std::string());
    if (root.contains("bos_token_id")) {
      ASSIGN_OR_RETURN(c.config_bos_ids, ReadIds(root.at("bos_token_id"), "config.json"));
    }
    if (root.contains("eos_token_id")) {
      ASSIGN_OR_RETURN(c.config_eos_ids, ReadIds(root.at("eos_token_id"), "config.json"));
    }
    return absl::OkStatus();
  });
}

absl::Status ReadGenerationConfigJson(std::string_view json, HfTokenizerConfig& c) {
  return WithJson(json, "generation_config.json", [&](const Json& root) -> absl::Status {
    if (root.contains("eos_token_id")) {
      ASSIGN_OR_RETURN(c.generation_eos_ids,
                       ReadIds(root.at("eos_token_id"), "generation_config.json"));
    }
    return absl::OkStatus();
  });
}

absl::Status ApplyHfConfig(const HfTokenizerConfig& c, Vocabulary& v) {
  if (v.types.size() != v.tokens.size()) v.types.resize(v.tokens.size(), TokenType::kNormal);
  for (const HfAddedToken& t : c.added_tokens) {
    Grow(v, t.id);
    if (v.types[t.id] == TokenType::kUnknown || v.types[t.id] == TokenType::kByte) continue;
    v.tokens[t.id] = t.content;
    v.types[t.id] = t.special ? TokenType::kControl : TokenType::kUserDefined;
  }
  const auto n = static_cast<int32_t>(v.tokens.size());
  for (const auto* ids : {&c.config_bos_ids, &c.config_eos_ids, &c.generation_eos_ids}) {
    for (int32_t id : *ids) {
      if (id >= n) {
        return absl::InvalidArgumentError(absl::StrCat(
            "special token id ", id, " is out of range for a vocabulary of ", n, " tokens"));
      }
    }
  }
  RETURN_IF_ERROR(Resolve(c.bos, "bos_token", c.config_bos_ids, v, v.bos_id));
  RETURN_IF_ERROR(Resolve(c.eos, "eos_token", c.config_eos_ids, v, v.eos_id));
  RETURN_IF_ERROR(Resolve(c.unk, "unk_token", {}, v, v.unk_id));
  RETURN_IF_ERROR(Resolve(c.pad, "pad_token", {}, v, v.pad_id));
  if (v.eos_id < 0 && !c.generation_eos_ids.empty()) v.eos_id = c.generation_eos_ids.front();
  for (const auto* ids : {&c.config_eos_ids, &c.generation_eos_ids}) {
    v.extra_eog_ids.insert(v.extra_eog_ids.end(), ids->begin(), ids->end());
  }
  if (c.add_bos_token) v.add_bos = *c.add_bos_token;
  if (c.add_eos_token) v.add_eos = *c.add_eos_token;
  if (v.bos_id < 0) v.add_bos = false;
  if (v.eos_id < 0) v.add_eos = false;
  for (int32_t id : {v.bos_id, v.eos_id, v.pad_id}) MarkControl(v, id);
  if (v.unk_id >= 0 && v.types[v.unk_id] == TokenType::kNormal) {
    v.types[v.unk_id] = TokenType::kUnknown;
  }
  return absl::OkStatus();
}

std::string ByteLevelPreTokenizerName(const HfTokenizerConfig& c) {
  const std::string cls = absl::AsciiStrToLower(c.tokenizer_class);
  const std::string type = absl::AsciiStrToLower(c.model_type);
  if (cls.find("qwen2") != std::string::npos || type.starts_with("qwen2")) return "qwen2";
  if (cls.find("gpt2") != std::string::npos || type == "gpt2") return "gpt-2";
  if (type == "llama") return "llama3";
  return "gpt-2";
}

}  // namespace funnel
