#include "runtime/sample/sampling_params.h"

#include <cmath>

#include "absl/strings/str_format.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

absl::Status CheckRange(const char* field, float value, float lo, float hi) {
  if (std::isnan(value) || value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s must be in [%g, %g], got %g", field, lo, hi, value));
  }
  return absl::OkStatus();
}

absl::Status CheckTemperature(float temperature) {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrFormat("temperature must be finite and >= 0 (0 = greedy), got %g", temperature));
  }
  return absl::OkStatus();
}

absl::Status CheckTopP(float top_p) {
  if (std::isnan(top_p) || top_p <= 0.0f || top_p > 1.0f) {
    return absl::InvalidArgumentError(absl::StrFormat("top_p must be in (0, 1], got %g", top_p));
  }
  return absl::OkStatus();
}

absl::Status CheckRepetitionPenalty(float penalty) {
  if (!std::isfinite(penalty) || penalty <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrFormat("repetition_penalty must be finite and > 0 (1 = off), got %g", penalty));
  }
  return absl::OkStatus();
}

absl::Status CheckStop(const std::vector<std::string>& stop) {
  if (stop.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(
        absl::StrFormat("stop must hold at most %d strings, got %d", kMaxStopStrings, stop.size()));
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].empty() || stop[i].size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("stop[%d] must be 1 to %d bytes long, got %d bytes", i,
                          kMaxStopStringBytes, stop[i].size()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  RETURN_IF_ERROR(CheckTemperature(temperature));
  if (top_k < -1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("top_k must be -1 or 0 (disabled) or positive, got %d", top_k));
  }
  RETURN_IF_ERROR(CheckTopP(top_p));
  RETURN_IF_ERROR(CheckRange("min_p", min_p, 0.0f, 1.0f));
  RETURN_IF_ERROR(CheckRepetitionPenalty(repetition_penalty));
  RETURN_IF_ERROR(CheckRange("presence_penalty", presence_penalty, -2.0f, 2.0f));
  RETURN_IF_ERROR(CheckRange("frequency_penalty", frequency_penalty, -2.0f, 2.0f));
  if (max_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_tokens must be >= 0, got %d", max_tokens));
  }
  return CheckStop(stop);
}

}  // namespace funnel
