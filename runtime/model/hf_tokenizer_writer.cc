#include "runtime/model/hf_tokenizer_writer.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

using OJson = nlohmann::ordered_json;

constexpr char kMetaspace[] = "\xE2\x96\x81";  // U+2581 '▁'

// GGUF token types (tokenizer.ggml.token_type).
enum : int64_t { kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4 };

struct SpmVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int64_t> types;
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
  bool add_bos = true, add_eos = false, add_space_prefix = true;
  std::string chat_template;

  bool IsNormal(size_t id) const { return types[id] == kNormal || types[id] == kUndefined; }
  std::optional<std::string> Piece(int32_t id) const {
    if (id < 0) return std::nullopt;
    return tokens[static_cast<size_t>(id)];
  }
};

// An optional id key; -1 when absent or out of range (GGUF writes 2^32-1 for "none").
int32_t OptionalId(const GgufFile& g, const std::string& key, size_t vocab) {
  auto v = g.GetInt(key);
  return v.ok() && *v >= 0 && static_cast<uint64_t>(*v) < vocab ? static_cast<int32_t>(*v) : -1;
}

absl::StatusOr<bool> OptionalBool(const GgufFile& g, const std::string& key, bool fallback) {
  if (!g.Has(key)) return fallback;
  return g.GetBool(key);
}

absl::StatusOr<SpmVocab> ReadSpmVocab(const GgufFile& g) {
  SpmVocab v;
  ASSIGN_OR_RETURN(v.tokens, g.GetStringArray("tokenizer.ggml.tokens"));
  const size_t n = v.tokens.size();
  if (g.Has("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(v.scores, g.GetFloatArray("tokenizer.ggml.scores"));
  }
  if (g.Has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(v.types, g.GetIntArray("tokenizer.ggml.token_type"));
  }
  if (v.scores.empty()) v.scores.assign(n, 0.0f);
  if (v.types.empty()) v.types.assign(n, kNormal);
  if (v.scores.size() != n || v.types.size() != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tokenizer: %d tokens but %d scores and %d types", n, v.scores.size(), v.types.size()));
  }
  v.bos_id = OptionalId(g, "tokenizer.ggml.bos_token_id", n);
  v.eos_id = OptionalId(g, "tokenizer.ggml.eos_token_id", n);
  v.unk_id = OptionalId(g, "tokenizer.ggml.unknown_token_id", n);
  v.pad_id = OptionalId(g, "tokenizer.ggml.padding_token_id", n);
  ASSIGN_OR_RETURN(v.add_bos, OptionalBool(g, "tokenizer.ggml.add_bos_token", v.bos_id >= 0));
  ASSIGN_OR_RETURN(v.add_eos, OptionalBool(g, "tokenizer.ggml.add_eos_token", false));
  ASSIGN_OR_RETURN(v.add_space_prefix, OptionalBool(g, "tokenizer.ggml.add_space_prefix", true));
  if (v.add_bos && v.bos_id < 0) v.add_bos = false;
  if (v.add_eos && v.eos_id < 0) v.add_eos = false;
  if (g.Has("tokenizer.chat_template")) {
    ASSIGN_OR_RETURN(v.chat_template, g.GetString("tokenizer.chat_template"));
  }
  return v;
}

// transformers' SentencePieceExtractor.extract(vocab_scores): for every piece, each split into
// two pieces of the vocabulary (here: normal pieces only, as SentencePiece merges only those),
// ordered by (id of left, id of right); then all of them stably by the piece's score, descending.
std::vector<std::pair<std::string, std::string>> DeriveMerges(
    const SpmVocab& v, const absl::flat_hash_map<std::string, int32_t>& ids) {
  struct Merge {
    int32_t left, right;
    float score;
  };
  std::vector<Merge> merges;
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    if (!v.IsNormal(id)) continue;
    const std::string& piece = v.tokens[id];
    std::vector<Merge> local;
    for (size_t cut = 1; cut < piece.size(); ++cut) {
      auto l = ids.find(piece.substr(0, cut));
      auto r = ids.find(piece.substr(cut));
      if (l == ids.end() || r == ids.end()) continue;
      if (!v.IsNormal(static_cast<size_t>(l->second)) ||
          !v.IsNormal(static_cast<size_t>(r->second))) {
        continue;
      }
      local.push_back({l->second, r->second, v.scores[id]});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(),
                   [](const Merge& a, const Merge& b) { return a.score > b.score; });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const Merge& m : merges) {
    out.emplace_back(v.tokens[static_cast<size_t>(m.left)], v.tokens[static_cast<size_t>(m.right)]);
  }
  return out;
}

OJson AddedTokens(const SpmVocab& v) {
  OJson added = OJson::array();
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    const int64_t t = v.types[id];
    if (t != kUnknown && t != kControl && t != kUserDefined) continue;
    added.push_back({{"id", id},
                     {"content", v.tokens[id]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", t != kUserDefined}});
  }
  return added;
}

OJson PostProcessor(const SpmVocab& v) {
  if (!v.add_bos && !v.add_eos) return nullptr;
  auto special = [](const std::string& piece, int type_id) {
    return OJson{{"SpecialToken", {{"id", piece}, {"type_id", type_id}}}};
  };
  auto sequence = [](const char* id, int type_id) {
    return OJson{{"Sequence", {{"id", id}, {"type_id", type_id}}}};
  };
  OJson single = OJson::array(), pair = OJson::array(), specials = OJson::object();
  for (int part = 0; part < 2; ++part) {
    OJson& out = part == 0 ? single : pair;
    for (int seq = 0; seq < (part == 0 ? 1 : 2); ++seq) {
      if (v.add_bos) out.push_back(special(*v.Piece(v.bos_id), seq));
      out.push_back(sequence(seq == 0 ? "A" : "B", seq));
      if (v.add_eos) out.push_back(special(*v.Piece(v.eos_id), seq));
    }
  }
  for (int32_t id : {v.add_bos ? v.bos_id : -1, v.add_eos ? v.eos_id : -1}) {
    if (id < 0) continue;
    const std::string piece = *v.Piece(id);
    specials[piece] = {{"id", piece}, {"ids", {id}}, {"tokens", {piece}}};
  }
  return {{"type", "TemplateProcessing"},
          {"single", single},
          {"pair", pair},
          {"special_tokens", specials}};
}

OJson Decoder(const SpmVocab& v) {
  OJson steps = OJson::array();
  steps.push_back({{"type", "Replace"}, {"pattern", {{"String", kMetaspace}}}, {"content", " "}});
  steps.push_back({{"type", "ByteFallback"}});
  steps.push_back({{"type", "Fuse"}});
  if (v.add_space_prefix) {
    steps.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  }
  return {{"type", "Sequence"}, {"decoders", steps}};
}

OJson TokenizerJson(const SpmVocab& v) {
  OJson vocab = OJson::object();
  absl::flat_hash_map<std::string, int32_t> ids;
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    if (!ids.emplace(v.tokens[id], static_cast<int32_t>(id)).second) {
      spdlog::warn("tokenizer: id {} repeats the piece of id {}; tokenizer.json keeps the first",
                   id, ids[v.tokens[id]]);
      continue;
    }
    vocab[v.tokens[id]] = id;
  }
  const auto merges = DeriveMerges(v, ids);
  const bool spaces = std::any_of(merges.begin(), merges.end(), [](const auto& m) {
    return m.first.find(' ') != std::string::npos || m.second.find(' ') != std::string::npos;
  });
  OJson merge_list = OJson::array();
  for (const auto& [l, r] : merges) {
    if (spaces) {
      merge_list.push_back({l, r});  // the list form; "l r" would be ambiguous
    } else {
      merge_list.push_back(absl::StrCat(l, " ", r));
    }
  }
  OJson metaspace = {{"type", "Metaspace"},
                     {"replacement", kMetaspace},
                     {"prepend_scheme", v.add_space_prefix ? "first" : "never"},
                     {"split", false}};
  OJson model = {{"type", "BPE"},
                 {"dropout", nullptr},
                 {"unk_token", v.unk_id >= 0 ? OJson(*v.Piece(v.unk_id)) : OJson(nullptr)},
                 {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr},
                 {"fuse_unk", true},
                 {"byte_fallback", true},
                 {"vocab", vocab},
                 {"merges", merge_list}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", AddedTokens(v)},
          {"normalizer", nullptr},
          {"pre_tokenizer", metaspace},
          {"post_processor", PostProcessor(v)},
          {"decoder", Decoder(v)},
          {"model", model}};
}

OJson PieceOrNull(const SpmVocab& v, int32_t id) {
  return id >= 0 ? OJson(*v.Piece(id)) : OJson(nullptr);
}

OJson TokenizerConfigJson(const SpmVocab& v, int64_t model_max_length) {
  OJson decoder = OJson::object();
  for (const OJson& t : AddedTokens(v)) {
    decoder[std::to_string(t["id"].get<int64_t>())] = {
        {"content", t["content"]}, {"lstrip", false},      {"normalized", false},
        {"rstrip", false},         {"single_word", false}, {"special", t["special"]}};
  }
  OJson j = {{"add_bos_token", v.add_bos},
             {"add_eos_token", v.add_eos},
             {"add_prefix_space", v.add_space_prefix},
             {"added_tokens_decoder", decoder},
             {"bos_token", PieceOrNull(v, v.bos_id)},
             {"eos_token", PieceOrNull(v, v.eos_id)},
             {"unk_token", PieceOrNull(v, v.unk_id)},
             {"pad_token", PieceOrNull(v, v.pad_id)},
             {"clean_up_tokenization_spaces", false},
             {"legacy", false},
             {"model_max_length", model_max_length},
             {"sp_model_kwargs", OJson::object()},
             {"spaces_between_special_tokens", false},
             {"tokenizer_class", "LlamaTokenizerFast"}};
  if (!v.chat_template.empty()) j["chat_template"] = v.chat_template;
  return j;
}

OJson SpecialTokensMapJson(const SpmVocab& v) {
  OJson j = OJson::object();
  const std::pair<const char*, int32_t> specials[] = {{"bos_token", v.bos_id},
                                                      {"eos_token", v.eos_id},
                                                      {"unk_token", v.unk_id},
                                                      {"pad_token", v.pad_id}};
  for (const auto& [key, id] : specials) {
    if (id >= 0) j[key] = *v.Piece(id);
  }
  return j;
}

absl::StatusOr<std::string> Dump(const OJson& j, const std::string& file) {
  try {
    return j.dump(2) + "\n";
  } catch (const OJson::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer: cannot write ", file, ": ", e.what()));
  }
}

}  // namespace

bool GgufHasTokenizer(const GgufFile& gguf) { return gguf.Has("tokenizer.ggml.tokens"); }

absl::StatusOr<std::map<std::string, std::string>> HfTokenizerFiles(const GgufFile& gguf,
                                                                    int64_t model_max_length) {
  ASSIGN_OR_RETURN(std::string model, gguf.GetString("tokenizer.ggml.model"));
  if (model != "llama") {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer: exporting tokenizer model '", model,
        "' to Hugging Face files is not supported (supported: llama, SentencePiece-style)"));
  }
  ASSIGN_OR_RETURN(SpmVocab v, ReadSpmVocab(gguf));
  std::map<std::string, std::string> files;
  ASSIGN_OR_RETURN(files["tokenizer.json"], Dump(TokenizerJson(v), "tokenizer.json"));
  ASSIGN_OR_RETURN(files["tokenizer_config.json"],
                   Dump(TokenizerConfigJson(v, model_max_length), "tokenizer_config.json"));
  ASSIGN_OR_RETURN(files["special_tokens_map.json"],
                   Dump(SpecialTokensMapJson(v), "special_tokens_map.json"));
  return files;
}

}  // namespace funnel
