// Reads a tiktoken BPE rank file (Llama 3's `tokenizer.model`: one "base64(token bytes) rank"
// per line, ranks 0..n-1) into a Vocabulary for byte-level BPE with tiktoken semantics: a
// pre-token that is itself a token is taken whole, otherwise adjacent byte symbols merge while
// their concatenation is a token, lowest rank first.
//
// Llama 3 (128,000 ranks) gets its 256 special tokens at ids 128000..128255 as Meta's
// llama-models tokenizer.py defines them (<|begin_of_text|> = BOS, <|end_of_text|> = EOS,
// <|eom_id|> and <|eot_id|> end generation too), and its pre-tokenizer regex (digits in groups
// of up to 3). Other rank counts are not a known model: InvalidArgument.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

absl::StatusOr<Vocabulary> VocabularyFromTiktoken(std::string_view file);

// Whether `bytes` starts like a tiktoken rank file ("<base64> <digits>\n").
bool LooksLikeTiktoken(std::string_view bytes);

}  // namespace funnel
