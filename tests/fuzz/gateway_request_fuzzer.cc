// libFuzzer target: funnel-gateway's OpenAI request parsing (server/gateway/openai_request.h),
// fed HTTP request bodies.
//
// Input: byte 0 selects the parser and its options; bytes 1.. are the body:
//   bits 0-1  0: POST /v1/completions, 1: POST /v1/chat/completions, 2: POST /v1/sessions,
//             3: the kv_compression method names (KvMethodFromApiName / KvMethodApiName)
//   bits 2-3  --max-choices: 16 (the default), 1, 4 or 1024 (the flag's maximum)
//
// Checked on every input: nothing crashes or trips ASan/UBSan, no exception escapes, errors are
// INVALID_ARGUMENT with a message. When a body is accepted, what openai_request.h documents:
// model set; n in [1, max_choices] and choices = prompts x n <= max_choices, in order, sample j
// seeded seed + j; top_logprobs -1 or in [0, 20] and carried by every choice; include_usage only
// with stream; stop lists of at most 16; max_tokens >= 0; kv_compression fields in range; APPEND
// only with a session_id and n = 1; ttl_seconds in [0, 365 days]; every message role one of
// system, user, assistant; and every upstream request survives the trip to funnel-server (it
// serializes, and proto3 parsing of it, which rejects invalid UTF-8, gives the same message).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "funnel/v1/inference.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "server/gateway/openai_request.h"
#include "tests/fuzz/fuzz_check.h"

namespace funnel::fuzz {
namespace {

constexpr int32_t kMaxStopStrings = 16;
constexpr int64_t kMaxTtlSeconds = 365LL * 86400;

void CheckError(const absl::Status& status) {
  FUZZ_LOG(absl::StrCat("rejected: ", status.ToString()));
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, status.ToString());
  FUZZ_CHECK(!status.message().empty(), "an error without a message");
  const std::optional<std::string> param = ParamOf(status);
  FUZZ_CHECK(!param || !param->empty(), "an empty param");
}

// What funnel-server receives is what the gateway built.
template <typename Message>
void CheckWireRoundTrip(const Message& m) {
  std::string wire;
  FUZZ_CHECK(m.SerializeToString(&wire), "an upstream request does not serialize");
  Message parsed;
  FUZZ_CHECK(parsed.ParseFromString(wire), "funnel-server cannot parse an upstream request");
  std::string again;
  FUZZ_CHECK(parsed.SerializeToString(&again) && again == wire, "the request changed in transit");
}

void CheckKvPolicy(const v1::KvPolicy& p) {
  FUZZ_CHECK(v1::KvMethod_IsValid(p.method()) && v1::KvPooling_IsValid(p.pooling()), "enum");
  FUZZ_CHECK(p.budget() >= 0 && p.window() >= 0 && p.kernel() >= 0, "negative kv field");
  FUZZ_CHECK(p.method() == v1::KV_METHOD_UNSPECIFIED || !KvMethodApiName(p.method()).empty(),
             "a method without an API name");
}

void CheckMessages(const v1::ChatMessages& messages) {
  FUZZ_CHECK(messages.messages_size() > 0, "no messages");
  for (const v1::ChatMessage& m : messages.messages()) {
    FUZZ_CHECK(m.role() == "system" || m.role() == "user" || m.role() == "assistant",
               absl::StrCat("role '", m.role(), "'"));
  }
}

void CheckChoice(const v1::GenerateRequest& c, Endpoint endpoint, const CompletionRequest& r) {
  FUZZ_CHECK(c.request_id().empty(), "request_id is the gateway's to leave empty");
  FUZZ_CHECK(c.session_id() == r.session_id, "choices of different sessions");
  if (endpoint == Endpoint::kChatCompletions) {
    FUZZ_CHECK(c.input_case() == v1::GenerateRequest::kMessages, "chat without messages");
    CheckMessages(c.messages());
  } else {
    FUZZ_CHECK(c.input_case() == v1::GenerateRequest::kPrompt ||
                   c.input_case() == v1::GenerateRequest::kPromptIds,
               "completion without a prompt");
    FUZZ_CHECK(c.chat_template().empty(), "chat_template on a completion");
    for (int32_t id : c.prompt_ids().ids()) FUZZ_CHECK(id >= 0, "negative token id");
    FUZZ_CHECK(c.input_case() != v1::GenerateRequest::kPromptIds || c.prompt_ids().ids_size() > 0,
               "empty prompt_ids");
  }
  const v1::SamplingParams& s = c.sampling();
  FUZZ_CHECK(s.has_max_tokens() && s.max_tokens() >= 0, "max_tokens");
  FUZZ_CHECK(s.stop_size() <= kMaxStopStrings, "too many stop strings");
  FUZZ_CHECK(!s.has_top_k() || s.top_k() >= 0, "negative top_k");
  FUZZ_CHECK(r.top_logprobs < 0 ? !s.has_top_logprobs() : s.top_logprobs() == r.top_logprobs,
             "top_logprobs not carried");
  if (c.has_kv_policy()) CheckKvPolicy(c.kv_policy());
  if (c.session_mode() == v1::SESSION_MODE_APPEND) {
    FUZZ_CHECK(!c.session_id().empty() && r.n == 1, "APPEND without a session or with n > 1");
  }
  CheckWireRoundTrip(c);
}

void FuzzCompletion(Endpoint endpoint, absl::string_view body, int32_t max_choices) {
  absl::StatusOr<CompletionRequest> r =
      ParseCompletionRequest(endpoint, body, {.max_choices = max_choices});
  if (!r.ok()) return CheckError(r.status());
  FUZZ_CHECK(r->endpoint == endpoint, "endpoint");
  FUZZ_CHECK(!r->model.empty(), "no model");
  FUZZ_CHECK(r->n >= 1 && r->n <= max_choices, absl::StrCat("n = ", r->n));
  const int64_t choices = static_cast<int64_t>(r->choices.size());
  FUZZ_CHECK(choices >= r->n && choices <= max_choices && choices % r->n == 0,
             absl::StrCat(choices, " choices for n = ", r->n));
  FUZZ_CHECK(endpoint == Endpoint::kCompletions || choices == r->n, "chat has one prompt");
  FUZZ_CHECK(r->top_logprobs >= -1 && r->top_logprobs <= 20, "top_logprobs");
  FUZZ_CHECK(!r->include_usage || r->stream, "include_usage without stream");
  for (int64_t i = 0; i < choices; ++i) {
    const v1::GenerateRequest& c = r->choices[static_cast<size_t>(i)];
    CheckChoice(c, endpoint, *r);
    const v1::GenerateRequest& first = r->choices[static_cast<size_t>(i - i % r->n)];
    FUZZ_CHECK(c.sampling().has_seed() == first.sampling().has_seed(), "seed on some choices");
    FUZZ_CHECK(c.sampling().seed() - first.sampling().seed() ==
                   (c.sampling().has_seed() ? static_cast<uint64_t>(i % r->n) : 0),
               "sample j of a prompt is not seeded seed + j");
  }
  FUZZ_LOG(absl::StrCat("accepted: ", choices, " choices"));
}

void FuzzSession(absl::string_view body) {
  absl::StatusOr<SessionCreateRequest> r = ParseSessionCreateRequest(body);
  if (!r.ok()) return CheckError(r.status());
  FUZZ_CHECK(!r->model.empty(), "no model");
  const v1::CreateSessionRequest& req = r->request;
  FUZZ_CHECK(req.input_case() != v1::CreateSessionRequest::INPUT_NOT_SET, "no input");
  if (req.input_case() == v1::CreateSessionRequest::kMessages) CheckMessages(req.messages());
  if (req.input_case() != v1::CreateSessionRequest::kMessages) {
    FUZZ_CHECK(req.chat_template().empty(), "chat_template without messages");
  }
  FUZZ_CHECK(
      req.input_case() != v1::CreateSessionRequest::kPromptIds || req.prompt_ids().ids_size() > 0,
      "empty prompt_ids");
  FUZZ_CHECK(req.ttl_seconds() >= 0 && req.ttl_seconds() <= kMaxTtlSeconds, "ttl_seconds");
  if (req.has_kv_policy()) CheckKvPolicy(req.kv_policy());
  CheckWireRoundTrip(req);
  FUZZ_LOG("accepted session");
}

void FuzzMethodName(absl::string_view name) {
  const std::optional<v1::KvMethod> method = KvMethodFromApiName(name);
  if (!method) {
    FUZZ_LOG("not a method name");
    return;
  }
  FUZZ_CHECK(*method != v1::KV_METHOD_UNSPECIFIED, "UNSPECIFIED has no API name");
  FUZZ_CHECK(KvMethodApiName(*method) == std::string(name), "method name round trip");
}

}  // namespace
}  // namespace funnel::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // keep protobuf's UTF-8 complaints off stderr
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace funnel::fuzz;
  if (size == 0) return 0;
  static constexpr int32_t kMaxChoices[] = {16, 1, 4, 1024};
  const int32_t max_choices = kMaxChoices[(data[0] >> 2) & 3];
  const absl::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] & 3) {
    case 0:
      FuzzCompletion(funnel::Endpoint::kCompletions, body, max_choices);
      break;
    case 1:
      FuzzCompletion(funnel::Endpoint::kChatCompletions, body, max_choices);
      break;
    case 2:
      FuzzSession(body);
      break;
    default:
      FuzzMethodName(body);
  }
  return 0;
}
