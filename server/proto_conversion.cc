#include "server/proto_conversion.h"

#include <cmath>
#include <span>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "proto/kv_method_conversion.h"

namespace funnel {
namespace {

absl::StatusOr<KvMethod> MethodFromProto(v1::KvMethod m) {
  if (std::optional<KvMethod> method = KvMethodFromProto(m)) return *method;
  return absl::InvalidArgumentError(absl::StrCat("kv_policy.method: unknown value ", m));
}

v1::KvMethod MethodToProto(KvMethod m) { return KvMethodToProto(m); }

// Length of the valid UTF-8 character at text[i], or 0 when the bytes there are not one.
size_t ValidCharLength(const std::string& text, size_t i) {
  const auto c = static_cast<uint8_t>(text[i]);
  if (c < 0x80) return 1;
  size_t len = 0;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  if (c >= 0xE0 && c <= 0xEF) len = 3;
  if (c >= 0xF0 && c <= 0xF4) len = 4;
  if (len == 0 || i + len > text.size()) return 0;
  return IsValidUtf8(std::string_view(text).substr(i, len)) ? len : 0;
}

int64_t UnixMillis(absl::Time t) {
  if (t == absl::InfiniteFuture() || t == absl::InfinitePast()) return 0;
  return absl::ToUnixMillis(t);
}

absl::Status CheckNonNegative(const v1::KvPolicy& p) {
  if (p.budget() < 0) return absl::InvalidArgumentError("kv_policy.budget must be >= 0");
  if (!(p.ratio() >= 0.0) || std::isinf(p.ratio())) {
    return absl::InvalidArgumentError("kv_policy.ratio must be in (0, 1]");
  }
  if (p.window() < 0) return absl::InvalidArgumentError("kv_policy.window must be >= 0");
  if (p.kernel() < 0) return absl::InvalidArgumentError("kv_policy.kernel must be >= 0");
  if (!(p.beta() >= 0.0) || std::isinf(p.beta())) {
    return absl::InvalidArgumentError("kv_policy.beta must be >= 1");
  }
  return absl::OkStatus();
}

std::span<const int32_t> IdsOf(const v1::PromptIds& ids) {
  return {ids.ids().data(), static_cast<size_t>(ids.ids_size())};
}

absl::StatusOr<std::vector<int32_t>> EncodeGenerateInput(const v1::GenerateRequest& request,
                                                         const PromptEncoder& encoder) {
  const bool continuation = !request.session_id().empty();
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt:
      return encoder.EncodeText(request.prompt(), continuation);
    case v1::GenerateRequest::kPromptIds:
      return encoder.CheckIds(IdsOf(request.prompt_ids()));
    case v1::GenerateRequest::kMessages:
      return encoder.EncodeMessages(MessagesFromProto(request.messages()), request.chat_template(),
                                    continuation, /*add_generation_prompt=*/true);
    case v1::GenerateRequest::INPUT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("one of prompt, prompt_ids or messages is required");
}

absl::StatusOr<std::vector<int32_t>> EncodeSessionContext(const v1::CreateSessionRequest& request,
                                                          const PromptEncoder& encoder) {
  if (!request.chat_template().empty() &&
      request.input_case() != v1::CreateSessionRequest::kMessages) {
    return absl::InvalidArgumentError("chat_template applies to messages only");
  }
  switch (request.input_case()) {
    case v1::CreateSessionRequest::kPrompt:
      return encoder.EncodeText(request.prompt(), /*continuation=*/false);
    case v1::CreateSessionRequest::kPromptIds:
      return encoder.CheckIds(IdsOf(request.prompt_ids()));
    case v1::CreateSessionRequest::kMessages:
      // The context is a conversation so far; questions open the assistant turn themselves.
      return encoder.EncodeMessages(MessagesFromProto(request.messages()), request.chat_template(),
                                    /*continuation=*/false, /*add_generation_prompt=*/false);
    case v1::CreateSessionRequest::INPUT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("one of prompt, prompt_ids or messages is required");
}

}  // namespace

std::string ToValidUtf8(const std::string& text) {
  if (IsValidUtf8(text)) return text;
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const size_t len = ValidCharLength(text, i);
    if (len == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    } else {
      out.append(text, i, len);
      i += len;
    }
  }
  return out;
}

absl::StatusOr<SamplingRequest> SamplingFromProto(const v1::SamplingParams& proto) {
  SamplingRequest r;
  SamplingParams& s = r.params;
  if (proto.has_temperature()) s.temperature = proto.temperature();
  if (proto.has_top_k()) s.top_k = proto.top_k();
  if (proto.has_top_p()) s.top_p = proto.top_p();
  if (proto.has_min_p()) s.min_p = proto.min_p();
  if (proto.has_repetition_penalty()) s.repetition_penalty = proto.repetition_penalty();
  if (proto.has_presence_penalty()) s.presence_penalty = proto.presence_penalty();
  if (proto.has_frequency_penalty()) s.frequency_penalty = proto.frequency_penalty();
  if (proto.has_seed()) s.seed = proto.seed();
  if (proto.has_max_tokens()) s.max_tokens = proto.max_tokens();
  s.stop.assign(proto.stop().begin(), proto.stop().end());
  s.ignore_eos = proto.ignore_eos();
  if (proto.has_top_logprobs()) {
    if (proto.top_logprobs() < 0 || proto.top_logprobs() > 20) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling.top_logprobs must be in [0, 20], got ", proto.top_logprobs()));
    }
    r.top_logprobs = proto.top_logprobs();
  }
  if (absl::Status st = s.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: ", st.message()));
  }
  return r;
}

absl::StatusOr<std::optional<KvPolicy>> KvPolicyFromProto(const v1::KvPolicy& proto, bool present,
                                                          const KvPolicy& server_default) {
  if (!present) return std::optional<KvPolicy>();
  if (absl::Status s = CheckNonNegative(proto); !s.ok()) return s;
  KvPolicy p = server_default;
  if (proto.method() != v1::KV_METHOD_UNSPECIFIED) {
    auto method = MethodFromProto(proto.method());
    if (!method.ok()) return method.status();
    p.method = *method;
  }
  if (proto.budget() != 0 || proto.ratio() != 0.0) {
    p.budget = proto.budget();
    p.ratio = proto.ratio();
  } else if (p.method == KvMethod::kFull) {
    p.budget = 0;
    p.ratio = 0.0;
  }
  if (proto.window() > 0) p.window = proto.window();
  if (proto.pooling() == v1::KV_POOLING_MAX) p.pooling = KvPooling::kMax;
  if (proto.pooling() == v1::KV_POOLING_AVG) p.pooling = KvPooling::kAvg;
  if (proto.kernel() > 0) p.kernel = proto.kernel();
  if (proto.beta() > 0.0) p.beta = proto.beta();
  if (proto.official_rounding()) p.rounding = BudgetRounding::kOfficial;
  if (absl::Status s = p.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("kv_policy: ", s.message()));
  }
  return std::optional<KvPolicy>(p);
}

std::vector<ChatMessage> MessagesFromProto(const v1::ChatMessages& proto) {
  std::vector<ChatMessage> out;
  out.reserve(static_cast<size_t>(proto.messages_size()));
  for (const v1::ChatMessage& m : proto.messages()) out.push_back({m.role(), m.content()});
  return out;
}

absl::StatusOr<GenerateRequest> GenerateRequestFromProto(const v1::GenerateRequest& request,
                                                         const PromptEncoder& encoder,
                                                         const KvPolicy& server_default) {
  GenerateRequest req;
  if (!request.chat_template().empty() && request.input_case() != v1::GenerateRequest::kMessages) {
    return absl::InvalidArgumentError("chat_template applies to messages only");
  }
  auto prompt = EncodeGenerateInput(request, encoder);
  if (!prompt.ok()) return prompt.status();
  req.prompt = std::move(*prompt);
  auto sampling = SamplingFromProto(request.sampling());
  if (!sampling.ok()) return sampling.status();
  req.sampling = std::move(sampling->params);
  req.top_logprobs = sampling->top_logprobs;
  auto policy = KvPolicyFromProto(request.kv_policy(), request.has_kv_policy(), server_default);
  if (!policy.ok()) return policy.status();
  req.kv_policy = *policy;
  req.session_id = request.session_id();
  if (request.session_mode() != v1::SESSION_MODE_FORK &&
      request.session_mode() != v1::SESSION_MODE_APPEND) {
    return absl::InvalidArgumentError("session_mode: unknown value");
  }
  req.session_mode =
      request.session_mode() == v1::SESSION_MODE_APPEND ? SessionMode::kAppend : SessionMode::kFork;
  if (req.session_mode == SessionMode::kAppend && req.session_id.empty()) {
    return absl::InvalidArgumentError("session_mode APPEND needs a session_id");
  }
  return req;
}

absl::StatusOr<CreateSessionRequest> CreateSessionRequestFromProto(
    const v1::CreateSessionRequest& request, const PromptEncoder& encoder,
    const KvPolicy& server_default) {
  CreateSessionRequest req;
  auto context = EncodeSessionContext(request, encoder);
  if (!context.ok()) return context.status();
  req.context = std::move(*context);
  auto policy = KvPolicyFromProto(request.kv_policy(), request.has_kv_policy(), server_default);
  if (!policy.ok()) return policy.status();
  req.kv_policy = *policy;
  if (request.ttl_seconds() < 0) return absl::InvalidArgumentError("ttl_seconds must be >= 0");
  req.ttl = absl::Seconds(request.ttl_seconds());
  return req;
}

void KvPolicyToProto(const KvPolicy& policy, v1::KvPolicy* out) {
  out->set_method(MethodToProto(policy.method));
  out->set_budget(policy.budget);
  out->set_ratio(policy.ratio);
  out->set_window(policy.window);
  out->set_pooling(policy.pooling == KvPooling::kAvg ? v1::KV_POOLING_AVG : v1::KV_POOLING_MAX);
  out->set_kernel(policy.kernel);
  out->set_beta(policy.beta);
  out->set_official_rounding(policy.rounding == BudgetRounding::kOfficial);
}

void SessionToProto(const SessionInfo& info, v1::Session* out) {
  out->set_session_id(info.session_id);
  out->set_tokens(info.tokens);
  for (int64_t n : info.per_layer_tokens) out->add_per_layer_tokens(n);
  out->set_kv_bytes(info.kv_bytes);
  KvPolicyToProto(info.kv_policy, out->mutable_kv_policy());
  out->set_created_unix_ms(UnixMillis(info.created));
  out->set_expires_unix_ms(UnixMillis(info.expires));
  out->set_active_requests(info.active_requests);
}

void UsageToProto(const Usage& usage, v1::Usage* out) {
  out->set_prompt_tokens(usage.prompt_tokens);
  out->set_session_tokens_reused(usage.session_tokens_reused);
  out->set_completion_tokens(usage.completion_tokens);
  for (int64_t n : usage.kv_entries_per_layer) out->add_kv_entries_per_layer(n);
  v1::Timings* t = out->mutable_timings();
  t->set_queue_ms(usage.queue_ms);
  t->set_prefill_ms(usage.prefill_ms);
  t->set_decode_ms(usage.decode_ms);
  t->set_ttft_ms(usage.ttft_ms);
  t->set_total_ms(usage.total_ms);
}

v1::FinishReason FinishReasonToProto(const std::string& reason) {
  if (reason == "stop") return v1::FINISH_REASON_STOP;
  if (reason == "length") return v1::FINISH_REASON_LENGTH;
  return v1::FINISH_REASON_UNSPECIFIED;
}

void TokenEventToProto(const TokenEvent& event, const Tokenizer& tokenizer, v1::TokenDelta* out) {
  out->Clear();
  out->set_token_id(event.token);
  out->set_text(ToValidUtf8(event.text));
  if (event.logprob) {
    v1::TokenLogprob* lp = out->mutable_logprob();
    lp->set_token_id(event.logprob->token);
    lp->set_text(ToValidUtf8(tokenizer.TokenToPiece(event.logprob->token)));
    lp->set_logprob(event.logprob->logprob);
  }
  for (const TokenLogprob& alt : event.top_logprobs) {
    v1::TokenLogprob* lp = out->add_top_logprobs();
    lp->set_token_id(alt.token);
    lp->set_text(ToValidUtf8(tokenizer.TokenToPiece(alt.token)));
    lp->set_logprob(alt.logprob);
  }
}

}  // namespace funnel
