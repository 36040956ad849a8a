#include "runtime/text/char_bpe.h"

#include <utility>

#include "absl/strings/string_view.h"
#include "runtime/text/spm_tokenizer.h"

namespace funnel {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 '▁'

}  // namespace

void CharBpeEncoder::EncodeWord(std::string_view word, std::vector<int32_t>& out) const {
  // Symbols: token ids, or -(1 + offset) for a character without a token (never merged).
  std::vector<int32_t> symbols;
  std::vector<size_t> unknown_lengths;  // by the order of unknown symbols
  for (size_t pos = 0; pos < word.size();) {
    const size_t len = Utf8CharLength(word.substr(pos));
    const auto it = o_.char_ids.find(absl::string_view(word.data() + pos, len));
    symbols.push_back(it != o_.char_ids.end() ? it->second : -1 - static_cast<int32_t>(pos));
    pos += len;
  }
  o_.merges.MergeWord(symbols);
  for (int32_t s : symbols) {
    if (s >= 0) {
      out.push_back(s);
      continue;
    }
    const size_t pos = static_cast<size_t>(-1 - s);
    const std::string_view ch = word.substr(pos, Utf8CharLength(word.substr(pos)));
    bool all_bytes = true;
    for (char c : ch) all_bytes = all_bytes && o_.byte_ids[static_cast<uint8_t>(c)] >= 0;
    if (all_bytes) {
      for (char c : ch) out.push_back(o_.byte_ids[static_cast<uint8_t>(c)]);
    } else if (o_.unk_id >= 0 && (out.empty() || out.back() != o_.unk_id)) {
      out.push_back(o_.unk_id);
    }
  }
}

void CharBpeEncoder::Encode(std::string_view text, bool space_prefix,
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
  if (!o_.split) {
    EncodeWord(view, out);
    return;
  }
  size_t start = 0;
  for (size_t pos = view.find(kSpaceSymbol, 1); pos != std::string_view::npos;
       pos = view.find(kSpaceSymbol, pos + kSpaceSymbol.size())) {
    EncodeWord(view.substr(start, pos - start), out);
    start = pos;
  }
  EncodeWord(view.substr(start), out);
}

}  // namespace funnel
