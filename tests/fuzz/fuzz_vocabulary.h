// A synthetic SentencePiece ("llama") vocabulary for the fuzz targets that encode prompts: <unk>,
// <s>, </s>, the 256 byte pieces (so any text encodes), the role markers of every chat template
// (ChatML / Llama 3 / Zephyr markers as user-defined pieces, which Encode matches whole in user
// text; the Mistral and [INST] markers as control tokens), and a few hundred normal pieces that
// merge (ASCII characters, "▁"-words, fragments of the marker strings, some multi-byte
// characters). Built in process: no files, the same ids everywhere.
#pragma once

#include <memory>

#include "runtime/text/tokenizer.h"

namespace funnel::fuzz {

// Aborts when the vocabulary does not build (a bug in this file, not in the code under test).
std::unique_ptr<Tokenizer> MakeFuzzTokenizer();

}  // namespace funnel::fuzz
