// OpenAI request bodies → funnel.v1 requests: JSON parsing and validation for
// /v1/completions, /v1/chat/completions and /v1/sessions.
//
// Contract: a body that is not JSON, is not an object, nests deeper than kMaxJsonDepth, holds
// invalid UTF-8, or has a field of the wrong type or out of range gives InvalidArgument with a
// message naming the field; the field's OpenAI name travels as the status's "param" payload
// (ParamOf). Fields OpenAI defines and we cannot honour (echo, suffix, logit_bias, tools, ...)
// are refused the same way rather than ignored; unknown fields are ignored as OpenAI does. Null
// means absent. Nothing here throws.
//
// Extensions to the OpenAI schema: session_id, session_mode ("fork" | "append"), kv_compression
// ({method, budget, ratio, window, pooling, kernel, beta, rounding}), ignore_eos, top_k, min_p,
// repetition_penalty, chat_template; and on /v1/sessions: prompt | messages, kv_compression,
// ttl_seconds, chat_template.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "funnel/v1/inference.pb.h"

namespace funnel {

enum class Endpoint { kCompletions, kChatCompletions };

constexpr int kMaxJsonDepth = 64;

// InvalidArgument carrying `param` (the OpenAI field name, e.g. "messages[1].content").
absl::Status InvalidParam(absl::string_view param, absl::string_view message);
// The param of a status made by InvalidParam; nullopt otherwise.
std::optional<std::string> ParamOf(const absl::Status& status);

struct ParseOptions {
  int32_t max_choices = 16;  // n x number of prompts
};

// One validated completion or chat completion request.
struct CompletionRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int32_t top_logprobs = -1;   // -1: no logprobs; else alternatives per token (0-20)
  int32_t n = 1;               // choices per prompt
  std::string user;
  std::string session_id;  // "" when none: routed to the owning replica otherwise
  // One upstream Generate per choice, in choice-index order (prompt p, sample j → p * n + j);
  // with a seed, sample j gets seed + j. request_id is left empty.
  std::vector<v1::GenerateRequest> choices;
};

absl::StatusOr<CompletionRequest> ParseCompletionRequest(Endpoint endpoint, absl::string_view body,
                                                         const ParseOptions& options);

struct SessionCreateRequest {
  std::string model;
  v1::CreateSessionRequest request;
};

absl::StatusOr<SessionCreateRequest> ParseSessionCreateRequest(absl::string_view body);

// Largest nesting depth of arrays and objects in `body` (strings skipped); a cheap guard that
// runs before the JSON parser.
int JsonNestingDepth(absl::string_view body);

// "pyramidkv" → KV_METHOD_PYRAMIDKV (the proto enum names, lower case, without the prefix);
// nullopt for unknown names.
std::optional<v1::KvMethod> KvMethodFromApiName(absl::string_view name);
// KV_METHOD_PYRAMIDKV → "pyramidkv"; "" for UNSPECIFIED.
std::string KvMethodApiName(v1::KvMethod method);

}  // namespace funnel
