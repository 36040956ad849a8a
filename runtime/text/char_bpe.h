// Hugging Face BPE over characters (Vocabulary::model "bpe"): tokenizer.json models of
// SentencePiece lineage (Llama 2, Mistral) whose text is escaped with '▁' by a Metaspace
// pre-tokenizer or Prepend/Replace normalizers, with byte fallback.
//
// Encoding a stretch: ' ' → '▁' (plus one leading '▁' under the space-prefix rule); with
// metaspace_split, the text is cut before every '▁' and the words merged separately. Each
// word's UTF-8 characters become their tokens and merge by BpeMerges rank (ties: leftmost).
// A character without a token becomes its `<0xNN>` byte tokens, or unk when the vocabulary has
// no byte tokens (consecutive unks fused), as tokenizers' BPE with byte_fallback / fuse_unk.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "runtime/text/bpe_merges.h"
#include "runtime/text/token_encoder.h"

namespace funnel {

class CharBpeEncoder : public TokenEncoder {
 public:
  struct Options {
    BpeMerges merges;
    absl::flat_hash_map<std::string, int32_t> char_ids;  // single characters → token
    std::array<int32_t, 256> byte_ids{};                 // <0xNN> tokens; -1 when absent
    int32_t unk_id = -1;
    bool split = false;
  };

  explicit CharBpeEncoder(Options options) : o_(std::move(options)) {}

  void Encode(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const override;

 private:
  void EncodeWord(std::string_view word, std::vector<int32_t>& out) const;

  Options o_;
};

}  // namespace funnel
