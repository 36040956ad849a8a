#include "tests/fuzz/fuzz_vocabulary.h"

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "tests/fuzz/fuzz_check.h"

namespace funnel::fuzz {
namespace {

constexpr const char* kUserDefinedMarkers[] = {
    "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|system|>",   "<|user|>",   "<|assistant|>"};
constexpr const char* kControlMarkers[] = {
    "[INST]",           "[/INST]",           "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_CALLS]",     "[TOOL_RESULTS]",    "[/TOOL_RESULTS]",
    "[TOOL_CONTENT]"};
// Normal pieces beyond the single ASCII characters (no duplicates); ' ' stands for "▁" (U+2581), a
// space.
constexpr const char* kWords[] = {" ",
                                  "  ",
                                  " t",
                                  " th",
                                  " the",
                                  "he",
                                  "in",
                                  "er",
                                  " a",
                                  " w",
                                  "or",
                                  "ld",
                                  " wor",
                                  " world",
                                  "el",
                                  "ll",
                                  "lo",
                                  "llo",
                                  " h",
                                  " he",
                                  " hel",
                                  " hello",
                                  "us",
                                  "user",
                                  "sy",
                                  "sys",
                                  "system",
                                  "as",
                                  "ass",
                                  "assistant",
                                  "ist",
                                  "ant",
                                  "<|",
                                  "|>",
                                  "im",
                                  "_st",
                                  "_start",
                                  "art",
                                  "<|im",
                                  "<|im_",
                                  "end",
                                  "_end",
                                  "[I",
                                  "NS",
                                  "NST",
                                  "T]",
                                  "[/",
                                  "eot",
                                  "_id",
                                  "header",
                                  "\n",
                                  "\n\n",
                                  "\xC3\xA9",
                                  "\xE6\x97\xA5",
                                  "\xF0\x9F\x98\x80",
                                  " \xE6\x97\xA5"};

std::string Escaped(const char* word) { return absl::StrReplaceAll(word, {{" ", "\xE2\x96\x81"}}); }

}  // namespace

std::unique_ptr<Tokenizer> MakeFuzzTokenizer() {
  Vocabulary v;
  v.model = "llama";
  auto add = [&v](std::string piece, TokenType type, float score) {
    v.tokens.push_back(std::move(piece));
    v.types.push_back(type);
    v.scores.push_back(score);
    return static_cast<int32_t>(v.tokens.size() - 1);
  };
  add("<unk>", TokenType::kUnknown, 0);
  add("<s>", TokenType::kControl, 0);
  add("</s>", TokenType::kControl, 0);
  for (int b = 0; b < 256; ++b) add(absl::StrFormat("<0x%02X>", b), TokenType::kByte, 0);
  for (const char* m : kUserDefinedMarkers) {
    const int32_t id = add(m, TokenType::kUserDefined, 0);
    if (std::string(m) == "<|eot_id|>" || std::string(m) == "<|im_end|>") {
      v.extra_eog_ids.push_back(id);
    }
  }
  for (const char* m : kControlMarkers) add(m, TokenType::kControl, 0);
  for (char c = 0x21; c < 0x7F; ++c) add(std::string(1, c), TokenType::kNormal, -100.0f);
  float score = -1.0f;
  for (const char* w : kWords) {
    // Longer pieces win merges over their parts.
    const std::string piece = Escaped(w);
    add(piece, TokenType::kNormal, score + static_cast<float>(piece.size()));
    score -= 0.01f;
  }
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  auto tokenizer = Tokenizer::FromVocab(std::move(v));
  FUZZ_CHECK(tokenizer.ok(), tokenizer.status().ToString());
  return *std::move(tokenizer);
}

}  // namespace funnel::fuzz
