#include "runtime/text/spm_tokenizer.h"

#include <algorithm>
#include <limits>
#include <queue>
#include <utility>

#include "absl/strings/string_view.h"

namespace funnel {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 '▁'
constexpr size_t kNone = std::numeric_limits<size_t>::max();

absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsMergeableType(TokenType type) {
  return type == TokenType::kNormal || type == TokenType::kUndefined ||
         type == TokenType::kUserDefined || type == TokenType::kUnused;
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

// Whether no piece that can form or be matched contains '▁' right after another character; then
// SentencePiece's merges never cross the start of a "▁word" and words can be merged separately.
bool NoPieceHasInnerSpace(const Vocabulary& vocab) {
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    if (!IsMergeableType(vocab.types[id])) continue;
    std::string_view p = vocab.tokens[id];
    while (p.starts_with(kSpaceSymbol)) p.remove_prefix(kSpaceSymbol.size());
    if (p.find(kSpaceSymbol) != std::string_view::npos) return false;
  }
  return true;
}

}  // namespace

int ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

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

SpmEncoder::SpmEncoder(const Vocabulary& vocab)
    : scores_(vocab.scores),
      types_(vocab.types),
      unk_id_(vocab.unk_id),
      remove_extra_whitespaces_(vocab.remove_extra_whitespaces) {
  byte_ids_.fill(-1);
  for (int32_t id = 0; id < static_cast<int32_t>(vocab.tokens.size()); ++id) {
    const std::string& p = vocab.tokens[id];
    const TokenType t = types_[id];
    if (IsMergeableType(t)) piece_to_id_.try_emplace(p, id);
    if (t == TokenType::kUserDefined && !p.empty()) {
      user_defined_.try_emplace(p, id);
      user_defined_lengths_.push_back(p.size());
    }
    if (t == TokenType::kByte) {
      const int b = ParseBytePiece(p);
      if (b >= 0 && byte_ids_[b] < 0) byte_ids_[b] = id;
    }
  }
  split_at_spaces_ = NoPieceHasInnerSpace(vocab);
  std::sort(user_defined_lengths_.rbegin(), user_defined_lengths_.rend());
  user_defined_lengths_.erase(
      std::unique(user_defined_lengths_.begin(), user_defined_lengths_.end()),
      user_defined_lengths_.end());
}

int32_t SpmEncoder::FindPiece(std::string_view piece) const {
  const auto it = piece_to_id_.find(ToAbsl(piece));
  return it == piece_to_id_.end() ? -1 : it->second;
}

size_t SpmEncoder::MatchUserDefined(std::string_view text) const {
  for (size_t len : user_defined_lengths_) {
    if (len <= text.size() && user_defined_.contains(ToAbsl(text.substr(0, len)))) return len;
  }
  return 0;
}

void SpmEncoder::AppendByteFallback(std::string_view symbol, std::vector<int32_t>& out) const {
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

std::string SpmEncoder::Normalize(std::string_view text, bool space_prefix) const {
  if (remove_extra_whitespaces_) {
    const size_t first = text.find_first_not_of(' ');
    if (first == std::string_view::npos) return "";
    text = text.substr(first, text.find_last_not_of(' ') - first + 1);
  }
  std::string norm;
  norm.reserve(text.size() + text.size() / 2 + kSpaceSymbol.size());
  if (space_prefix) norm += kSpaceSymbol;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != ' ') {
      norm += text[i];
    } else if (!remove_extra_whitespaces_ || text[i - 1] != ' ') {
      norm += kSpaceSymbol;
    }
  }
  return norm;
}

void SpmEncoder::Encode(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  const std::string norm = Normalize(text, space_prefix);
  if (norm.empty()) return;
  if (!split_at_spaces_) {
    EncodeSegment(norm, out);
    return;
  }
  // Segments start at each '▁' that follows another character; no piece spans such a boundary,
  // so each distinct segment is encoded once per call.
  absl::flat_hash_map<absl::string_view, std::pair<uint32_t, uint32_t>> cache;
  std::vector<int32_t> cached;
  std::vector<int32_t> ids;
  const std::string_view view = norm;
  auto emit = [&](std::string_view segment) {
    const absl::string_view key(segment.data(), segment.size());
    auto it = cache.find(key);
    if (it == cache.end()) {
      ids.clear();
      EncodeSegment(segment, ids);
      const auto offset = static_cast<uint32_t>(cached.size());
      cached.insert(cached.end(), ids.begin(), ids.end());
      it = cache.emplace(key, std::make_pair(offset, static_cast<uint32_t>(ids.size()))).first;
    }
    const auto [offset, count] = it->second;
    out.insert(out.end(), cached.begin() + offset, cached.begin() + offset + count);
  };
  size_t start = 0;
  for (size_t pos = view.find(kSpaceSymbol, 1); pos != std::string_view::npos;
       pos = view.find(kSpaceSymbol, pos + kSpaceSymbol.size())) {
    if (pos >= kSpaceSymbol.size() &&
        view.substr(pos - kSpaceSymbol.size(), kSpaceSymbol.size()) == kSpaceSymbol) {
      continue;
    }
    emit(view.substr(start, pos - start));
    start = pos;
  }
  emit(view.substr(start));
}

void SpmEncoder::EncodeSegment(std::string_view view, std::vector<int32_t>& out) const {
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

}  // namespace funnel
