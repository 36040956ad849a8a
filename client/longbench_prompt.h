// LongBench v1 samples and prompts as LongBench's pred.py builds them: the task's prompt
// template (dataset2prompt.json) filled with the sample's fields, middle truncation of the
// tokenized prompt, and the chat template on every task but the few-shot and code ones.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace funnel {

class Tokenizer;

struct LongBenchSample {
  std::string id;                             // "_id"
  std::map<std::string, std::string> fields;  // every top-level string or number field
  std::vector<std::string> answers;
  std::vector<std::string> all_classes;  // empty when null
};

// Reads a task file (one JSON object a line). `limit` > 0 keeps the first `limit` samples.
// InvalidArgument names the file and line of a malformed sample.
absl::StatusOr<std::vector<LongBenchSample>> LoadLongBenchTask(const std::string& path,
                                                               int64_t limit);

// Reads a {"task": value} JSON object file (dataset2prompt.json: strings; dataset2maxlen.json:
// integers).
absl::StatusOr<std::map<std::string, std::string>> LoadStringMap(const std::string& path);
absl::StatusOr<std::map<std::string, int64_t>> LoadIntMap(const std::string& path);

// Python str.format with named fields ("{context}", "{input}"; "{{" and "}}" are braces).
// InvalidArgument for a field the sample lacks or an unmatched brace.
absl::StatusOr<std::string> FormatLongBenchPrompt(const std::string& tmpl,
                                                  const std::map<std::string, std::string>& fields);

// pred.py: when the prompt has more than `max_tokens` tokens (BOS counted, as the reference's
// tokenizer call adds it), the first and last max_tokens/2 tokens, each decoded without special
// tokens, concatenated (bytes of characters cut in two become U+FFFD). Otherwise the prompt
// unchanged.
std::string TruncateMiddle(const Tokenizer& tokenizer, const std::string& prompt,
                           int64_t max_tokens);

// False for trec, triviaqa, samsum, lsht, lcc, repobench-p (pred.py: "chat models are better off
// without build prompts on these tasks").
bool LongBenchUsesChatTemplate(const std::string& task);

}  // namespace funnel
