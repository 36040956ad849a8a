// Reads a Hugging Face `tokenizer.json` (the `tokenizers` library's serialization) into a
// Vocabulary.
//
// Supported: model "BPE" with
//   - a ByteLevel pre-tokenizer, alone (GPT-2 regex when use_regex) or after Split / Digits
//     pre-tokenizers in a Sequence (Llama 3, Qwen2): Vocabulary::model "gpt2" with those
//     regexes; ignore_merges and ByteLevel add_prefix_space are honoured;
//   - SentencePiece-style escaping: a Metaspace pre-tokenizer (prepend_scheme first / always /
//     never, split) or Prepend("▁") + Replace(" ", "▁") normalizers (Llama 2, Mistral):
//     Vocabulary::model "bpe", with byte_fallback and unk_token.
// `added_tokens` become control tokens ("special": true) or user-defined tokens (matched whole
// in text); a TemplateProcessing post-processor that starts with a special token sets BOS (and
// add_bos), one that ends with one sets EOS (and add_eos). NFC/NFKC normalizers are not applied
// (a warning is logged): input is assumed to be normalized already.
// InvalidArgument, naming the field, for malformed JSON, other model types (WordPiece, Unigram,
// WordLevel), or pre-tokenizers / normalizers / Split behaviours outside that list.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

absl::StatusOr<Vocabulary> VocabularyFromTokenizerJson(std::string_view json);

}  // namespace funnel
