#include "runtime/text/special_tokens.h"

#include <algorithm>

#include "absl/strings/string_view.h"

namespace funnel {

SpecialTokenMatcher::SpecialTokenMatcher(
    const std::vector<std::pair<std::string, int32_t>>& tokens) {
  for (const auto& [text, id] : tokens) {
    if (text.empty() || !by_text_.try_emplace(text, id).second) continue;
    lengths_by_first_byte_[static_cast<uint8_t>(text[0])].push_back(text.size());
  }
  for (std::vector<size_t>& lengths : lengths_by_first_byte_) {
    std::sort(lengths.rbegin(), lengths.rend());
    lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
  }
}

size_t SpecialTokenMatcher::MatchAt(std::string_view text, int32_t& id) const {
  for (size_t len : lengths_by_first_byte_[static_cast<uint8_t>(text[0])]) {
    if (len > text.size()) continue;
    const auto it = by_text_.find(absl::string_view(text.data(), len));
    if (it != by_text_.end()) {
      id = it->second;
      return len;
    }
  }
  return 0;
}

}  // namespace funnel
