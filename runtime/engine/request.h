// What the RPC layer hands the engine, and what flows back per request.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "runtime/kv/kv_policy.h"
#include "runtime/sample/sampling_params.h"

namespace funnel {

enum class SessionMode { kFork, kAppend };

struct GenerateRequest {
  std::string request_id;        // unique per server; the service assigns one when empty
  std::vector<int32_t> prompt;   // ids to feed (BOS included by the caller when wanted); for a
                                 // session request, the suffix continuing the session
  SamplingParams sampling;       // validated by the engine
  std::optional<KvPolicy> kv_policy;  // unset: the server default
  std::string session_id;        // empty: no session
  SessionMode session_mode = SessionMode::kFork;
  std::string owner;             // the API key's identity; sessions are scoped to it
  int32_t top_logprobs = -1;     // -1: no logprobs; 0..20: chosen token's logprob + N alternatives
  absl::Time deadline = absl::InfiniteFuture();
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// One generated token and the text it completes (UTF-8 whole; may be empty while a character
// or a possible stop string is pending).
struct TokenEvent {
  int32_t token = 0;
  std::string text;
  std::optional<TokenLogprob> logprob;
  std::vector<TokenLogprob> top_logprobs;
};

struct Usage {
  int64_t prompt_tokens = 0;          // tokens of this request's prompt (the suffix for sessions)
  int64_t session_tokens_reused = 0;  // logical length of the session context reused
  int64_t completion_tokens = 0;
  std::vector<int64_t> kv_entries_per_layer;  // stored right after prefill (window included)
  double queue_ms = 0, prefill_ms = 0, decode_ms = 0, ttft_ms = 0, total_ms = 0;
};

// The end of a request: status OK with a finish reason ("stop", "length"), or the error that
// ended it (CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE, ...).
struct FinalEvent {
  absl::Status status;
  std::string finish_reason;
  Usage usage;
  std::string text;  // text released at the end (held-back bytes), may be empty
};

}  // namespace funnel
