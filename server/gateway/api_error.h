// The one absl::Status (gRPC code) → HTTP status + OpenAI error body mapping (DESIGN.md
// section 9): INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404,
// ALREADY_EXISTS 409, RESOURCE_EXHAUSTED 429 (Retry-After), UNAVAILABLE / CANCELLED 503
// (Retry-After), DEADLINE_EXCEEDED 504, UNIMPLEMENTED 501, everything else 500.
// Body: {"error": {"message", "type", "param", "code"}}.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace funnel {

struct ApiError {
  int http_status = 500;
  std::string type;  // "invalid_request_error", "rate_limit_error" or "server_error"
  std::string message;
  std::optional<std::string> param;
  std::optional<std::string> code;  // "invalid_api_key", "model_not_found", ...
  int retry_after_s = 0;            // > 0: send a Retry-After header
};

// Attaches an OpenAI error code ("model_not_found", ...) to a status.
absl::Status WithErrorCode(absl::Status status, absl::string_view code);

// `status` must not be OK. The param comes from InvalidParam, the code from WithErrorCode.
ApiError ApiErrorFromStatus(const absl::Status& status);
// An error the gateway answers by itself (e.g. 413 from the HTTP layer).
ApiError MakeApiError(int http_status, std::string message, std::optional<std::string> code = {});

nlohmann::json ApiErrorJson(const ApiError& error);

}  // namespace funnel
