// How a sequence's KV cache is compressed at the end of prefill (DESIGN.md section 5).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace funnel {

enum class KvMethod { kFull, kPyramidKv, kSnapKv, kStreamingLlm, kH2o };
enum class KvPooling { kMax, kAvg };
// kExact: per-layer counts sum to exactly L * (B - W); kOfficial: the reference code's integer
// arithmetic (overshoots on deep models), for paper parity.
enum class BudgetRounding { kExact, kOfficial };

struct KvPolicy {
  KvMethod method = KvMethod::kFull;
  // Entries kept per layer on average, window included (B). 0 with ratio > 0: B = ratio * N.
  int64_t budget = 0;
  double ratio = 0.0;   // fraction of the prompt's entries kept per layer on average, (0, 1]
  int32_t window = 8;   // observation window W (the last W prompt tokens, always kept)
  KvPooling pooling = KvPooling::kMax;
  int32_t kernel = 7;   // pooling kernel (odd)
  double beta = 20.0;   // PyramidKV: top layer gets (B - W) / beta selected tokens
  BudgetRounding rounding = BudgetRounding::kExact;

  // Checks the fields once: full takes no budget; other methods need exactly one of budget and
  // ratio; window >= 1 (StreamingLLM ignores it); odd kernel; beta >= 1.
  absl::Status Validate() const;
  // The budget B for a prompt of n tokens (resolves a ratio).
  int64_t EffectiveBudget(int64_t prompt_tokens) const;
  bool compresses() const { return method != KvMethod::kFull; }
};

const char* KvMethodName(KvMethod method);
absl::StatusOr<KvMethod> ParseKvMethod(std::string_view name);
const char* KvPoolingName(KvPooling pooling);
absl::StatusOr<KvPooling> ParseKvPooling(std::string_view name);
const char* BudgetRoundingName(BudgetRounding rounding);
absl::StatusOr<BudgetRounding> ParseBudgetRounding(std::string_view name);

}  // namespace funnel
