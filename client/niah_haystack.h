// Needle-in-a-haystack contexts and scoring, as the PyramidKV / KVCache-Factory harness
// (run_needle_in_haystack.py, scripts_needle/visualize.py) builds and scores them.
//
// Context: the haystack files, sorted by name, concatenated; tokenized (no BOS); cut to
// `context_tokens - len(needle)` tokens; the needle's tokens inserted at depth% of that length,
// moved back to just after the nearest preceding period token (a token whose text, spaces
// trimmed, is "."), or appended at depth 100; the tokens decoded back to text.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace funnel {

class Tokenizer;

// The text of `paths` (files, or folders whose *.txt files are taken), sorted by file name
// within each folder; `skip_files` drops that many of the sorted files first. With
// `collapse_whitespace` every file's whitespace runs become single spaces and files are joined
// with one space; otherwise they are concatenated as they are (the reference harness).
absl::StatusOr<std::string> LoadHaystack(const std::vector<std::string>& paths, int skip_files,
                                         bool collapse_whitespace);

struct NeedleContext {
  std::vector<int32_t> ids;  // haystack with the needle, no BOS
  int64_t needle_start = 0;  // index of the needle's first token in `ids`
};

// `haystack` is repeated as needed to fill `context_tokens` (the reference re-reads its files
// until it has enough). Requires needle.size() < context_tokens.
NeedleContext InsertNeedle(std::span<const int32_t> haystack, std::span<const int32_t> needle,
                           int64_t context_tokens, double depth_percent,
                           const std::function<bool(int32_t)>& is_period);

// Whether the token's text (as it appears mid-text), spaces trimmed, is ".".
bool IsPeriodToken(const Tokenizer& tokenizer, int32_t id);

// visualize.py: |set(words(response)) ∩ set(words(answer))| / |set(words(answer))|, words
// split at whitespace after lower-casing (ASCII).
double WordOverlapScore(const std::string& response, const std::string& answer);

// The response through its first occurrence of `stop` (whole response if none).
std::string CutAfterStop(const std::string& response, const std::string& stop);

// Fixture rule: the response through the first `stop` equals the answer (leading whitespace of
// both ignored).
bool ExactAnswerMatch(const std::string& response, const std::string& answer,
                      const std::string& stop);
// Free-form rule: the answer, trimmed, occurs in the response (ASCII case-insensitive).
bool ContainsAnswer(const std::string& response, const std::string& answer);

}  // namespace funnel
