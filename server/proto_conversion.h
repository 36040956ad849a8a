// Conversions between the public proto messages (funnel.v1) and the runtime's types. Request
// fields are checked here (INVALID_ARGUMENT naming the field); responses are filled from the
// engine's results.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "funnel/v1/inference.pb.h"
#include "runtime/engine/engine.h"
#include "runtime/kv/kv_policy.h"
#include "runtime/sample/sampling_params.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"
#include "server/prompt_encoder.h"

namespace funnel {

struct SamplingRequest {
  SamplingParams params;
  int32_t top_logprobs = -1;  // -1: no logprobs
};

// Unset fields take the proto's documented defaults (temperature 1, top_p 1, max_tokens 16).
absl::StatusOr<SamplingRequest> SamplingFromProto(const v1::SamplingParams& proto);

// nullopt when the request names no policy (`present` false): the engine's default applies.
// Otherwise the server default with the request's set fields on top; a budget or ratio in the
// request replaces the default's, and method full drops the default's budget.
absl::StatusOr<std::optional<KvPolicy>> KvPolicyFromProto(const v1::KvPolicy& proto, bool present,
                                                          const KvPolicy& server_default);

std::vector<ChatMessage> MessagesFromProto(const v1::ChatMessages& proto);

// The engine request of a Generate call, checked in this order: chat_template, input (encoded
// by `encoder`), sampling, KV policy (over `server_default`), session mode. request_id, owner
// and deadline are left for the caller to fill. Pure: no engine, no I/O (the fuzz target
// tests/fuzz/grpc_request_fuzzer.cc calls it directly).
absl::StatusOr<GenerateRequest> GenerateRequestFromProto(const v1::GenerateRequest& request,
                                                         const PromptEncoder& encoder,
                                                         const KvPolicy& server_default);
// The engine request of a CreateSession call (context, KV policy, ttl); owner is left for the
// caller. Pure, as above.
absl::StatusOr<CreateSessionRequest> CreateSessionRequestFromProto(
    const v1::CreateSessionRequest& request, const PromptEncoder& encoder,
    const KvPolicy& server_default);

void KvPolicyToProto(const KvPolicy& policy, v1::KvPolicy* out);
void SessionToProto(const SessionInfo& info, v1::Session* out);
void UsageToProto(const Usage& usage, v1::Usage* out);
v1::FinishReason FinishReasonToProto(const std::string& reason);
// `text` with every byte that is not part of a valid UTF-8 character replaced by U+FFFD (proto3
// strings must be UTF-8, or the client cannot parse the message).
std::string ToValidUtf8(const std::string& text);
// The token's text is the engine's (UTF-8 complete); logprob texts are the tokens' pieces.
void TokenEventToProto(const TokenEvent& event, const Tokenizer& tokenizer, v1::TokenDelta* out);

}  // namespace funnel
