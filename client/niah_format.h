// What a NIAH prompt looks like: the reference harness's wrapper around a fixed needle, or a
// trained fixture's own format (models/<name>/niah_format.json, written by
// tools/train/export_gguf.py), whose needles are drawn fresh for every sample.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace funnel {

// The PyramidKV harness's prompt (run_needle_in_haystack.py generate_prompt).
inline constexpr char kReferenceNiahTemplate[] =
    "<|im_start|> This is a very long story book: <book> {context} </book>.\n Based on the "
    "content of the book, Question: {question}\nAnswer:";
inline constexpr char kClassicNeedle[] =
    "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny "
    "day.";
inline constexpr char kClassicQuestion[] = "What is the best thing to do in San Francisco?";
inline constexpr char kClassicAnswer[] = "eat a sandwich and sit in Dolores Park on a sunny day.";

// One needle with its question and expected answer.
struct NiahFact {
  std::string kind;  // "fixed", "passkey", "kv", "city", "classic"
  std::string needle;
  std::string question;
  std::string answer;
};

struct NiahFormat {
  // Prompt text with "{context}" and "{question}" (each once at most).
  std::string prompt_template = kReferenceNiahTemplate;
  std::string stop = "\n";      // generation stops at this string (the reference: newline)
  int32_t max_new_tokens = 30;  // the reference: 30
  // Tokens reserved besides haystack + needle; -1: 1 (BOS) + question + answer tokens, so that
  // prompt plus answer fill the context length (the fixture was trained that way).
  int64_t buffer_tokens = 200;
  bool collapse_whitespace = false;  // the fixture's haystack is whitespace-collapsed text
  bool fixture = false;              // exact match: response through the first stop == answer
  int haystack_skip_files = 0;       // the fixture's held-out essays follow its 40 training ones

  std::string kind = "fixed";  // fixed (needle/question/answer below), passkey, kv, city, classic
  NiahFact fixed;
  // Fixture templates by kind, with "{key}" and "{value}".
  std::string needle_template, question_template, answer_template;
  std::vector<std::string> kv_keys, cities, activities;
};

// The reference harness's format with the given needle, question and answer.
NiahFormat ReferenceNiahFormat(NiahFact fact);

// Reads a fixture's niah_format.json. `kind`: "passkey", "kv", "city" (drawn per sample) or
// "classic" (its fixed San Francisco needle). InvalidArgument on unreadable or malformed files
// and unknown kinds.
absl::StatusOr<NiahFormat> LoadFixtureNiahFormat(const std::string& path, const std::string& kind);

// The fact for one sample: the fixed one, or one drawn with `rng` (passkey: 5 distinct digits
// not starting with 0; kv: a key and 4 or 5 such digits; city: a city and an activity).
NiahFact DrawNiahFact(const NiahFormat& format, std::mt19937_64& rng);

// prompt_template with {context} and {question} substituted.
std::string RenderNiahPrompt(const NiahFormat& format, const std::string& context,
                             const std::string& question);

}  // namespace funnel
