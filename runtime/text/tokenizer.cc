#include "runtime/text/tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";       // U+2581 '▁'
constexpr std::string_view kUnknownSurface = " \xE2\x81\x87 ";  // " ⁇ ", as SentencePiece
constexpr size_t kNone = std::numeric_limits<size_t>::max();

absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Byte value of a "<0xNN>" piece, or nullopt.
std::optional<uint8_t> ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (digit < 0) return std::nullopt;
    value = value * 16 + digit;
  }
  return static_cast<uint8_t>(value);
}

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

// Length of the UTF-8 character starting text[0]: its full length when the lead byte and all
// continuation bytes are present, else 1 (an invalid byte is a symbol of its own).
size_t Utf8CharLength(std::string_view text) {
  const auto lead = static_cast<uint8_t>(text[0]);
  size_t len = 1;
  if (lead >= 0xC0 && lead < 0xE0) len = 2;
  if (lead >= 0xE0 && lead < 0xF0) len = 3;
  if (lead >= 0xF0 && lead < 0xF8) len = 4;
  if (len > text.size()) return 1;
  for (size_t i = 1; i < len; ++i) {
    if ((static_cast<uint8_t>(text[i]) & 0xC0) != 0x80) return 1;
  }
  return len;
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
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    if (ParseBytePiece(vocab.tokens[i])) vocab.types[i] = TokenType::kByte;
  }
  for (int32_t id : {vocab.bos_id, vocab.eos_id, vocab.pad_id}) {
    if (id >= 0) vocab.types[id] = TokenType::kControl;
  }
  if (vocab.unk_id >= 0) vocab.types[vocab.unk_id] = TokenType::kUnknown;
}

absl::Status ValidateVocab(const Vocabulary& vocab) {
  if (vocab.model != "llama") {
    return absl::InvalidArgumentError(absl::StrCat("unsupported tokenizer model '", vocab.model,
                                                   "' (only SentencePiece-style 'llama' for now)"));
  }
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
  for (size_t i = 0; i < vocab.types.size(); ++i) {
    const auto t = static_cast<int32_t>(vocab.types[i]);
    if (t < 0 || t > static_cast<int32_t>(TokenType::kByte)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer: token ", i, " has unknown token type ", t));
    }
    if (vocab.types[i] == TokenType::kByte && !ParseBytePiece(vocab.tokens[i])) {
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

absl::Status ReadSpecialIds(const GgufFile& gguf, Vocabulary& vocab) {
  ASSIGN_OR_RETURN(vocab.bos_id, ReadTokenId(gguf, "tokenizer.ggml.bos_token_id", 1));
  ASSIGN_OR_RETURN(vocab.eos_id, ReadTokenId(gguf, "tokenizer.ggml.eos_token_id", 2));
  ASSIGN_OR_RETURN(vocab.unk_id, ReadTokenId(gguf, "tokenizer.ggml.unknown_token_id", 0));
  ASSIGN_OR_RETURN(vocab.pad_id, ReadTokenId(gguf, "tokenizer.ggml.padding_token_id", -1));
  for (std::string_view key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    ASSIGN_OR_RETURN(int32_t id, ReadTokenId(gguf, key, -1));
    if (id >= 0) vocab.extra_eog_ids.push_back(id);
  }
  ASSIGN_OR_RETURN(vocab.add_bos, ReadBool(gguf, "tokenizer.ggml.add_bos_token", true));
  ASSIGN_OR_RETURN(vocab.add_eos, ReadBool(gguf, "tokenizer.ggml.add_eos_token", false));
  ASSIGN_OR_RETURN(vocab.add_space_prefix, ReadBool(gguf, "tokenizer.ggml.add_space_prefix", true));
  return absl::OkStatus();
}

absl::StatusOr<Vocabulary> ReadVocabulary(const GgufFile& gguf) {
  Vocabulary vocab;
  if (!gguf.Has("tokenizer.ggml.model")) {
    return absl::InvalidArgumentError("tokenizer: GGUF has no tokenizer.ggml.model");
  }
  ASSIGN_OR_RETURN(vocab.model, gguf.GetString("tokenizer.ggml.model"));
  if (!gguf.Has("tokenizer.ggml.tokens")) {
    return absl::InvalidArgumentError("tokenizer: GGUF has no tokenizer.ggml.tokens");
  }
  ASSIGN_OR_RETURN(vocab.tokens, gguf.GetStringArray("tokenizer.ggml.tokens"));
  if (gguf.Has("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(vocab.scores, gguf.GetFloatArray("tokenizer.ggml.scores"));
  }
  ASSIGN_OR_RETURN(vocab.types, ReadTypes(gguf));
  RETURN_IF_ERROR(ReadSpecialIds(gguf, vocab));
  return vocab;
}

// One symbol of the text being merged: a byte range of the normalized text, linked to its
// neighbours. A merged-away symbol has len 0.
struct Symbol {
  size_t prev;
  size_t next;
  size_t start;
  size_t len;
  bool frozen;  // user-defined piece: never merged
};

struct Bigram {
  size_t left;
  size_t right;
  float score;
  size_t len;  // left.len + right.len when queued; a mismatch marks the entry stale
};

// Orders the agenda: highest score first, then leftmost.
struct BigramLess {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& gguf) {
  ASSIGN_OR_RETURN(Vocabulary vocab, ReadVocabulary(gguf));
  return FromVocab(std::move(vocab));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromVocab(Vocabulary vocab) {
  RETURN_IF_ERROR(ValidateVocab(vocab));
  if (vocab.types.empty()) InferTypes(vocab);
  if (vocab.scores.empty()) vocab.scores.assign(vocab.tokens.size(), 0.0f);
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->algorithm_ = Algorithm::kSentencePieceBpe;
  tok->tokens_ = std::move(vocab.tokens);
  tok->scores_ = std::move(vocab.scores);
  tok->types_ = std::move(vocab.types);
  tok->bos_id_ = vocab.bos_id;
  tok->eos_id_ = vocab.eos_id;
  tok->unk_id_ = vocab.unk_id;
  tok->pad_id_ = vocab.pad_id;
  tok->eog_ids_ = std::move(vocab.extra_eog_ids);
  if (vocab.eos_id >= 0) tok->eog_ids_.push_back(vocab.eos_id);
  tok->add_bos_ = vocab.add_bos;
  tok->add_eos_ = vocab.add_eos;
  tok->add_space_prefix_ = vocab.add_space_prefix;
  tok->Index();
  return tok;
}

void Tokenizer::Index() {
  byte_ids_.fill(-1);
  decoded_.resize(tokens_.size());
  for (int32_t id = 0; id < vocab_size(); ++id) {
    const std::string& p = tokens_[id];
    const TokenType t = types_[id];
    if (IsTextType(t)) {
      piece_to_id_.try_emplace(p, id);
      decoded_[id] = ReplaceSpaceSymbol(p);
    }
    if (t == TokenType::kUserDefined && !p.empty()) {
      user_defined_.try_emplace(p, id);
      user_defined_lengths_.push_back(p.size());
    }
    if (t == TokenType::kByte) {
      const uint8_t b = *ParseBytePiece(p);
      if (byte_ids_[b] < 0) byte_ids_[b] = id;
      decoded_[id] = std::string(1, static_cast<char>(b));
    }
    if (t == TokenType::kUnknown) decoded_[id] = std::string(kUnknownSurface);
  }
  std::sort(user_defined_lengths_.rbegin(), user_defined_lengths_.rend());
  user_defined_lengths_.erase(
      std::unique(user_defined_lengths_.begin(), user_defined_lengths_.end()),
      user_defined_lengths_.end());
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> out;
  if (options.add_bos && add_bos_ && bos_id_ >= 0) out.push_back(bos_id_);
  switch (algorithm_) {
    case Algorithm::kSentencePieceBpe:
      EncodeSpm(text, options.add_space_prefix && add_space_prefix_, out);
      break;
  }
  if (options.add_eos && add_eos_ && eos_id_ >= 0) out.push_back(eos_id_);
  return out;
}

int32_t Tokenizer::FindPiece(std::string_view piece) const {
  const auto it = piece_to_id_.find(ToAbsl(piece));
  return it == piece_to_id_.end() ? -1 : it->second;
}

size_t Tokenizer::MatchUserDefined(std::string_view text) const {
  for (size_t len : user_defined_lengths_) {
    if (len <= text.size() && user_defined_.contains(ToAbsl(text.substr(0, len)))) return len;
  }
  return 0;
}

void Tokenizer::AppendByteFallback(std::string_view symbol, std::vector<int32_t>& out) const {
  const bool all_bytes = std::all_of(symbol.begin(), symbol.end(), [&](char c) {
    return byte_ids_[static_cast<uint8_t>(c)] >= 0;
  });
  if (all_bytes) {
    for (char c : symbol) out.push_back(byte_ids_[static_cast<uint8_t>(c)]);
    return;
  }
  // Without byte tokens, runs of unknown symbols collapse into one unk, as in SentencePiece.
  if (unk_id_ >= 0 && (out.empty() || out.back() != unk_id_)) out.push_back(unk_id_);
}

void Tokenizer::EncodeSpm(std::string_view text, bool space_prefix,
                          std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string norm;
  norm.reserve(text.size() + text.size() / 2 + kSpaceSymbol.size());
  if (space_prefix) norm += kSpaceSymbol;
  for (char c : text) {
    if (c == ' ') {
      norm += kSpaceSymbol;
    } else {
      norm += c;
    }
  }
  const std::string_view view = norm;

  std::vector<Symbol> symbols;
  symbols.reserve(view.size());
  for (size_t pos = 0; pos < view.size();) {
    const size_t user_len = MatchUserDefined(view.substr(pos));
    const size_t len = user_len > 0 ? user_len : Utf8CharLength(view.substr(pos));
    const size_t index = symbols.size();
    symbols.push_back({index == 0 ? kNone : index - 1, index + 1, pos, len, user_len > 0});
    pos += len;
  }
  symbols.back().next = kNone;

  auto text_of = [&](size_t i) { return view.substr(symbols[i].start, symbols[i].len); };
  // Pieces of type kUnused may be formed by merges but are split back into their halves.
  absl::flat_hash_map<std::string, std::pair<std::string, std::string>> unused_splits;
  std::priority_queue<Bigram, std::vector<Bigram>, BigramLess> agenda;
  auto try_add = [&](size_t left, size_t right) {
    if (left == kNone || right == kNone) return;
    if (symbols[left].frozen || symbols[right].frozen) return;
    const size_t len = symbols[left].len + symbols[right].len;
    const int32_t id = FindPiece(view.substr(symbols[left].start, len));
    if (id < 0) return;
    agenda.push({left, right, scores_[id], len});
    if (types_[id] == TokenType::kUnused) {
      unused_splits[std::string(view.substr(symbols[left].start, len))] = {
          std::string(text_of(left)), std::string(text_of(right))};
    }
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_add(i - 1, i);

  while (!agenda.empty()) {
    const Bigram top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.len == 0 || right.len == 0 || left.len + right.len != top.len) continue;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next != kNone) symbols[right.next].prev = top.left;
    try_add(left.prev, top.left);
    try_add(top.left, left.next);
  }

  // Maps a final symbol to ids: its piece, the halves of an unused piece, or byte fallback.
  auto emit = [&](auto& self, std::string_view piece) -> void {
    const int32_t id = FindPiece(piece);
    if (id >= 0 && types_[id] == TokenType::kUnused) {
      const auto it = unused_splits.find(ToAbsl(piece));
      if (it != unused_splits.end()) {
        const auto halves = it->second;
        self(self, halves.first);
        self(self, halves.second);
        return;
      }
    }
    if (id >= 0) {
      out.push_back(id);
    } else {
      AppendByteFallback(piece, out);
    }
  };
  for (size_t i = 0; i != kNone; i = symbols[i].next) emit(emit, text_of(i));
}

std::string Tokenizer::TokenToPiece(int32_t id) const { return ValidId(id) ? decoded_[id] : ""; }

std::string Tokenizer::TokenToLeadingPiece(int32_t id) const {
  if (!ValidId(id)) return "";
  const std::string& text = decoded_[id];
  const bool strip = add_space_prefix_ && IsTextType(types_[id]) &&
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

}  // namespace funnel
