// Text <-> token ids for the vocabularies stored in GGUF metadata.
//
// Supported: SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`): text is normalized by
// turning ' ' into U+2581 '▁' (plus one leading '▁' under the space-prefix rule), split into
// UTF-8 characters (user-defined pieces matched whole), and adjacent symbols are merged by
// highest vocabulary score (ties: leftmost) while the merged string is a vocabulary piece.
// Symbols outside the vocabulary fall back to their `<0xNN>` byte tokens (or unk without them).
// Other algorithms (byte-level BPE, ...) plug in behind the same interface via `Algorithm`.
//
// A Tokenizer is immutable after construction and safe to share between threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/model/gguf_file.h"

namespace funnel {

// Token types as stored in `tokenizer.ggml.token_type`.
enum class TokenType : int32_t {
  kUndefined = 0,  // treated as kNormal
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// A vocabulary as plain data: what FromGguf reads from the metadata. Ids of -1 mean "none".
struct Vocabulary {
  std::string model = "llama";  // tokenizer.ggml.model
  std::vector<std::string> tokens;
  std::vector<float> scores;     // empty: all 0
  std::vector<TokenType> types;  // empty: all kNormal (specials and <0xNN> pieces inferred)
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int32_t unk_id = 0;
  int32_t pad_id = -1;
  std::vector<int32_t> extra_eog_ids;  // end-of-turn / end-of-message ids besides eos
  bool add_bos = true;
  bool add_eos = false;
  bool add_space_prefix = true;
};

struct EncodeOptions {
  // Prepend BOS if the vocabulary asks for it (add_bos_token).
  bool add_bos = true;
  // SentencePiece leading-space rule; false for continuations of a session.
  bool add_space_prefix = true;
  // Append EOS if the vocabulary asks for it (add_eos_token; off for Llama vocabularies).
  bool add_eos = true;
};

class Tokenizer {
 public:
  // Reads the `tokenizer.ggml.*` metadata. InvalidArgument when keys are missing, mistyped or
  // inconsistent (array lengths, ids out of range) or the model is not supported.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& gguf);
  // Validates `vocab` (same errors as FromGguf) and builds the tokenizer.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromVocab(Vocabulary vocab);

  // Encodes user text. Control tokens are NEVER parsed out of the text ("<s>" stays text);
  // user-defined pieces (type 4) ARE matched whole, as SentencePiece does. Text that is not valid
  // UTF-8 is encoded byte by byte where it is invalid. Empty text gives only BOS (if added).
  std::vector<int32_t> Encode(std::string_view text, const EncodeOptions& options = {}) const;

  // Decodes ids to text: control tokens produce nothing, byte pieces <0xNN> produce their byte,
  // '▁' becomes ' ', and the leading space added by the prefix rule is removed from the first
  // piece of the text. Out-of-range ids produce nothing. The result is the raw bytes and may be
  // invalid UTF-8 (e.g. ids ending inside a byte-fallback character); IncrementalDetokenizer
  // yields the same text with invalid bytes replaced by U+FFFD.
  std::string Decode(std::span<const int32_t> ids) const;

  // The raw bytes this token contributes mid-text ('▁'→' ', <0xNN>→byte, control→"",
  // unknown→" ⁇ "). Empty for out-of-range ids.
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
  bool IsControl(int32_t id) const;
  // eos, and the end-of-turn / end-of-message ids when the vocabulary names them.
  bool IsEndOfGeneration(int32_t id) const;
  // Raw vocabulary string; empty for out-of-range ids.
  const std::string& piece(int32_t id) const;
  TokenType type(int32_t id) const;

 private:
  enum class Algorithm { kSentencePieceBpe };

  Tokenizer() = default;
  void Index();
  bool ValidId(int32_t id) const { return id >= 0 && id < vocab_size(); }
  void EncodeSpm(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const;
  size_t MatchUserDefined(std::string_view text) const;
  // Looks up a mergeable piece (normal, user-defined, unused); -1 when absent.
  int32_t FindPiece(std::string_view piece) const;
  void AppendByteFallback(std::string_view symbol, std::vector<int32_t>& out) const;

  Algorithm algorithm_ = Algorithm::kSentencePieceBpe;
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
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

  absl::flat_hash_map<std::string, int32_t> piece_to_id_;  // mergeable pieces
  absl::flat_hash_map<std::string, int32_t> user_defined_;
  std::vector<size_t> user_defined_lengths_;  // distinct lengths, longest first
  std::array<int32_t, 256> byte_ids_{};       // <0xNN> token per byte; -1 when absent
};

}  // namespace funnel
