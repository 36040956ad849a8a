// Regex pre-tokenization for byte-level BPE: text → pieces ("words") that are merged separately.
//
// A PreTokenizer is a sequence of PCRE2 patterns (compiled with UTF, UCP and JIT). Each pattern
// splits every piece produced by the previous one with the "Isolated" behaviour of Hugging Face
// `Split` pre-tokenizers and llama.cpp's unicode_regex_split: each match is a piece, and the text
// between matches is a piece too. Lookarounds see the whole piece being split. Invalid UTF-8 never
// matches a character class; it ends up in the gap pieces, so every input byte lands in exactly
// one piece and the concatenation of all pieces is the input.
//
// Named presets follow the tokenizers' own definitions (see PreTokenizerPatterns).
//
// A compiled PreTokenizer is immutable and safe to share between threads; Split() allocates its
// own match state.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace funnel {

// The patterns of a named pre-tokenizer: GGUF `tokenizer.ggml.pre` names ("gpt-2", "llama-bpe",
// "llama3", "qwen2", "starcoder", "falcon", ...) and "default". InvalidArgument listing the
// known names otherwise.
absl::StatusOr<std::vector<std::string>> PreTokenizerPatterns(std::string_view name);

// "gpt-2, llama3, qwen2, ..." for error messages.
std::string KnownPreTokenizerNames();

class PreTokenizer {
 public:
  // Compiles `patterns` (applied in order). InvalidArgument naming the pattern and the PCRE2
  // error when one does not compile. An empty list gives a pre-tokenizer that keeps text whole.
  static absl::StatusOr<std::shared_ptr<const PreTokenizer>> Create(
      const std::vector<std::string>& patterns);

  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Appends the pieces of `text` (views into `text`, in order, none empty) to `pieces`.
  void Split(std::string_view text, std::vector<std::string_view>& pieces) const;

  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  struct Compiled;
  PreTokenizer() = default;
  void SplitOne(const Compiled& re, std::string_view text, void* match_data,
                std::vector<std::string_view>& out) const;

  std::vector<std::string> patterns_;
  std::vector<Compiled> compiled_;
};

}  // namespace funnel
