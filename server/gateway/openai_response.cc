#include "server/gateway/openai_response.h"

#include <utility>

namespace funnel {
namespace {

using Json = nlohmann::json;

bool IsChat(const ResponseHeader& h) { return h.endpoint == Endpoint::kChatCompletions; }

Json Bytes(const std::string& text) {
  Json bytes = Json::array();
  for (char c : text) bytes.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  return bytes;
}

// Chat: one entry of logprobs.content.
Json ChatTokenLogprob(const v1::TokenDelta& delta) {
  Json top = Json::array();
  for (const v1::TokenLogprob& alt : delta.top_logprobs()) {
    top.push_back(
        {{"token", alt.text()}, {"logprob", alt.logprob()}, {"bytes", Bytes(alt.text())}});
  }
  const v1::TokenLogprob& lp = delta.logprob();
  return {{"token", lp.text()},
          {"logprob", lp.logprob()},
          {"bytes", Bytes(lp.text())},
          {"top_logprobs", std::move(top)}};
}

Json ChatLogprobs(const std::vector<v1::TokenDelta>& tokens) {
  Json content = Json::array();
  for (const v1::TokenDelta& d : tokens) content.push_back(ChatTokenLogprob(d));
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

// Completions: parallel arrays; text_offset counts characters from the start of the completion.
Json CompletionLogprobs(const std::vector<v1::TokenDelta>& tokens, int64_t first_offset) {
  Json text = Json::array(), logprobs = Json::array(), top = Json::array(), offsets = Json::array();
  int64_t offset = first_offset;
  for (const v1::TokenDelta& d : tokens) {
    text.push_back(d.logprob().text());
    logprobs.push_back(d.logprob().logprob());
    Json alts = Json::object();
    for (const v1::TokenLogprob& alt : d.top_logprobs()) alts[alt.text()] = alt.logprob();
    top.push_back(std::move(alts));
    offsets.push_back(offset);
    offset += Utf8Length(d.text());
  }
  return {{"tokens", std::move(text)},
          {"token_logprobs", std::move(logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

Json ChoiceLogprobs(const ResponseHeader& h, const std::vector<v1::TokenDelta>& tokens,
                    int64_t first_offset) {
  if (h.top_logprobs < 0) return nullptr;
  return IsChat(h) ? ChatLogprobs(tokens) : CompletionLogprobs(tokens, first_offset);
}

Json ChunkEnvelope(const ResponseHeader& h, Json choice, bool include_usage) {
  Json chunk = {{"id", h.id},
                {"object", IsChat(h) ? "chat.completion.chunk" : "text_completion"},
                {"created", h.created},
                {"model", h.model},
                {"choices", Json::array({std::move(choice)})}};
  if (include_usage) chunk["usage"] = nullptr;
  return chunk;
}

// A streamed choice: chat's {index, delta, logprobs, finish_reason} or completions' {index, text,
// logprobs, finish_reason}.
Json StreamChoice(const ResponseHeader& h, int32_t index, Json delta_or_text, Json logprobs,
                  Json finish_reason) {
  Json choice = {{"index", index}};
  choice[IsChat(h) ? "delta" : "text"] = std::move(delta_or_text);
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = std::move(finish_reason);
  return choice;
}

Json KvPolicyJson(const v1::KvPolicy& p) {
  return {{"method", KvMethodApiName(p.method())},
          {"budget", p.budget()},
          {"ratio", p.ratio()},
          {"window", p.window()},
          {"pooling", p.pooling() == v1::KV_POOLING_AVG ? "avg" : "max"},
          {"kernel", p.kernel()},
          {"beta", p.beta()},
          {"rounding", p.official_rounding() ? "official" : "exact"}};
}

}  // namespace

const char kSseDone[] = "data: [DONE]\n\n";

std::string DumpJson(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string SseEvent(const Json& json) { return "data: " + DumpJson(json) + "\n\n"; }

std::string FinishReasonString(v1::FinishReason reason) {
  return reason == v1::FINISH_REASON_LENGTH ? "length" : "stop";
}

int64_t Utf8Length(const std::string& text) {
  int64_t n = 0;
  for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

Json UsageJson(const std::vector<const v1::Usage*>& per_choice, int32_t n) {
  int64_t prompt = 0, cached = 0, completion = 0;
  for (size_t i = 0; i < per_choice.size(); ++i) {
    const v1::Usage& u = *per_choice[i];
    if (n <= 1 || i % static_cast<size_t>(n) == 0) {
      prompt += u.prompt_tokens() + u.session_tokens_reused();
      cached += u.session_tokens_reused();
    }
    completion += u.completion_tokens();
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

Json CompletionJson(const ResponseHeader& h, const std::vector<ChoiceOutput>& choices, int32_t n) {
  Json out_choices = Json::array();
  std::vector<const v1::Usage*> usages;
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceOutput& c = choices[i];
    Json choice = {{"index", static_cast<int64_t>(i)}};
    if (IsChat(h)) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}};
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = ChoiceLogprobs(h, c.tokens, 0);
    choice["finish_reason"] = FinishReasonString(c.final.finish_reason());
    out_choices.push_back(std::move(choice));
    usages.push_back(&c.final.usage());
  }
  return {{"id", h.id},
          {"object", IsChat(h) ? "chat.completion" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", std::move(out_choices)},
          {"usage", UsageJson(usages, n)}};
}

Json RoleChunk(const ResponseHeader& h, int32_t index, bool include_usage) {
  Json delta = {{"role", "assistant"}, {"content", ""}};
  return ChunkEnvelope(h, StreamChoice(h, index, std::move(delta), nullptr, nullptr),
                       include_usage);
}

Json TokenChunk(const ResponseHeader& h, int32_t index, const v1::TokenDelta& delta,
                int64_t text_offset, bool include_usage) {
  Json content = IsChat(h) ? Json{{"content", delta.text()}} : Json(delta.text());
  Json logprobs = ChoiceLogprobs(h, {delta}, text_offset);
  return ChunkEnvelope(h, StreamChoice(h, index, std::move(content), std::move(logprobs), nullptr),
                       include_usage);
}

Json TextChunk(const ResponseHeader& h, int32_t index, const std::string& text,
               bool include_usage) {
  Json content = IsChat(h) ? Json{{"content", text}} : Json(text);
  return ChunkEnvelope(h, StreamChoice(h, index, std::move(content), nullptr, nullptr),
                       include_usage);
}

Json FinishChunk(const ResponseHeader& h, int32_t index, v1::FinishReason reason,
                 bool include_usage) {
  Json content = IsChat(h) ? Json::object() : Json("");
  return ChunkEnvelope(
      h, StreamChoice(h, index, std::move(content), nullptr, FinishReasonString(reason)),
      include_usage);
}

Json UsageChunk(const ResponseHeader& h, const Json& usage) {
  return {{"id", h.id},
          {"object", IsChat(h) ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", Json::array()},
          {"usage", usage}};
}

Json ModelJson(const v1::Model& model) {
  return {{"id", model.id()},
          {"object", "model"},
          {"created", 0},
          {"owned_by", "funnel"},
          {"context_length", model.context_length()}};
}

Json SessionJson(const v1::Session& s, const std::string& model) {
  Json per_layer = Json::array();
  for (int64_t n : s.per_layer_tokens()) per_layer.push_back(n);
  Json out = {{"id", s.session_id()},
              {"object", "session"},
              {"tokens", s.tokens()},
              {"per_layer_tokens", std::move(per_layer)},
              {"kv_bytes", s.kv_bytes()},
              {"kv_compression", KvPolicyJson(s.kv_policy())},
              {"created", s.created_unix_ms() / 1000},
              {"expires_at", s.expires_unix_ms() / 1000},
              {"active_requests", s.active_requests()}};
  if (!model.empty()) out["model"] = model;
  return out;
}

}  // namespace funnel
