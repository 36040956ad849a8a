#include "server/gateway/http_reply.h"

#include <string>

#include "server/gateway/openai_response.h"

namespace funnel {

void ReplyJson(httplib::Response& res, int http_status, const nlohmann::json& body,
               RequestScope* scope) {
  res.status = http_status;
  res.set_content(DumpJson(body), "application/json");
  if (scope != nullptr) scope->set_status(http_status);
}

void ReplyError(httplib::Response& res, const ApiError& error, RequestScope* scope) {
  if (error.retry_after_s > 0) {
    res.set_header("Retry-After", std::to_string(error.retry_after_s));
  }
  ReplyJson(res, error.http_status, ApiErrorJson(error), scope);
}

void ReplyStatus(httplib::Response& res, const absl::Status& status, RequestScope* scope) {
  ReplyError(res, ApiErrorFromStatus(status), scope);
}

}  // namespace funnel
