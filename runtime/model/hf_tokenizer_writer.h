// Hugging Face tokenizer files for the vocabulary in a GGUF's `tokenizer.ggml.*` metadata.
//
// Supported: SentencePiece-style vocabularies (`tokenizer.ggml.model = "llama"`), written the way
// transformers' LlamaConverter (legacy=False) writes LlamaTokenizerFast:
//   tokenizer.json         model BPE with byte_fallback, fuse_unk, the vocabulary in id order and
//                          merges derived from the piece scores as transformers'
//                          SentencePieceExtractor does (every split l+r of a normal piece into two
//                          normal pieces, ordered by the merged piece's score, highest first);
//                          Metaspace pre-tokenizer (prepend_scheme "first", or "never" when
//                          add_space_prefix is false); decoder Replace(▁→space), ByteFallback,
//                          Fuse, Strip(1 leading space); TemplateProcessing adding BOS/EOS as
//                          add_bos_token/add_eos_token say; control, unknown and user-defined
//                          pieces as added_tokens (special except user-defined).
//   tokenizer_config.json  add_bos_token, add_eos_token, bos/eos/unk/pad tokens,
//                          added_tokens_decoder, chat_template (tokenizer.chat_template),
//                          model_max_length.
//   special_tokens_map.json
// Other tokenizer models are InvalidArgument naming the model.
//
// Thread safety: free functions, no shared state.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/model/gguf_file.h"

namespace funnel {

// True when `gguf` holds a tokenizer (tokenizer.ggml.tokens).
bool GgufHasTokenizer(const GgufFile& gguf);

// File name -> contents of the tokenizer files. `model_max_length` goes to tokenizer_config.json.
absl::StatusOr<std::map<std::string, std::string>> HfTokenizerFiles(const GgufFile& gguf,
                                                                    int64_t model_max_length);

}  // namespace funnel
