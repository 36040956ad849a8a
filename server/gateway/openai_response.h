// OpenAI response bodies built from funnel.v1 results: completion and chat completion objects,
// their streaming chunks and the Server-Sent Events framing, /v1/models and /v1/sessions objects.
//
// Shapes (OpenAI's): chat.completion / chat.completion.chunk with logprobs
// {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]};
// text_completion with logprobs {tokens, token_logprobs, top_logprobs: [{token: logprob}],
// text_offset}. Usage: prompt_tokens (session part included), completion_tokens, total_tokens,
// prompt_tokens_details.cached_tokens (the session tokens reused). Pure functions; nothing here
// throws.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "funnel/v1/inference.pb.h"
#include "nlohmann/json.hpp"
#include "server/gateway/openai_request.h"

namespace funnel {

// What every object of one response shares.
struct ResponseHeader {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;  // "chatcmpl-..." or "cmpl-..."
  std::string model;
  int64_t created = 0;        // unix seconds
  int32_t top_logprobs = -1;  // -1: no logprobs
};

// One choice's whole result.
struct ChoiceOutput {
  std::string text;                    // every delta's text plus the final text
  std::vector<v1::TokenDelta> tokens;  // the deltas, kept only when logprobs were asked for
  v1::GenerateFinal final;
};

// The JSON text of `json`; invalid UTF-8 is replaced by U+FFFD instead of throwing.
std::string DumpJson(const nlohmann::json& json);

// "data: <json>\n\n"
std::string SseEvent(const nlohmann::json& json);
extern const char kSseDone[];  // "data: [DONE]\n\n"

// "stop" or "length".
std::string FinishReasonString(v1::FinishReason reason);

// Usage of choices that came `n` per prompt (choice i belongs to prompt i / n): the prompt is
// counted once per prompt, completions per choice.
nlohmann::json UsageJson(const std::vector<const v1::Usage*>& per_choice, int32_t n);

// The non-streaming response: chat.completion or text_completion.
nlohmann::json CompletionJson(const ResponseHeader& header,
                              const std::vector<ChoiceOutput>& choices, int32_t n);

// Streaming chunks. Chat streams open each choice with RoleChunk. `text_offset` is the number of
// characters the choice has streamed before this token (completions' logprobs.text_offset).
// `include_usage`: every chunk carries "usage": null, as OpenAI's do when the last chunk is a
// usage chunk.
nlohmann::json RoleChunk(const ResponseHeader& header, int32_t index, bool include_usage);
nlohmann::json TokenChunk(const ResponseHeader& header, int32_t index, const v1::TokenDelta& delta,
                          int64_t text_offset, bool include_usage);
nlohmann::json TextChunk(const ResponseHeader& header, int32_t index, const std::string& text,
                         bool include_usage);
nlohmann::json FinishChunk(const ResponseHeader& header, int32_t index, v1::FinishReason reason,
                           bool include_usage);
nlohmann::json UsageChunk(const ResponseHeader& header, const nlohmann::json& usage);

// Characters (Unicode code points) of UTF-8 text.
int64_t Utf8Length(const std::string& text);

nlohmann::json ModelJson(const v1::Model& model);
// `model` may be "" (unknown): then the field is omitted.
nlohmann::json SessionJson(const v1::Session& session, const std::string& model);

}  // namespace funnel
