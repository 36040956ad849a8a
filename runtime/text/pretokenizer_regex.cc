#include "runtime/text/pretokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace funnel {
namespace {

// GPT-2's pattern as llama.cpp writes it (without HF's trailing `|\s+`: a whitespace character
// that no alternative matches becomes a gap piece, which is the same piece).
constexpr char kGpt2[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
// Llama 3 (tiktoken cl100k-style, digits in groups of up to 3). The case-insensitive
// contractions are spelled out with ASCII classes, as llama.cpp does, so that non-ASCII case
// folding (e.g. U+017F) cannot change the split.
constexpr char kLlama3[] =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: as Llama 3 but single digits.
constexpr char kQwen2[] =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Preset {
  const char* name;
  std::array<const char*, 6> patterns;  // unused entries are null
};

// Pattern lists of llama.cpp's llm_tokenizer_bpe for each tokenizer.ggml.pre value.
// DeepSeek's CJK run and (LLM) Latin/Greek/Cyrillic letter classes, as llama.cpp spells them.
constexpr char kDeepseekCjk[] = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+";
constexpr char kDeepseekLetters[] =
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293"
    "\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c"
    "\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5"
    "\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    "\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59"
    "\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc"
    "\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee"
    "\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e"
    "\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f"
    "\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943]+";
constexpr char kDeepseekPunct[] =
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+";

constexpr std::array<Preset, 20> kPresets = {{
    {"gpt-2", {kGpt2}},
    {"gpt2", {kGpt2}},
    {"mpt", {kGpt2}},
    {"olmo", {kGpt2}},
    {"jais", {kGpt2}},
    {"llama3", {kLlama3}},
    {"llama-bpe", {kLlama3}},
    {"llama-v3", {kLlama3}},
    {"dbrx", {kLlama3}},
    {"smaug-bpe", {kLlama3}},
    {"qwen2", {kQwen2}},
    {"stablelm2", {kQwen2}},
    {"starcoder", {R"(\p{N})", kGpt2}},
    {"refact", {R"(\p{N})", kGpt2}},
    {"command-r", {R"(\p{N})", kGpt2}},
    {"smollm", {R"(\p{N})", kGpt2}},
    {"falcon", {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}},
    {"deepseek-coder", {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"}},
    {"deepseek-llm",
     {"[\r\n]", kDeepseekLetters, kDeepseekPunct, R"(\s+$)", kDeepseekCjk, R"(\p{N}+)"}},
    {"default", {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}},
}};

size_t Utf8Advance(std::string_view text, size_t pos) {
  const auto lead = static_cast<uint8_t>(text[pos]);
  size_t len = 1;
  if (lead >= 0xC0 && lead < 0xE0) len = 2;
  if (lead >= 0xE0 && lead < 0xF0) len = 3;
  if (lead >= 0xF0) len = 4;
  return std::min(text.size(), pos + len);
}

}  // namespace

struct PreTokenizer::Compiled {
  pcre2_code* code = nullptr;
};

absl::StatusOr<std::vector<std::string>> PreTokenizerPatterns(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (name != p.name) continue;
    std::vector<std::string> patterns;
    for (const char* pattern : p.patterns) {
      if (pattern != nullptr) patterns.emplace_back(pattern);
    }
    return patterns;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown pre-tokenizer '", std::string(name),
                                                 "'; known: ", KnownPreTokenizerNames()));
}

std::string KnownPreTokenizerNames() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.emplace_back(p.name);
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<std::shared_ptr<const PreTokenizer>> PreTokenizer::Create(
    const std::vector<std::string>& patterns) {
  std::shared_ptr<PreTokenizer> pre(new PreTokenizer());
  pre->patterns_ = patterns;
  for (const std::string& pattern : patterns) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY,
                      &error, &offset, nullptr);
    if (code == nullptr) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error, message.data(), message.size());
      return absl::InvalidArgumentError(
          absl::StrCat("pre-tokenizer regex '", pattern, "' does not compile at offset ", offset,
                       ": ", reinterpret_cast<const char*>(message.data())));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
    pre->compiled_.push_back(Compiled{code});
  }
  return std::shared_ptr<const PreTokenizer>(std::move(pre));
}

PreTokenizer::~PreTokenizer() {
  for (Compiled& c : compiled_) pcre2_code_free(c.code);
}

void PreTokenizer::SplitOne(const Compiled& re, std::string_view text, void* match_data_ptr,
                            std::vector<std::string_view>& out) const {
  auto* match_data = static_cast<pcre2_match_data*>(match_data_ptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap_start = 0;  // start of the text not yet emitted
  size_t search = 0;
  while (search < text.size()) {
    int rc = pcre2_match(re.code, subject, text.size(), search, 0, match_data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(re.code, subject, text.size(), search, PCRE2_NO_JIT, match_data, nullptr);
    }
    if (rc < 0) break;  // no further match (or a resource limit): the rest is one gap piece
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match_data);
    const size_t start = ov[0];
    const size_t end = ov[1];
    if (end <= start) {  // empty match: not a piece; try again one character later
      if (start >= text.size()) break;
      search = Utf8Advance(text, std::max(start, search));
      continue;
    }
    if (start > gap_start) out.push_back(text.substr(gap_start, start - gap_start));
    out.push_back(text.substr(start, end - start));
    gap_start = search = end;
  }
  if (gap_start < text.size()) out.push_back(text.substr(gap_start));
}

void PreTokenizer::Split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  if (compiled_.empty()) {
    pieces.push_back(text);
    return;
  }
  pcre2_match_data* match_data = pcre2_match_data_create(1, nullptr);
  if (compiled_.size() == 1) {
    SplitOne(compiled_[0], text, match_data, pieces);
  } else {
    std::vector<std::string_view> current = {text};
    std::vector<std::string_view> next;
    for (const Compiled& re : compiled_) {
      next.clear();
      for (std::string_view piece : current) SplitOne(re, piece, match_data, next);
      current.swap(next);
    }
    pieces.insert(pieces.end(), current.begin(), current.end());
  }
  pcre2_match_data_free(match_data);
}

}  // namespace funnel
