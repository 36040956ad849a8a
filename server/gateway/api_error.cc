#include "server/gateway/api_error.h"

#include <utility>

#include "absl/strings/cord.h"
#include "server/gateway/openai_request.h"

namespace funnel {
namespace {

constexpr char kCodePayloadUrl[] = "type.funnel.dev/gateway.code";

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:  // the server cancelled it (shutdown): retry elsewhere
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

// OpenAI's types: client errors (401 and 404 included) are invalid_request_error.
std::string TypeOf(int http_status) {
  if (http_status == 429) return "rate_limit_error";
  if (http_status >= 500) return "server_error";
  return "invalid_request_error";
}

std::optional<std::string> DefaultCode(int http_status) {
  switch (http_status) {
    case 401:
      return "invalid_api_key";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_exceeded";
    case 503:
      return "service_unavailable";
    case 504:
      return "timeout";
    default:
      return std::nullopt;
  }
}

}  // namespace

absl::Status WithErrorCode(absl::Status status, absl::string_view code) {
  status.SetPayload(kCodePayloadUrl, absl::Cord(code));
  return status;
}

ApiError MakeApiError(int http_status, std::string message, std::optional<std::string> code) {
  ApiError e;
  e.http_status = http_status;
  e.type = TypeOf(http_status);
  e.message = std::move(message);
  e.code = code ? std::move(code) : DefaultCode(http_status);
  if (http_status == 429 || http_status == 503) e.retry_after_s = 1;
  return e;
}

ApiError ApiErrorFromStatus(const absl::Status& status) {
  std::optional<std::string> code;
  if (absl::optional<absl::Cord> payload = status.GetPayload(kCodePayloadUrl)) {
    code = std::string(*payload);
  }
  std::string message(status.message());
  if (message.empty()) message = absl::StatusCodeToString(status.code());
  ApiError e = MakeApiError(HttpStatusOf(status.code()), std::move(message), std::move(code));
  e.param = ParamOf(status);
  return e;
}

nlohmann::json ApiErrorJson(const ApiError& error) {
  nlohmann::json body = {
      {"message", error.message}, {"type", error.type}, {"param", nullptr}, {"code", nullptr}};
  if (error.param) body["param"] = *error.param;
  if (error.code) body["code"] = *error.code;
  return {{"error", std::move(body)}};
}

}  // namespace funnel
