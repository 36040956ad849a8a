// Text <-> token ids for the common LLM vocabularies.
//
// Algorithms (Vocabulary::model):
//   "llama"  SentencePiece BPE (tokenizer.model protobuf, GGUF `tokenizer.ggml.model = llama`):
//            ' ' becomes U+2581 '▁' (plus one leading '▁' under the space-prefix rule), the text
//            is split into UTF-8 characters (user-defined pieces matched whole), and adjacent
//            symbols merge by highest piece score (ties: leftmost) while the merged string is a
//            piece. Symbols outside the vocabulary fall back to `<0xNN>` byte tokens (or unk).
//   "gpt2"   byte-level BPE (GPT-2 / Qwen2 vocab.json + merges.txt, tokenizer.json ByteLevel,
//            Llama 3 tiktoken ranks, GGUF `tokenizer.ggml.model = gpt2`): the text is split by
//            the pre-tokenizer regexes, each piece's bytes become GPT-2 byte-level symbols, and
//            adjacent symbols merge by lowest merge rank (ties: leftmost).
//   "bpe"    Hugging Face BPE over characters (tokenizer.json SentencePiece-style models with a
//            Metaspace pre-tokenizer or Prepend/Replace normalizers, byte fallback): as "llama"
//            for spaces and fallback, but merges by rank as "gpt2".
// Special tokens: control tokens (type 3) are parsed out of text only with
// EncodeOptions::parse_special; otherwise "<s>" or "<|eot_id|>" in text stays text. User-defined
// tokens (type 4) are always matched whole, as SentencePiece and Hugging Face added tokens are.
//
// A Tokenizer is immutable after construction and safe to share between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/model/gguf_file.h"

namespace funnel {

// Token types as stored in `tokenizer.ggml.token_type` (and SentencePiece's piece types).
enum class TokenType : int32_t {
  kUndefined = 0,  // treated as kNormal
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// A vocabulary as plain data: what FromGguf and the file loaders (tokenizer_loader.h) produce.
// Ids of -1 mean "none".
struct Vocabulary {
  std::string model = "llama";  // "llama", "gpt2" or "bpe" (see the file comment)
  // "llama"/"bpe": pieces with '▁' for spaces. "gpt2": GPT-2 byte-level strings for normal
  // tokens; control / user-defined tokens hold their text as is.
  std::vector<std::string> tokens;
  std::vector<float> scores;     // "llama"; empty: all 0
  std::vector<TokenType> types;  // empty: all kNormal (specials and <0xNN> pieces inferred)
  // "gpt2"/"bpe": merges in rank order (first = rank 0). Pairs whose parts or concatenation are
  // not tokens are ignored.
  std::vector<std::pair<std::string, std::string>> merges;
  // "gpt2" without merges (tiktoken): two adjacent symbols merge when their concatenation is a
  // token, lower token id first.
  bool merges_from_token_ids = false;
  // "gpt2": the pre-tokenizer regexes, applied in sequence (PreTokenizer); empty: no split.
  std::vector<std::string> pre_patterns;
  // "gpt2": a pre-token that is itself a token is emitted whole, without merging (Llama 3).
  bool ignore_merges = false;
  // "bpe": split the '▁'-escaped text before each '▁' and merge the words separately.
  bool metaspace_split = false;
  // "llama": SentencePiece's remove_extra_whitespaces (trim, collapse runs of ' ').
  bool remove_extra_whitespaces = false;
  // With parse_special: whether the text after a special token gets the space prefix too.
  bool space_prefix_after_special = true;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int32_t unk_id = 0;
  int32_t pad_id = -1;
  std::vector<int32_t> extra_eog_ids;  // end-of-turn / end-of-message ids besides eos
  bool add_bos = true;
  bool add_eos = false;
  // "llama"/"bpe": SentencePiece's dummy prefix ('▁' before the text). "gpt2": Hugging Face
  // ByteLevel add_prefix_space (' ' before text that does not start with one).
  bool add_space_prefix = true;
};

struct EncodeOptions {
  // Prepend BOS if the vocabulary asks for it (add_bos_token).
  bool add_bos = true;
  // Space-prefix rule (see Vocabulary::add_space_prefix); false for continuations of a session.
  bool add_space_prefix = true;
  // Append EOS if the vocabulary asks for it (add_eos_token; off for Llama vocabularies).
  bool add_eos = true;
  // Parse control tokens ("<s>", "<|eot_id|>", "[INST]", ...) out of the text. Never set this
  // for user-supplied text.
  bool parse_special = false;
};

class TokenEncoder;
class SpecialTokenMatcher;

class Tokenizer {
 public:
  // Reads the `tokenizer.ggml.*` metadata. InvalidArgument when keys are missing, mistyped or
  // inconsistent (array lengths, ids out of range) or the model is not supported.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& gguf);
  // Validates `vocab` (same errors as FromGguf, plus bad pre-tokenizer regexes) and builds the
  // tokenizer.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromVocab(Vocabulary vocab);

  ~Tokenizer();

  // Encodes text. Control tokens are parsed only with options.parse_special; user-defined
  // pieces (type 4) are always matched whole. Text that is not valid UTF-8 is encoded byte by
  // byte where it is invalid. Empty text gives only BOS (if added).
  std::vector<int32_t> Encode(std::string_view text, const EncodeOptions& options = {}) const;

  // Decodes ids to text: control tokens produce nothing, byte pieces <0xNN> produce their byte,
  // '▁' becomes ' ' ("llama"/"bpe"), byte-level symbols become their bytes ("gpt2"), and the
  // leading space added by the prefix rule is removed from the first piece of the text
  // ("llama"/"bpe"). Out-of-range ids produce nothing. The result is the raw bytes and may be
  // invalid UTF-8 (e.g. ids ending inside a character); IncrementalDetokenizer yields the same
  // text with invalid bytes replaced by U+FFFD.
  std::string Decode(std::span<const int32_t> ids) const;

  // The raw bytes this token contributes mid-text ('▁'→' ', <0xNN>→byte, byte-level
  // symbols→bytes, control→"", unknown→" ⁇ "). Empty for out-of-range ids.
  std::string TokenToPiece(int32_t id) const;
  // The bytes this token contributes as the first piece of a text: TokenToPiece(id) without the
  // leading space that the prefix rule adds (when the vocabulary uses that rule).
  std::string TokenToLeadingPiece(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t pad_id() const { return pad_id_; }
  bool add_bos() const { return add_bos_; }  // what the vocab asks for
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  // "llama", "gpt2" or "bpe".
  const std::string& model() const { return model_; }
  bool IsControl(int32_t id) const;
  // eos, and the end-of-turn / end-of-message ids when the vocabulary names them.
  bool IsEndOfGeneration(int32_t id) const;
  // The end-of-generation ids: eos first (when there is one), then the others, no duplicates.
  const std::vector<int32_t>& end_of_generation_ids() const { return eog_ids_; }
  // Raw vocabulary string; empty for out-of-range ids.
  const std::string& piece(int32_t id) const;
  TokenType type(int32_t id) const;
  // The id whose raw vocabulary string is exactly `piece` (a control or user-defined token
  // preferred over a normal one with the same string); -1 when none.
  int32_t FindToken(std::string_view piece) const;

 private:
  Tokenizer();
  absl::Status Build(Vocabulary& vocab);
  void IndexDecoding();
  bool ValidId(int32_t id) const { return id >= 0 && id < vocab_size(); }
  bool StripsLeadingSpace() const { return add_space_prefix_ && model_ != "gpt2"; }

  std::string model_;
  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  std::vector<std::string> decoded_;  // TokenToPiece per id
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t unk_id_ = -1;
  int32_t pad_id_ = -1;
  std::vector<int32_t> eog_ids_;
  bool add_bos_ = true;
  bool add_eos_ = false;
  bool add_space_prefix_ = true;
  bool space_prefix_after_special_ = true;

  absl::flat_hash_map<std::string, int32_t> token_ids_;  // raw string → id (FindToken)
  std::unique_ptr<const TokenEncoder> encoder_;
  // Tokens split out of text before the encoder runs: always, and with parse_special.
  std::unique_ptr<const SpecialTokenMatcher> always_matched_;
  std::unique_ptr<const SpecialTokenMatcher> special_matched_;
};

}  // namespace funnel
