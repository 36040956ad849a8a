// Finds and loads a tokenizer (and the chat template and end-of-generation ids that come with it)
// from whatever a user points at: a GGUF file, a Hugging Face model directory, a directory holding
// only tokenizer files, or a single tokenizer file.
//
// What `path` may be, and what is read:
//   GGUF file (by magic)   tokenizer.ggml.* metadata (Tokenizer::FromGguf) and
//                          tokenizer.chat_template.
//   directory              the first of tokenizer.json, tokenizer.model, vocab.json (+ merges.txt
//                          beside it), read as the file of that name below.
//   any other file         tokenizer.json (content starting with '{'), vocab.json (by name), or
//                          tokenizer.model: a SentencePiece protobuf or tiktoken ranks (Llama 3:
//                          256 special tokens added from id 128000), told apart by content.
//   With every non-GGUF file, the optional side files of its directory apply (see
//   hf_tokenizer_config.h): tokenizer_config.json (added tokens, bos/eos/unk/pad, add_bos_token,
//   chat_template), special_tokens_map.json, added_tokens.json, config.json (bos/eos ids,
//   model_type), generation_config.json (eos_token_id: one id or a list), chat_template.jinja.
//   For vocab.json + merges.txt the pre-tokenizer regex follows the model family
//   (tokenizer_class / model_type: Qwen2, Llama 3, else GPT-2).
// Errors: NotFound when nothing loadable is there (the message lists what was looked for),
// InvalidArgument for malformed or unsupported files (the message names the file and the
// problem). Bad input never crashes the process.
//
// Thread safety: free functions with no shared state; the returned Tokenizer is immutable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

struct LoadedTokenizer {
  std::unique_ptr<Tokenizer> tokenizer;  // never null on success
  // The Jinja chat template source found with the tokenizer (GGUF tokenizer.chat_template, or
  // tokenizer_config.json "chat_template"; when that is a list of named templates, the one named
  // "default"). Empty when there is none. Pass to ChatTemplate::Detect.
  std::string chat_template;
  // Every end-of-generation id, deduplicated, in order: the tokenizer's eos, then the
  // vocabulary's own end-of-turn ids (GGUF eot/eom ids; Llama 3's <|eom_id|>, <|eot_id|>), then
  // config.json and generation_config.json eos_token_id(s). Equals
  // tokenizer->end_of_generation_ids(): IsEndOfGeneration() is true for exactly these ids.
  std::vector<int32_t> eos_ids;
  // What was loaded, e.g. "tokenizer.json (byte-level BPE, 128256 tokens)" or
  // "model.gguf (GGUF SentencePiece BPE, 32000 tokens)".
  std::string description;
};

// Loads the tokenizer at `path`: a GGUF file, a Hugging Face model directory (tokenizer.json, or
// tokenizer.model, or vocab.json+merges.txt, with tokenizer_config.json / generation_config.json /
// config.json for specials, BOS/EOS and the chat template), or a single tokenizer file
// (tokenizer.model of either kind, tokenizer.json).
absl::StatusOr<LoadedTokenizer> LoadTokenizerAndTemplate(const std::string& path);

// LoadTokenizerAndTemplate(path).tokenizer.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);

}  // namespace funnel
