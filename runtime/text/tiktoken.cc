#include "runtime/text/tiktoken.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/text/byte_level_bpe.h"
#include "runtime/text/pretokenizer_regex.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr size_t kLlama3Ranks = 128000;
constexpr int kLlama3Specials = 256;

bool IsBase64Char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/' || c == '=';
}

// Llama 3's special tokens in id order (llama-models models/llama3/tokenizer.py).
std::vector<std::string> Llama3Specials() {
  std::vector<std::string> names = {"<|begin_of_text|>",
                                    "<|end_of_text|>",
                                    "<|reserved_special_token_0|>",
                                    "<|reserved_special_token_1|>",
                                    "<|finetune_right_pad_id|>",
                                    "<|step_id|>",
                                    "<|start_header_id|>",
                                    "<|end_header_id|>",
                                    "<|eom_id|>",
                                    "<|eot_id|>",
                                    "<|python_tag|>",
                                    "<|image|>"};
  const int named = static_cast<int>(names.size());
  for (int i = 0; i < kLlama3Specials - named; ++i) {
    names.push_back(absl::StrCat("<|reserved_special_token_", 2 + i, "|>"));
  }
  return names;
}

absl::Status ParseLine(std::string_view line, size_t line_no, std::vector<std::string>& tokens,
                       std::vector<bool>& seen) {
  const size_t space = line.find(' ');
  uint64_t rank = 0;
  std::string raw;
  if (space == std::string_view::npos ||
      !absl::SimpleAtoi(absl::string_view(line.data() + space + 1, line.size() - space - 1),
                        &rank) ||
      !absl::Base64Unescape(absl::string_view(line.data(), space), &raw) || raw.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tiktoken file: line ", line_no, " is not '<base64 token> <rank>'"));
  }
  if (rank >= tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tiktoken file: line ", line_no, ": rank ", rank,
                                                   " is not below the line count ", tokens.size()));
  }
  if (seen[rank]) {
    return absl::InvalidArgumentError(
        absl::StrCat("tiktoken file: line ", line_no, ": rank ", rank, " appears twice"));
  }
  seen[rank] = true;
  tokens[rank] = BytesToByteLevel(raw);
  return absl::OkStatus();
}

}  // namespace

bool LooksLikeTiktoken(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size() && IsBase64Char(bytes[i])) ++i;
  if (i == 0 || i >= bytes.size() || bytes[i] != ' ') return false;
  size_t digits = 0;
  for (++i; i < bytes.size() && bytes[i] >= '0' && bytes[i] <= '9'; ++i) ++digits;
  return digits > 0 && (i == bytes.size() || bytes[i] == '\n' || bytes[i] == '\r');
}

absl::StatusOr<Vocabulary> VocabularyFromTiktoken(std::string_view file) {
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos < file.size();) {
    size_t end = file.find('\n', pos);
    if (end == std::string_view::npos) end = file.size();
    std::string_view line = file.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) lines.push_back(line);
    pos = end + 1;
  }
  if (lines.size() != kLlama3Ranks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tiktoken file has ", lines.size(), " ranks; only Llama 3's (", kLlama3Ranks,
        ") is a known model (its special tokens and pre-tokenizer are not in the file)"));
  }
  Vocabulary vocab;
  vocab.model = "gpt2";
  vocab.tokens.resize(lines.size());
  std::vector<bool> seen(lines.size(), false);
  for (size_t i = 0; i < lines.size(); ++i) {
    RETURN_IF_ERROR(ParseLine(lines[i], i + 1, vocab.tokens, seen));
  }
  vocab.types.assign(vocab.tokens.size(), TokenType::kNormal);
  const auto base = static_cast<int32_t>(vocab.tokens.size());
  for (std::string& name : Llama3Specials()) {
    vocab.tokens.push_back(std::move(name));
    vocab.types.push_back(TokenType::kControl);
  }
  vocab.merges_from_token_ids = true;
  vocab.ignore_merges = true;
  ASSIGN_OR_RETURN(vocab.pre_patterns, PreTokenizerPatterns("llama3"));
  vocab.bos_id = base;      // <|begin_of_text|>
  vocab.eos_id = base + 1;  // <|end_of_text|>
  vocab.unk_id = -1;
  vocab.pad_id = base + 4;                     // <|finetune_right_pad_id|>
  vocab.extra_eog_ids = {base + 8, base + 9};  // <|eom_id|>, <|eot_id|>
  vocab.add_bos = true;
  vocab.add_eos = false;
  vocab.add_space_prefix = false;
  return vocab;
}

}  // namespace funnel
