#include "runtime/kv/kv_policy.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace funnel {

absl::Status KvPolicy::Validate() const {
  if (method == KvMethod::kFull) {
    if (budget != 0 || ratio != 0.0) {
      return absl::InvalidArgumentError("kv method 'full' takes no budget or ratio");
    }
    return absl::OkStatus();
  }
  if ((budget > 0) == (ratio > 0.0)) {
    return absl::InvalidArgumentError(absl::StrCat("kv method '", KvMethodName(method),
                                                   "' needs exactly one of a budget and a ratio"));
  }
  if (budget < 0) return absl::InvalidArgumentError("kv budget must be positive");
  if (!(ratio >= 0.0 && ratio <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrFormat("kv ratio must be in (0, 1], got %g", ratio));
  }
  if (window < 1 || window > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrFormat("kv window must be >= 1, got %d", window));
  }
  if (budget > 0 && budget <= window && method != KvMethod::kStreamingLlm) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kv budget %d must exceed the window %d (the budget includes the window)", budget, window));
  }
  if (method == KvMethod::kStreamingLlm && budget > 0 && budget <= 4) {
    return absl::InvalidArgumentError("streamingllm budget must exceed its 4 sink tokens");
  }
  if (kernel < 1 || kernel % 2 == 0 || kernel > 1023) {
    return absl::InvalidArgumentError(absl::StrFormat("kv pooling kernel must be odd, got %d", kernel));
  }
  if (!(beta >= 1.0 && beta <= 1e6)) {
    return absl::InvalidArgumentError(absl::StrFormat("kv beta must be >= 1, got %g", beta));
  }
  return absl::OkStatus();
}

int64_t KvPolicy::EffectiveBudget(int64_t prompt_tokens) const {
  if (budget > 0) return budget;
  return static_cast<int64_t>(std::llround(ratio * static_cast<double>(prompt_tokens)));
}

const char* KvMethodName(KvMethod method) {
  switch (method) {
    case KvMethod::kFull: return "full";
    case KvMethod::kPyramidKv: return "pyramidkv";
    case KvMethod::kSnapKv: return "snapkv";
    case KvMethod::kStreamingLlm: return "streamingllm";
    case KvMethod::kH2o: return "h2o";
  }
  return "?";
}

absl::StatusOr<KvMethod> ParseKvMethod(std::string_view name) {
  for (KvMethod m : {KvMethod::kFull, KvMethod::kPyramidKv, KvMethod::kSnapKv,
                     KvMethod::kStreamingLlm, KvMethod::kH2o}) {
    if (name == KvMethodName(m)) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown kv method '", absl::string_view(name.data(), name.size()),
      "' (full, pyramidkv, snapkv, streamingllm, h2o)"));
}

const char* KvPoolingName(KvPooling pooling) {
  return pooling == KvPooling::kMax ? "max" : "avg";
}

absl::StatusOr<KvPooling> ParseKvPooling(std::string_view name) {
  if (name == "max" || name == "maxpool") return KvPooling::kMax;
  if (name == "avg" || name == "avgpool") return KvPooling::kAvg;
  return absl::InvalidArgumentError("kv pooling must be max or avg");
}

const char* BudgetRoundingName(BudgetRounding rounding) {
  return rounding == BudgetRounding::kExact ? "exact" : "official";
}

absl::StatusOr<BudgetRounding> ParseBudgetRounding(std::string_view name) {
  if (name == "exact") return BudgetRounding::kExact;
  if (name == "official") return BudgetRounding::kOfficial;
  return absl::InvalidArgumentError("kv rounding must be exact or official");
}

}  // namespace funnel
