// What a Hugging Face model directory's JSON side files say about its tokenizer, and how that is
// applied to a Vocabulary read from tokenizer.json / tokenizer.model / vocab.json.
//
// Files (all optional): tokenizer_config.json (added_tokens_decoder, bos/eos/unk/pad_token as a
// string, {"content": ...} or null, add_bos_token, add_eos_token, chat_template as a string or a
// list of {name, template}, tokenizer_class), special_tokens_map.json (the same token keys),
// added_tokens.json ({"text": id}), config.json (model_type, bos_token_id, eos_token_id as one id
// or a list), generation_config.json (eos_token_id, one id or a list).
//
// Precedence for special ids: tokenizer_config.json, then special_tokens_map.json, then
// config.json, then what the tokenizer file itself says. Every eos id of config.json and
// generation_config.json ends generation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

// A special token setting: not given, given as null (content empty), or given as text.
struct HfSpecialToken {
  bool given = false;
  std::string content;
};

struct HfAddedToken {
  int32_t id = 0;
  std::string content;
  bool special = true;
};

struct HfTokenizerConfig {
  std::vector<HfAddedToken> added_tokens;
  HfSpecialToken bos, eos, unk, pad;
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
  std::string chat_template;  // Jinja source; empty when none
  std::string tokenizer_class;
  std::string model_type;  // config.json
  std::vector<int32_t> config_bos_ids;
  std::vector<int32_t> config_eos_ids;
  std::vector<int32_t> generation_eos_ids;
};

// Each reader adds what its file says to `config`; values already set by a file of higher
// precedence (read first) are kept. InvalidArgument naming the file for malformed JSON or fields
// of the wrong type.
absl::Status ReadTokenizerConfigJson(std::string_view json, HfTokenizerConfig& config);
absl::Status ReadSpecialTokensMapJson(std::string_view json, HfTokenizerConfig& config);
absl::Status ReadAddedTokensJson(std::string_view json, HfTokenizerConfig& config);
absl::Status ReadModelConfigJson(std::string_view json, HfTokenizerConfig& config);
absl::Status ReadGenerationConfigJson(std::string_view json, HfTokenizerConfig& config);

// Adds the added tokens (growing the vocabulary when their ids are past its end), resolves
// bos/eos/unk/pad, add_bos/add_eos and the end-of-generation ids. InvalidArgument when a named
// special token is not in the vocabulary or an id is out of range.
absl::Status ApplyHfConfig(const HfTokenizerConfig& config, Vocabulary& vocab);

// The pre-tokenizer (PreTokenizerPatterns name) for a vocab.json + merges.txt pair: "qwen2" for
// Qwen2 tokenizers, "llama3" for Llama models, else "gpt-2".
std::string ByteLevelPreTokenizerName(const HfTokenizerConfig& config);

}  // namespace funnel
