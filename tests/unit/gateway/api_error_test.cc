// The status → HTTP status + OpenAI error body mapping (DESIGN.md section 9).
#include "server/gateway/api_error.h"

#include <gtest/gtest.h>

#include "server/gateway/openai_request.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

TEST(ApiError, StatusCodesFollowTheDesignTable) {
  const std::pair<absl::Status, int> cases[] = {
      {absl::InvalidArgumentError("x"), 400},
      {absl::UnauthenticatedError("x"), 401},
      {absl::PermissionDeniedError("x"), 403},
      {absl::NotFoundError("x"), 404},
      {absl::AlreadyExistsError("x"), 409},
      {absl::ResourceExhaustedError("x"), 429},
      {absl::UnavailableError("x"), 503},
      {absl::CancelledError("x"), 503},
      {absl::DeadlineExceededError("x"), 504},
      {absl::InternalError("x"), 500},
      {absl::UnknownError("x"), 500},
      {absl::UnimplementedError("x"), 501},
      {absl::FailedPreconditionError("x"), 400},
      {absl::DataLossError("x"), 500},
  };
  for (const auto& [status, http] : cases) {
    EXPECT_EQ(ApiErrorFromStatus(status).http_status, http) << status;
  }
}

TEST(ApiError, BodyShapeRetryAfterParamAndCode) {
  const ApiError busy = ApiErrorFromStatus(absl::ResourceExhaustedError("queue is full"));
  EXPECT_EQ(busy.retry_after_s, 1);
  EXPECT_EQ(busy.type, "rate_limit_error");
  const Json body = ApiErrorJson(busy);
  ASSERT_TRUE(body.contains("error"));
  EXPECT_EQ(body["error"]["message"], "queue is full");
  EXPECT_EQ(body["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(body["error"]["param"].is_null());
  EXPECT_EQ(body["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(ApiErrorFromStatus(absl::UnavailableError("x")).retry_after_s, 1);
  EXPECT_EQ(ApiErrorFromStatus(absl::InvalidArgumentError("x")).retry_after_s, 0);

  const ApiError param = ApiErrorFromStatus(InvalidParam("n", "n must be >= 1"));
  EXPECT_EQ(ApiErrorJson(param)["error"]["param"], "n");
  EXPECT_EQ(ApiErrorJson(param)["error"]["type"], "invalid_request_error");
  const ApiError coded =
      ApiErrorFromStatus(WithErrorCode(absl::NotFoundError("no model"), "model_not_found"));
  EXPECT_EQ(ApiErrorJson(coded)["error"]["code"], "model_not_found");
  EXPECT_EQ(ApiErrorFromStatus(absl::UnauthenticatedError("x")).code, "invalid_api_key");
  EXPECT_EQ(MakeApiError(413, "too big").code, "request_too_large");
}

}  // namespace
}  // namespace funnel
