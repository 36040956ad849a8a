// Pieces the server-facing evaluations (`funnel eval niah`, `funnel eval longbench`) share: the
// method × budget grid, the local tokenizer, and a concurrent request runner with a progress bar.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli_args.h"
#include "funnel/v1/inference.pb.h"
#include "runtime/kv/kv_policy.h"

namespace funnel {

class Tokenizer;

// One column of an evaluation: a KV policy sent with every request.
struct EvalPolicy {
  KvPolicy policy;     // validated
  v1::KvPolicy proto;  // the same, for the request
  std::string label;   // "full", "pyramidkv/128"
  int64_t budget() const { return policy.method == KvMethod::kFull ? 0 : policy.budget; }
};

// --kv-window W --kv-pooling max|avg --kv-kernel K --kv-beta B --kv-rounding exact|official:
// the knobs every compressing policy of the grid shares.
void AddEvalKvKnobFlags(CliSpec& spec);
// methods ("full,pyramidkv,...") × budgets ("32,64"): full once (no budget), every other method
// at every budget. InvalidArgument on unknown methods, bad numbers, or policies that fail
// KvPolicy::Validate.
absl::StatusOr<std::vector<EvalPolicy>> ParsePolicyGrid(const std::string& methods,
                                                        const std::string& budgets,
                                                        const CliArgs& knobs);

// "1,2,3" → positive integers (InvalidArgument naming `flag`).
absl::StatusOr<std::vector<int64_t>> ParsePositiveList(const std::string& text,
                                                       const std::string& flag);
// "0,11.5,100" → numbers in [lo, hi].
absl::StatusOr<std::vector<double>> ParseNumberList(const std::string& text,
                                                    const std::string& flag, double lo, double hi);

// $FUNNEL_SHARED_DATA when set, else the build's <source>/../shared/data (default data of the
// evaluations: NIAH haystack, LongBench files).
std::string SharedDataDir();

// The tokenizer at `path` (a GGUF file, whose tensors are not read, or what
// runtime/text/tokenizer_loader.h accepts); InvalidArgument naming --tokenizer on failure.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadEvalTokenizer(const std::string& path);
// InvalidArgument when `tokenizer` cannot be the served model's (another vocabulary size).
absl::Status CheckTokenizerMatchesServer(const Tokenizer& tokenizer, const v1::ServerInfo& info);

// Calls task(i) for every i in [0, n) on `concurrency` threads (each i exactly once, in rising
// order of start). While running, a progress bar "[####    ] done/n label" is redrawn on
// stderr when stderr is a terminal. Returns when every call has returned.
void RunConcurrently(int64_t n, int64_t concurrency, const std::string& label,
                     const std::function<void(int64_t)>& task);

// `text` with every invalid UTF-8 sequence replaced by U+FFFD (as Python's
// bytes.decode(errors="replace") and Hugging Face decoding do); token slices that cut a
// character in two decode to such bytes, and the server rejects invalid UTF-8.
std::string ReplaceInvalidUtf8(const std::string& text);

// The text a greedy continuation contributes mid-text: the concatenated token pieces, end of
// generation tokens dropped.
std::string ContinuationText(const Tokenizer& tokenizer, const std::vector<int32_t>& ids);

}  // namespace funnel
