#include "runtime/text/tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "runtime/text/byte_level_bpe.h"
#include "runtime/text/char_bpe.h"
#include "runtime/text/pretokenizer_regex.h"
#include "runtime/text/special_tokens.h"
#include "runtime/text/spm_tokenizer.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";       // U+2581 '▁'
constexpr std::string_view kUnknownSurface = " \xE2\x81\x87 ";  // " ⁇ ", as SentencePiece

absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string ReplaceSpaceSymbol(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i, kSpaceSymbol.size()) == kSpaceSymbol) {
      out += ' ';
      i += kSpaceSymbol.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

bool IsTextType(TokenType type) {
  return type == TokenType::kNormal || type == TokenType::kUndefined ||
         type == TokenType::kUserDefined || type == TokenType::kUnused;
}

absl::Status CheckId(std::string_view name, int32_t id, size_t n_vocab) {
  if (id >= -1 && id < static_cast<int64_t>(n_vocab)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", ToAbsl(name), " ", id,
                                                 " is out of range for a vocabulary of ", n_vocab,
                                                 " tokens"));
}

// Fills in types when the vocabulary has none: specials from their ids, <0xNN> as bytes.
void InferTypes(Vocabulary& vocab) {
  vocab.types.assign(vocab.tokens.size(), TokenType::kNormal);
  if (vocab.model != "gpt2") {
    for (size_t i = 0; i < vocab.tokens.size(); ++i) {
      if (ParseBytePiece(vocab.tokens[i]) >= 0) vocab.types[i] = TokenType::kByte;
    }
  }
  for (int32_t id : {vocab.bos_id, vocab.eos_id, vocab.pad_id}) {
    if (id >= 0) vocab.types[id] = TokenType::kControl;
  }
  if (vocab.unk_id >= 0) vocab.types[vocab.unk_id] = TokenType::kUnknown;
}

absl::Status CheckModel(const std::string& model) {
  if (model == "llama" || model == "gpt2" || model == "bpe") return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported tokenizer model '", model,
                   "' (supported: 'llama' SentencePiece BPE, 'gpt2' byte-level BPE, 'bpe')"));
}

absl::Status ValidateShape(const Vocabulary& vocab) {
  RETURN_IF_ERROR(CheckModel(vocab.model));
  const size_t n = vocab.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer: tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError("tokenizer: too many tokens");
  }
  if (!vocab.scores.empty() && vocab.scores.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: tokenizer.ggml.scores has ",
                                                   vocab.scores.size(),
                                                   " entries but tokenizer.ggml.tokens has ", n));
  }
  if (!vocab.types.empty() && vocab.types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: tokenizer.ggml.token_type has ",
                                                   vocab.types.size(),
                                                   " entries but tokenizer.ggml.tokens has ", n));
  }
  return absl::OkStatus();
}

absl::Status ValidateVocab(const Vocabulary& vocab) {
  RETURN_IF_ERROR(ValidateShape(vocab));
  const size_t n = vocab.tokens.size();
  for (size_t i = 0; i < vocab.types.size(); ++i) {
    const auto t = static_cast<int32_t>(vocab.types[i]);
    if (t < 0 || t > static_cast<int32_t>(TokenType::kByte)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer: token ", i, " has unknown token type ", t));
    }
    if (vocab.types[i] == TokenType::kByte && ParseBytePiece(vocab.tokens[i]) < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: byte token ", i, " has piece '",
                                                     vocab.tokens[i], "', expected <0xNN>"));
    }
  }
  RETURN_IF_ERROR(CheckId("bos_token_id", vocab.bos_id, n));
  RETURN_IF_ERROR(CheckId("eos_token_id", vocab.eos_id, n));
  RETURN_IF_ERROR(CheckId("unknown_token_id", vocab.unk_id, n));
  RETURN_IF_ERROR(CheckId("padding_token_id", vocab.pad_id, n));
  for (int32_t id : vocab.extra_eog_ids) RETURN_IF_ERROR(CheckId("end-of-generation id", id, n));
  return absl::OkStatus();
}

// Reads an optional token id; absent keys give `fallback`, -1 and 0xFFFFFFFF mean "none".
absl::StatusOr<int32_t> ReadTokenId(const GgufFile& gguf, std::string_view key, int32_t fallback) {
  if (!gguf.Has(key)) return fallback;
  ASSIGN_OR_RETURN(int64_t value, gguf.GetInt(key));
  if (value == -1 || value == 0xFFFFFFFFLL) return -1;
  if (value < 0 || value > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer: ", ToAbsl(key), " = ", value, " is not a valid token id"));
  }
  return static_cast<int32_t>(value);
}

absl::StatusOr<bool> ReadBool(const GgufFile& gguf, std::string_view key, bool fallback) {
  if (!gguf.Has(key)) return fallback;
  return gguf.GetBool(key);
}

absl::StatusOr<std::vector<TokenType>> ReadTypes(const GgufFile& gguf) {
  std::vector<TokenType> types;
  if (!gguf.Has("tokenizer.ggml.token_type")) return types;
  ASSIGN_OR_RETURN(std::vector<int64_t> raw, gguf.GetIntArray("tokenizer.ggml.token_type"));
  types.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] < 0 || raw[i] > static_cast<int64_t>(TokenType::kByte)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: tokenizer.ggml.token_type[", i,
                                                     "] = ", raw[i], " is not a known token type"));
    }
    types.push_back(static_cast<TokenType>(raw[i]));
  }
  return types;
}

bool IsLlama3Pre(std::string_view pre) {
  return pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3" || pre == "dbrx" ||
         pre == "smaug-bpe";
}

absl::Status ReadSpecialIds(const GgufFile& gguf, std::string_view pre, Vocabulary& vocab) {
  const bool spm = vocab.model == "llama";
  ASSIGN_OR_RETURN(vocab.bos_id, ReadTokenId(gguf, "tokenizer.ggml.bos_token_id", spm ? 1 : -1));
  ASSIGN_OR_RETURN(vocab.eos_id, ReadTokenId(gguf, "tokenizer.ggml.eos_token_id", spm ? 2 : -1));
  ASSIGN_OR_RETURN(vocab.unk_id,
                   ReadTokenId(gguf, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1));
  ASSIGN_OR_RETURN(vocab.pad_id, ReadTokenId(gguf, "tokenizer.ggml.padding_token_id", -1));
  for (std::string_view key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    ASSIGN_OR_RETURN(int32_t id, ReadTokenId(gguf, key, -1));
    if (id >= 0) vocab.extra_eog_ids.push_back(id);
  }
  // llama.cpp's defaults: BOS for SentencePiece and Llama 3 vocabularies, not for GPT-2 ones.
  const bool bos_default = spm || IsLlama3Pre(pre);
  ASSIGN_OR_RETURN(vocab.add_bos, ReadBool(gguf, "tokenizer.ggml.add_bos_token", bos_default));
  ASSIGN_OR_RETURN(vocab.add_eos, ReadBool(gguf, "tokenizer.ggml.add_eos_token", false));
  ASSIGN_OR_RETURN(vocab.add_space_prefix, ReadBool(gguf, "tokenizer.ggml.add_space_prefix", spm));
  return absl::OkStatus();
}

// "left right" → (left, right), split at the first space after the first byte (llama.cpp).
absl::StatusOr<std::pair<std::string, std::string>> SplitMerge(const std::string& merge,
                                                               size_t index) {
  const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string::npos;
  if (space == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: tokenizer.ggml.merges[", index,
                                                   "] = '", merge, "' is not 'left right'"));
  }
  return std::make_pair(merge.substr(0, space), merge.substr(space + 1));
}

absl::Status ReadByteLevel(const GgufFile& gguf, Vocabulary& vocab, std::string& pre) {
  pre = "gpt-2";
  if (gguf.Has("tokenizer.ggml.pre")) {
    ASSIGN_OR_RETURN(pre, gguf.GetString("tokenizer.ggml.pre"));
  }
  ASSIGN_OR_RETURN(vocab.pre_patterns, PreTokenizerPatterns(pre));
  vocab.ignore_merges = IsLlama3Pre(pre);
  if (!gguf.Has("tokenizer.ggml.merges")) {
    return absl::InvalidArgumentError(
        "tokenizer: GGUF gpt2 tokenizer has no tokenizer.ggml.merges");
  }
  ASSIGN_OR_RETURN(std::vector<std::string> merges, gguf.GetStringArray("tokenizer.ggml.merges"));
  vocab.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    ASSIGN_OR_RETURN(auto pair, SplitMerge(merges[i], i));
    vocab.merges.push_back(std::move(pair));
  }
  return absl::OkStatus();
}

absl::StatusOr<Vocabulary> ReadVocabulary(const GgufFile& gguf) {
  Vocabulary vocab;
  if (!gguf.Has("tokenizer.ggml.model")) {
    return absl::InvalidArgumentError("tokenizer: GGUF has no tokenizer.ggml.model");
  }
  ASSIGN_OR_RETURN(vocab.model, gguf.GetString("tokenizer.ggml.model"));
  RETURN_IF_ERROR(CheckModel(vocab.model));
  if (!gguf.Has("tokenizer.ggml.tokens")) {
    return absl::InvalidArgumentError("tokenizer: GGUF has no tokenizer.ggml.tokens");
  }
  ASSIGN_OR_RETURN(vocab.tokens, gguf.GetStringArray("tokenizer.ggml.tokens"));
  if (gguf.Has("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(vocab.scores, gguf.GetFloatArray("tokenizer.ggml.scores"));
  }
  ASSIGN_OR_RETURN(vocab.types, ReadTypes(gguf));
  std::string pre;
  if (vocab.model == "gpt2") RETURN_IF_ERROR(ReadByteLevel(gguf, vocab, pre));
  RETURN_IF_ERROR(ReadSpecialIds(gguf, pre, vocab));
  return vocab;
}

// Token id by raw string for merges: the first id of each string.
absl::flat_hash_map<std::string, int32_t> IndexTokens(const Vocabulary& vocab) {
  absl::flat_hash_map<std::string, int32_t> ids;
  ids.reserve(vocab.tokens.size());
  for (int32_t id = 0; id < static_cast<int32_t>(vocab.tokens.size()); ++id) {
    ids.try_emplace(vocab.tokens[id], id);
  }
  return ids;
}

BpeMerges MergesFromPairs(const Vocabulary& vocab,
                          const absl::flat_hash_map<std::string, int32_t>& ids) {
  BpeMerges merges;
  merges.Reserve(vocab.merges.size());
  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    const auto& [left, right] = vocab.merges[rank];
    const auto l = ids.find(left);
    const auto r = ids.find(right);
    const auto m = ids.find(left + right);
    if (l == ids.end() || r == ids.end() || m == ids.end()) continue;
    merges.Add(l->second, r->second, static_cast<int32_t>(rank), m->second);
  }
  return merges;
}

// tiktoken: every split of a token into two tokens is a merge ranked by the token's id.
BpeMerges MergesFromTokenIds(const Vocabulary& vocab,
                             const absl::flat_hash_map<std::string, int32_t>& raw_ids) {
  BpeMerges merges;
  merges.Reserve(vocab.tokens.size() * 2);
  for (const auto& [raw, id] : raw_ids) {
    for (size_t k = 1; k < raw.size(); ++k) {
      const auto l = raw_ids.find(absl::string_view(raw.data(), k));
      if (l == raw_ids.end()) continue;
      const auto r = raw_ids.find(absl::string_view(raw.data() + k, raw.size() - k));
      if (r != raw_ids.end()) merges.Add(l->second, r->second, id, id);
    }
  }
  return merges;
}

absl::StatusOr<std::unique_ptr<const TokenEncoder>> MakeByteLevel(const Vocabulary& vocab) {
  ASSIGN_OR_RETURN(std::shared_ptr<const PreTokenizer> pre,
                   PreTokenizer::Create(vocab.pre_patterns));
  ByteLevelBpeEncoder::Options o;
  o.pre_tokenizer = std::move(pre);
  o.ignore_merges = vocab.ignore_merges;
  o.add_prefix_space = vocab.add_space_prefix;
  o.unk_id = vocab.unk_id;
  std::string raw;
  for (int32_t id = 0; id < static_cast<int32_t>(vocab.tokens.size()); ++id) {
    const TokenType t = vocab.types[id];
    if (t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kByte) continue;
    if (!ByteLevelToBytes(vocab.tokens[id], raw) || raw.empty()) continue;
    o.whole_tokens.try_emplace(raw, id);
  }
  o.byte_ids.fill(-1);
  for (int b = 0; b < 256; ++b) {
    const auto it = o.whole_tokens.find(std::string(1, static_cast<char>(b)));
    if (it != o.whole_tokens.end()) o.byte_ids[b] = it->second;
  }
  o.merges = vocab.merges_from_token_ids ? MergesFromTokenIds(vocab, o.whole_tokens)
                                         : MergesFromPairs(vocab, IndexTokens(vocab));
  return std::unique_ptr<const TokenEncoder>(new ByteLevelBpeEncoder(std::move(o)));
}

std::unique_ptr<const TokenEncoder> MakeCharBpe(const Vocabulary& vocab) {
  CharBpeEncoder::Options o;
  o.split = vocab.metaspace_split;
  o.unk_id = vocab.unk_id;
  o.byte_ids.fill(-1);
  for (int32_t id = 0; id < static_cast<int32_t>(vocab.tokens.size()); ++id) {
    const std::string& p = vocab.tokens[id];
    const TokenType t = vocab.types[id];
    if (t == TokenType::kByte) {
      const int b = ParseBytePiece(p);
      if (o.byte_ids[b] < 0) o.byte_ids[b] = id;
    } else if (IsTextType(t) && !p.empty() && Utf8CharLength(p) == p.size()) {
      o.char_ids.try_emplace(p, id);
    }
  }
  o.merges = MergesFromPairs(vocab, IndexTokens(vocab));
  return std::unique_ptr<const TokenEncoder>(new CharBpeEncoder(std::move(o)));
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& gguf) {
  ASSIGN_OR_RETURN(Vocabulary vocab, ReadVocabulary(gguf));
  return FromVocab(std::move(vocab));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromVocab(Vocabulary vocab) {
  RETURN_IF_ERROR(ValidateVocab(vocab));
  if (vocab.types.empty()) InferTypes(vocab);
  if (vocab.scores.empty()) vocab.scores.assign(vocab.tokens.size(), 0.0f);
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  RETURN_IF_ERROR(tok->Build(vocab));
  return tok;
}

absl::Status Tokenizer::Build(Vocabulary& vocab) {
  if (vocab.model == "llama") {
    encoder_ = std::make_unique<SpmEncoder>(vocab);
  } else if (vocab.model == "gpt2") {
    ASSIGN_OR_RETURN(encoder_, MakeByteLevel(vocab));
  } else {
    encoder_ = MakeCharBpe(vocab);
  }
  model_ = std::move(vocab.model);
  tokens_ = std::move(vocab.tokens);
  types_ = std::move(vocab.types);
  bos_id_ = vocab.bos_id;
  eos_id_ = vocab.eos_id;
  unk_id_ = vocab.unk_id;
  pad_id_ = vocab.pad_id;
  if (vocab.eos_id >= 0) eog_ids_.push_back(vocab.eos_id);
  for (int32_t id : vocab.extra_eog_ids) {
    if (std::find(eog_ids_.begin(), eog_ids_.end(), id) == eog_ids_.end()) eog_ids_.push_back(id);
  }
  add_bos_ = vocab.add_bos;
  add_eos_ = vocab.add_eos;
  add_space_prefix_ = vocab.add_space_prefix;
  space_prefix_after_special_ = vocab.space_prefix_after_special;
  IndexDecoding();

  std::vector<std::pair<std::string, int32_t>> always, special;
  for (int32_t id = 0; id < vocab_size(); ++id) {
    const bool user = types_[id] == TokenType::kUserDefined;
    // SentencePiece matches user-defined pieces inside the '▁'-escaped text (SpmEncoder).
    if (user && model_ != "llama") always.emplace_back(tokens_[id], id);
    if (types_[id] == TokenType::kControl || (user && model_ != "llama")) {
      special.emplace_back(tokens_[id], id);
    }
  }
  always_matched_ = std::make_unique<SpecialTokenMatcher>(always);
  special_matched_ = std::make_unique<SpecialTokenMatcher>(special);
  return absl::OkStatus();
}

void Tokenizer::IndexDecoding() {
  decoded_.resize(tokens_.size());
  std::string bytes;
  for (int32_t id = 0; id < vocab_size(); ++id) {
    const std::string& p = tokens_[id];
    const TokenType t = types_[id];
    auto [it, inserted] = token_ids_.try_emplace(p, id);
    if (!inserted && (t == TokenType::kControl || t == TokenType::kUserDefined) &&
        types_[it->second] != TokenType::kControl &&
        types_[it->second] != TokenType::kUserDefined) {
      it->second = id;
    }
    if (t == TokenType::kByte) {
      decoded_[id] = std::string(1, static_cast<char>(ParseBytePiece(p)));
    } else if (t == TokenType::kUnknown) {
      decoded_[id] = std::string(kUnknownSurface);
    } else if (t == TokenType::kControl) {
      decoded_[id].clear();
    } else if (model_ != "gpt2") {
      decoded_[id] = ReplaceSpaceSymbol(p);
    } else if (t != TokenType::kUserDefined && ByteLevelToBytes(p, bytes)) {
      decoded_[id] = bytes;
    } else {
      decoded_[id] = p;
    }
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> out;
  if (options.add_bos && add_bos_ && bos_id_ >= 0) out.push_back(bos_id_);
  const bool prefix = options.add_space_prefix && add_space_prefix_;
  const SpecialTokenMatcher& matcher = options.parse_special ? *special_matched_ : *always_matched_;
  if (matcher.empty()) {
    encoder_->Encode(text, prefix, out);
  } else {
    bool at_start = true;
    bool after_token = false;
    matcher.Split(
        text,
        [&](std::string_view stretch) {
          const bool p = at_start ? prefix : (after_token && prefix && space_prefix_after_special_);
          encoder_->Encode(stretch, p, out);
          at_start = after_token = false;
        },
        [&](int32_t id) {
          out.push_back(id);
          at_start = false;
          after_token = true;
        });
  }
  if (options.add_eos && add_eos_ && eos_id_ >= 0) out.push_back(eos_id_);
  return out;
}

std::string Tokenizer::TokenToPiece(int32_t id) const { return ValidId(id) ? decoded_[id] : ""; }

std::string Tokenizer::TokenToLeadingPiece(int32_t id) const {
  if (!ValidId(id)) return "";
  const std::string& text = decoded_[id];
  const bool strip = StripsLeadingSpace() && IsTextType(types_[id]) &&
                     tokens_[id].starts_with(kSpaceSymbol) && !text.empty() && text[0] == ' ';
  return strip ? text.substr(1) : text;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string out;
  bool at_start = true;
  for (int32_t id : ids) {
    if (!ValidId(id) || decoded_[id].empty()) continue;
    out += at_start ? TokenToLeadingPiece(id) : decoded_[id];
    at_start = false;
  }
  return out;
}

bool Tokenizer::IsControl(int32_t id) const {
  return ValidId(id) && types_[id] == TokenType::kControl;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return id >= 0 && std::find(eog_ids_.begin(), eog_ids_.end(), id) != eog_ids_.end();
}

const std::string& Tokenizer::piece(int32_t id) const {
  static const std::string* const kEmpty = new std::string();
  return ValidId(id) ? tokens_[id] : *kEmpty;
}

TokenType Tokenizer::type(int32_t id) const {
  return ValidId(id) ? types_[id] : TokenType::kUndefined;
}

int32_t Tokenizer::FindToken(std::string_view piece) const {
  const auto it = token_ids_.find(ToAbsl(piece));
  return it == token_ids_.end() ? -1 : it->second;
}

}  // namespace funnel
