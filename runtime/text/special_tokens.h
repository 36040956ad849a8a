// Finds special / added tokens in text (longest match first), so they can be split out before a
// TokenEncoder sees the rest. Immutable after construction; safe to share between threads.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace funnel {

class SpecialTokenMatcher {
 public:
  // `tokens`: (text, id); empty texts are ignored; for duplicate texts the first id wins.
  explicit SpecialTokenMatcher(const std::vector<std::pair<std::string, int32_t>>& tokens);

  bool empty() const { return by_text_.empty(); }

  // Calls `on_text(std::string_view)` for each stretch of plain text and `on_token(int32_t)`
  // for each token found, in order. Stretches are never empty.
  template <typename OnText, typename OnToken>
  void Split(std::string_view text, OnText&& on_text, OnToken&& on_token) const {
    size_t start = 0;
    for (size_t pos = 0; pos < text.size();) {
      if (lengths_by_first_byte_[static_cast<uint8_t>(text[pos])].empty()) {
        ++pos;
        continue;
      }
      int32_t id = -1;
      const size_t len = MatchAt(text.substr(pos), id);
      if (len == 0) {
        ++pos;
        continue;
      }
      if (pos > start) on_text(text.substr(start, pos - start));
      on_token(id);
      pos += len;
      start = pos;
    }
    if (start < text.size()) on_text(text.substr(start));
  }

 private:
  // Length of the longest token at the start of `text` (0: none), its id in `id`.
  size_t MatchAt(std::string_view text, int32_t& id) const;

  absl::flat_hash_map<std::string, int32_t> by_text_;
  std::array<std::vector<size_t>, 256> lengths_by_first_byte_;  // distinct, longest first
};

}  // namespace funnel
