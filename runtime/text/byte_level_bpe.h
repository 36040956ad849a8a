// Byte-level BPE (Vocabulary::model "gpt2"): GPT-2's byte ↔ unicode map, and the encoder that
// splits text with a PreTokenizer and merges each piece's bytes by BpeMerges ranks.
//
// Encoding a stretch: optional ' ' prefix (Hugging Face ByteLevel add_prefix_space), regex
// split, then per piece: the whole piece's token when ignore_merges is set and there is one;
// else one symbol per byte (the token of that byte's GPT-2 character) merged by rank. Identical
// pieces of one Encode call are merged once (a per-call cache), which is what makes long texts
// fast; no state is kept between calls.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "runtime/text/bpe_merges.h"
#include "runtime/text/pretokenizer_regex.h"
#include "runtime/text/token_encoder.h"

namespace funnel {

// Raw bytes → GPT-2 byte-level string (each byte one code point: printable Latin-1 bytes map to
// themselves, the others to U+0100 upwards).
std::string BytesToByteLevel(std::string_view bytes);
// GPT-2 byte-level string → raw bytes; false when a character is not in the map (then `bytes`
// is unspecified).
bool ByteLevelToBytes(std::string_view text, std::string& bytes);

class ByteLevelBpeEncoder : public TokenEncoder {
 public:
  struct Options {
    std::shared_ptr<const PreTokenizer> pre_tokenizer;  // not null
    BpeMerges merges;
    // Token of each single byte (-1: none; such bytes become unk_id, or nothing without one).
    std::array<int32_t, 256> byte_ids{};
    // Raw bytes → id of the normal tokens, for ignore_merges.
    absl::flat_hash_map<std::string, int32_t> whole_tokens;
    bool ignore_merges = false;
    bool add_prefix_space = false;
    int32_t unk_id = -1;
  };

  explicit ByteLevelBpeEncoder(Options options) : o_(std::move(options)) {}

  void Encode(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const override;

 private:
  void EncodeWord(std::string_view word, std::vector<int32_t>& symbols) const;

  Options o_;
};

}  // namespace funnel
