#include "runtime/text/tokenizer_json.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/text/spm_tokenizer.h"
#include "runtime/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

constexpr char kSpaceSymbol[] = "\xE2\x96\x81";  // U+2581 '▁'
// Hugging Face ByteLevel's own regex (use_regex: true).
constexpr char kHfGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Ids above this are rejected instead of allocating a huge vocabulary.
constexpr int64_t kMaxTokenId = 1 << 22;

// What the normalizer and pre-tokenizer sections ask for.
struct TextPipeline {
  bool byte_level = false;
  bool byte_level_prefix_space = false;
  std::vector<std::string> patterns;
  bool metaspace = false;
  std::string prepend_scheme = "always";
  bool metaspace_split = true;
  bool prepend_normalizer = false;
  bool replace_space_normalizer = false;
};

absl::Status Unsupported(std::string_view what, const std::string& type) {
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: ", std::string(what), " '", type, "' is not supported"));
}

// A literal string as a PCRE2 pattern.
std::string QuoteLiteral(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

absl::StatusOr<std::string> SplitPattern(const Json& split) {
  if (split.value("behavior", std::string("Isolated")) != "Isolated") {
    return Unsupported("Split behavior", split.value("behavior", std::string()));
  }
  if (split.value("invert", false)) return Unsupported("Split invert", "true");
  const Json& pattern = split.at("pattern");
  if (pattern.contains("Regex")) return pattern.at("Regex").get<std::string>();
  return QuoteLiteral(pattern.at("String").get<std::string>());
}

absl::Status ReadPreTokenizer(const Json& pre, TextPipeline& p) {
  if (pre.is_null()) return absl::OkStatus();
  const std::string type = pre.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const Json& child : pre.at("pretokenizers")) RETURN_IF_ERROR(ReadPreTokenizer(child, p));
  } else if (type == "ByteLevel") {
    p.byte_level = true;
    p.byte_level_prefix_space = pre.value("add_prefix_space", true);
    if (pre.value("use_regex", true)) p.patterns.push_back(kHfGpt2Pattern);
  } else if (type == "Split") {
    ASSIGN_OR_RETURN(std::string pattern, SplitPattern(pre));
    p.patterns.push_back(std::move(pattern));
  } else if (type == "Digits") {
    p.patterns.push_back(pre.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
  } else if (type == "Metaspace") {
    if (pre.value("replacement", std::string(kSpaceSymbol)) != kSpaceSymbol) {
      return Unsupported("Metaspace replacement", pre.value("replacement", std::string()));
    }
    p.metaspace = true;
    if (pre.contains("prepend_scheme")) {
      p.prepend_scheme = pre.at("prepend_scheme").get<std::string>();
    } else if (pre.contains("add_prefix_space")) {
      p.prepend_scheme = pre.at("add_prefix_space").get<bool>() ? "always" : "never";
    }
    p.metaspace_split = pre.value("split", true);
  } else {
    return Unsupported("pre-tokenizer", type);
  }
  return absl::OkStatus();
}

absl::Status ReadNormalizer(const Json& norm, TextPipeline& p) {
  if (norm.is_null()) return absl::OkStatus();
  const std::string type = norm.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const Json& child : norm.at("normalizers")) RETURN_IF_ERROR(ReadNormalizer(child, p));
  } else if (type == "Prepend" && norm.at("prepend").get<std::string>() == kSpaceSymbol) {
    p.prepend_normalizer = true;
  } else if (type == "Replace" && norm.at("pattern").value("String", std::string()) == " " &&
             norm.at("content").get<std::string>() == kSpaceSymbol) {
    p.replace_space_normalizer = true;
  } else if (type == "NFC" || type == "NFKC" || type == "NFD" || type == "NFKD") {
    spdlog::warn("tokenizer.json: {} normalizer not applied; input is assumed normalized", type);
  } else {
    return Unsupported("normalizer", type);
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> TokenId(const Json& id, std::string_view what) {
  const int64_t v = id.get<int64_t>();
  if (v < 0 || v > kMaxTokenId) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: ", std::string(what), " id ", v, " is out of range"));
  }
  return static_cast<int32_t>(v);
}

// Sets tokens[id] = text, growing the vocabulary with "[PAD<id>]" control placeholders.
void Place(Vocabulary& v, int32_t id, std::string text, TokenType type) {
  while (static_cast<int32_t>(v.tokens.size()) <= id) {
    v.tokens.push_back(absl::StrCat("[PAD", v.tokens.size(), "]"));
    v.types.push_back(TokenType::kControl);
  }
  v.tokens[id] = std::move(text);
  v.types[id] = type;
}

absl::Status ReadModelVocab(const Json& model, Vocabulary& v) {
  const Json& vocab = model.at("vocab");
  if (!vocab.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: model.vocab is not an object");
  }
  for (const auto& [text, id_json] : vocab.items()) {
    ASSIGN_OR_RETURN(int32_t id, TokenId(id_json, "model.vocab"));
    Place(v, id, text, TokenType::kNormal);
  }
  for (const Json& m : model.at("merges")) {
    if (m.is_array()) {
      v.merges.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
      continue;
    }
    const std::string s = m.get<std::string>();
    const size_t space = s.find(' ', 1);
    if (space == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: merge '", s, "' is not 'left right'"));
    }
    v.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
  }
  return absl::OkStatus();
}

absl::Status ReadAddedTokens(const Json& root, Vocabulary& v) {
  if (!root.contains("added_tokens") || root.at("added_tokens").is_null()) {
    return absl::OkStatus();
  }
  for (const Json& t : root.at("added_tokens")) {
    ASSIGN_OR_RETURN(int32_t id, TokenId(t.at("id"), "added_tokens"));
    const bool special = t.value("special", false);
    const bool is_unk = id == v.unk_id;
    Place(v, id, t.at("content").get<std::string>(),
          is_unk ? TokenType::kUnknown : (special ? TokenType::kControl : TokenType::kUserDefined));
  }
  return absl::OkStatus();
}

int32_t FindText(const Vocabulary& v, const std::string& text) {
  for (int32_t id = 0; id < static_cast<int32_t>(v.tokens.size()); ++id) {
    if (v.tokens[id] == text) return id;
  }
  return -1;
}

// TemplateProcessing "single": [SpecialToken?, Sequence A, SpecialToken?].
void ReadPostProcessor(const Json& post, Vocabulary& v) {
  if (post.is_null()) return;
  const std::string type = post.value("type", std::string());
  if (type == "Sequence") {
    for (const Json& child : post.at("processors")) ReadPostProcessor(child, v);
    return;
  }
  if (type != "TemplateProcessing" || !post.contains("single")) return;
  const Json& single = post.at("single");
  if (single.empty()) return;
  const Json& first = single.front();
  if (first.contains("SpecialToken")) {
    v.bos_id = FindText(v, first.at("SpecialToken").at("id").get<std::string>());
    v.add_bos = v.bos_id >= 0;
  }
  const Json& last = single.back();
  if (single.size() > 1 && last.contains("SpecialToken")) {
    v.eos_id = FindText(v, last.at("SpecialToken").at("id").get<std::string>());
    v.add_eos = v.eos_id >= 0;
  }
}

absl::Status ApplyPipeline(const TextPipeline& p, const Json& model, Vocabulary& v) {
  if (p.byte_level) {
    v.model = "gpt2";
    v.pre_patterns = p.patterns;
    v.add_space_prefix = p.byte_level_prefix_space;
    v.ignore_merges = model.value("ignore_merges", false);
    return absl::OkStatus();
  }
  if (!p.metaspace && !p.replace_space_normalizer) {
    return absl::InvalidArgumentError(
        "tokenizer.json: BPE models need a ByteLevel or Metaspace pre-tokenizer or a "
        "Replace(' ', '▁') normalizer");
  }
  v.model = "bpe";
  v.metaspace_split = p.metaspace && p.metaspace_split;
  if (p.metaspace) {
    v.add_space_prefix = p.prepend_scheme != "never";
    v.space_prefix_after_special = p.prepend_scheme == "always";
  } else {
    v.add_space_prefix = p.prepend_normalizer;
    v.space_prefix_after_special = p.prepend_normalizer;
  }
  if (model.value("byte_fallback", false)) {
    for (size_t i = 0; i < v.tokens.size(); ++i) {
      if (v.types[i] == TokenType::kNormal && ParseBytePiece(v.tokens[i]) >= 0) {
        v.types[i] = TokenType::kByte;
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Vocabulary> FromJson(const Json& root) {
  const Json& model = root.at("model");
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") return Unsupported("model type", type);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model.at(key).is_null() &&
        !model.at(key).get<std::string>().empty()) {
      return Unsupported(key, model.at(key).get<std::string>());
    }
  }
  Vocabulary v;
  v.bos_id = v.eos_id = v.unk_id = v.pad_id = -1;
  v.add_bos = v.add_eos = false;
  RETURN_IF_ERROR(ReadModelVocab(model, v));
  if (model.contains("unk_token") && model.at("unk_token").is_string()) {
    v.unk_id = FindText(v, model.at("unk_token").get<std::string>());
    if (v.unk_id >= 0) v.types[v.unk_id] = TokenType::kUnknown;
  }
  RETURN_IF_ERROR(ReadAddedTokens(root, v));
  TextPipeline pipeline;
  RETURN_IF_ERROR(ReadNormalizer(root.value("normalizer", Json()), pipeline));
  RETURN_IF_ERROR(ReadPreTokenizer(root.value("pre_tokenizer", Json()), pipeline));
  RETURN_IF_ERROR(ApplyPipeline(pipeline, model, v));
  ReadPostProcessor(root.value("post_processor", Json()), v);
  if (v.tokens.empty()) return absl::InvalidArgumentError("tokenizer.json: empty vocabulary");
  return v;
}

}  // namespace

absl::StatusOr<Vocabulary> VocabularyFromTokenizerJson(std::string_view json) {
  try {
    const Json root = Json::parse(json.begin(), json.end());
    return FromJson(root);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
}

}  // namespace funnel
