// Reads a GPT-2-style `vocab.json` ({"byte-level token": id}) and `merges.txt` (an optional
// "#version" line, then "left right" per line in rank order) into a Vocabulary for byte-level BPE
// (model "gpt2"). Every token is normal and there are no special ids or pre-tokenizer patterns:
// the caller adds those (ApplyHfConfig, PreTokenizerPatterns). InvalidArgument naming the file
// for malformed JSON, non-integer or out-of-range ids, or malformed merge lines.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

absl::StatusOr<Vocabulary> VocabularyFromVocabAndMerges(std::string_view vocab_json,
                                                        std::string_view merges_txt);

}  // namespace funnel
