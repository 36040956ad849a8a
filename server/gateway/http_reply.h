// Writing JSON and OpenAI error responses into cpp-httplib responses.
#pragma once

#include "absl/status/status.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "server/gateway/api_error.h"
#include "server/gateway/request_scope.h"

namespace funnel {

void ReplyJson(httplib::Response& res, int http_status, const nlohmann::json& body,
               RequestScope* scope);
// Status, JSON error body and (429/503) Retry-After.
void ReplyError(httplib::Response& res, const ApiError& error, RequestScope* scope);
// `status` must not be OK.
void ReplyStatus(httplib::Response& res, const absl::Status& status, RequestScope* scope);

}  // namespace funnel
