// The algorithm behind Tokenizer::Encode for one stretch of text without special tokens.
// Implementations: SpmEncoder (spm_tokenizer.h), ByteLevelBpeEncoder (byte_level_bpe.h),
// CharBpeEncoder (char_bpe.h). Immutable after construction; Encode is safe to call from several
// threads at once.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace funnel {

class TokenEncoder {
 public:
  virtual ~TokenEncoder() = default;
  // Appends the ids of `text` to `out`. `space_prefix`: apply the vocabulary's space-prefix rule
  // to this stretch (it starts the input, or follows a special token where that applies).
  virtual void Encode(std::string_view text, bool space_prefix,
                      std::vector<int32_t>& out) const = 0;
};

}  // namespace funnel
