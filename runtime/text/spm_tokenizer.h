// SentencePiece BPE (Vocabulary::model "llama"): the encoder behind Tokenizer for vocabularies
// from a SentencePiece tokenizer.model or a GGUF `llama` tokenizer.
//
// Encoding a stretch of text: optional whitespace cleanup (remove_extra_whitespaces), ' ' → '▁'
// (plus one leading '▁' under the space-prefix rule), split into UTF-8 characters with
// user-defined pieces matched whole (never merged further), then repeatedly merge the adjacent
// pair whose concatenation is a piece of highest score (ties: leftmost). Pieces of type unused
// may be formed but are split back into the halves they were made from. Symbols that are not
// pieces fall back to their `<0xNN>` byte tokens, or to unk (consecutive unks collapse) when the
// vocabulary has no byte tokens. This is SentencePiece's bpe_model.cc and llama.cpp's
// llm_tokenizer_spm.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "runtime/text/token_encoder.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

class SpmEncoder : public TokenEncoder {
 public:
  // `vocab` must be validated (types and scores filled in, ids in range).
  explicit SpmEncoder(const Vocabulary& vocab);

  void Encode(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const override;

 private:
  std::string Normalize(std::string_view text, bool space_prefix) const;
  // Merges one stretch of normalized text and appends its ids.
  void EncodeSegment(std::string_view view, std::vector<int32_t>& out) const;
  size_t MatchUserDefined(std::string_view text) const;
  // A mergeable piece (normal, user-defined, unused); -1 when absent.
  int32_t FindPiece(std::string_view piece) const;
  void AppendByteFallback(std::string_view symbol, std::vector<int32_t>& out) const;

  std::vector<float> scores_;
  std::vector<TokenType> types_;
  int32_t unk_id_ = -1;
  bool remove_extra_whitespaces_ = false;
  bool split_at_spaces_ = false;                           // see NoPieceHasInnerSpace in the .cc
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;  // mergeable pieces
  absl::flat_hash_map<std::string, int32_t> user_defined_;
  std::vector<size_t> user_defined_lengths_;  // distinct lengths, longest first
  std::array<int32_t, 256> byte_ids_{};       // <0xNN> token per byte; -1 when absent
};

// Byte value of a "<0xNN>" piece, or -1.
int ParseBytePiece(std::string_view piece);

// Length of the UTF-8 character starting text[0]: its full length when the lead byte and all
// continuation bytes are present, else 1 (an invalid byte is a symbol of its own). text must not
// be empty.
size_t Utf8CharLength(std::string_view text);

}  // namespace funnel
