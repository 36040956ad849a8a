// OpenAI response shapes built from v1 results and the SSE framing.
#include "server/gateway/openai_response.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/gateway/openai_request.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

v1::TokenDelta Delta(const std::string& text, float logprob,
                     std::vector<std::pair<std::string, float>> top = {}) {
  v1::TokenDelta d;
  d.set_text(text);
  d.mutable_logprob()->set_text(text);
  d.mutable_logprob()->set_logprob(logprob);
  for (const auto& [t, lp] : top) {
    v1::TokenLogprob* alt = d.add_top_logprobs();
    alt->set_text(t);
    alt->set_logprob(lp);
  }
  return d;
}

v1::GenerateFinal Final(v1::FinishReason reason, int64_t prompt, int64_t reused,
                        int64_t completion) {
  v1::GenerateFinal f;
  f.set_finish_reason(reason);
  f.mutable_usage()->set_prompt_tokens(prompt);
  f.mutable_usage()->set_session_tokens_reused(reused);
  f.mutable_usage()->set_completion_tokens(completion);
  return f;
}

ResponseHeader Header(Endpoint endpoint, int32_t top_logprobs = -1) {
  return {endpoint, "id-1", "m", 1700000000, top_logprobs};
}

TEST(OpenAiResponse, ChatCompletionObject) {
  std::vector<ChoiceOutput> choices(2);
  choices[0].text = "Hello";
  choices[0].final = Final(v1::FINISH_REASON_STOP, 4, 100, 2);
  choices[1].text = "Hi there";
  choices[1].final = Final(v1::FINISH_REASON_LENGTH, 4, 100, 3);
  const Json j = CompletionJson(Header(Endpoint::kChatCompletions), choices, /*n=*/2);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"], "id-1");
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["created"], 1700000000);
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][1]["index"], 1);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][1]["finish_reason"], "length");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  // One prompt (n = 2): counted once, session part included and reported as cached.
  EXPECT_EQ(j["usage"]["prompt_tokens"], 104);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  EXPECT_EQ(j["usage"]["total_tokens"], 109);
}

TEST(OpenAiResponse, UsageCountsEveryPromptOnce) {
  std::vector<v1::Usage> u(4);
  for (int i = 0; i < 4; ++i) {
    u[static_cast<size_t>(i)].set_prompt_tokens(10 * (i / 2 + 1));  // prompts of 10 and 20
    u[static_cast<size_t>(i)].set_completion_tokens(1);
  }
  const Json j = UsageJson({&u[0], &u[1], &u[2], &u[3]}, /*n=*/2);
  EXPECT_EQ(j["prompt_tokens"], 30);
  EXPECT_EQ(j["completion_tokens"], 4);
  EXPECT_EQ(j["total_tokens"], 34);
}

TEST(OpenAiResponse, ChatLogprobsShape) {
  std::vector<ChoiceOutput> choices(1);
  choices[0].text = "ab";
  choices[0].tokens = {Delta("a", -0.5f, {{"a", -0.5f}, {"b", -1.5f}}), Delta("b", -0.25f)};
  choices[0].final = Final(v1::FINISH_REASON_STOP, 1, 0, 2);
  const Json j = CompletionJson(Header(Endpoint::kChatCompletions, 2), choices, 1);
  const Json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "a");
  EXPECT_FLOAT_EQ(content[0]["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(content[0]["bytes"], Json::array({97}));
  ASSERT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], "b");
  EXPECT_EQ(content[0]["top_logprobs"][1]["bytes"], Json::array({98}));
  EXPECT_TRUE(content[1]["top_logprobs"].empty());
}

TEST(OpenAiResponse, CompletionLogprobsShapeWithCharacterOffsets) {
  std::vector<ChoiceOutput> choices(1);
  choices[0].text = "é ok";
  choices[0].tokens = {Delta("é", -1.0f, {{"é", -1.0f}, {"e", -2.0f}}), Delta(" ok", -0.5f)};
  choices[0].final = Final(v1::FINISH_REASON_LENGTH, 1, 0, 2);
  const Json j = CompletionJson(Header(Endpoint::kCompletions, 2), choices, 1);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "é ok");
  const Json& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], Json::array({"é", " ok"}));
  EXPECT_EQ(lp["token_logprobs"].size(), 2u);
  EXPECT_EQ(lp["text_offset"], Json::array({0, 1}));  // "é" is one character (two bytes)
  EXPECT_FLOAT_EQ(lp["top_logprobs"][0]["e"].get<float>(), -2.0f);
}

TEST(OpenAiResponse, StreamingChunksAndSseFraming) {
  const ResponseHeader chat = Header(Endpoint::kChatCompletions);
  const Json role = RoleChunk(chat, 0, /*include_usage=*/true);
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(role.contains("usage") && role["usage"].is_null());
  const Json token = TokenChunk(chat, 1, Delta("Hi", -0.1f), 0, /*include_usage=*/false);
  EXPECT_EQ(token["choices"][0]["index"], 1);
  EXPECT_EQ(token["choices"][0]["delta"]["content"], "Hi");
  EXPECT_FALSE(token.contains("usage"));
  const Json finish = FinishChunk(chat, 0, v1::FINISH_REASON_LENGTH, false);
  EXPECT_TRUE(finish["choices"][0]["delta"].is_object());
  EXPECT_TRUE(finish["choices"][0]["delta"].empty());
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "length");
  v1::Usage u;
  u.set_prompt_tokens(3);
  u.set_completion_tokens(2);
  const Json usage = UsageChunk(chat, UsageJson({&u}, 1));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 5);

  const ResponseHeader text = Header(Endpoint::kCompletions, 0);
  const Json tc = TokenChunk(text, 0, Delta("ab", -0.1f), 7, false);
  EXPECT_EQ(tc["object"], "text_completion");
  EXPECT_EQ(tc["choices"][0]["text"], "ab");
  EXPECT_EQ(tc["choices"][0]["logprobs"]["text_offset"], Json::array({7}));

  const std::string event = SseEvent(Json{{"a", 1}});
  EXPECT_EQ(event, "data: {\"a\":1}\n\n");
  EXPECT_STREQ(kSseDone, "data: [DONE]\n\n");
}

TEST(OpenAiResponse, InvalidUtf8IsReplacedNotThrown) {
  const std::string dumped = DumpJson(Json{{"t", std::string("a\xff")}});
  EXPECT_EQ(dumped, "{\"t\":\"a\xEF\xBF\xBD\"}");
}

TEST(OpenAiResponse, SessionObject) {
  v1::Session s;
  s.set_session_id("sess-r0-0123456789abcdef");
  s.set_tokens(500);
  s.add_per_layer_tokens(64);
  s.add_per_layer_tokens(32);
  s.set_kv_bytes(12345);
  s.mutable_kv_policy()->set_method(v1::KV_METHOD_PYRAMIDKV);
  s.mutable_kv_policy()->set_budget(48);
  s.set_created_unix_ms(1700000000500);
  s.set_expires_unix_ms(1700003600500);
  const Json j = SessionJson(s, "m");
  EXPECT_EQ(j["id"], "sess-r0-0123456789abcdef");
  EXPECT_EQ(j["object"], "session");
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["tokens"], 500);
  EXPECT_EQ(j["per_layer_tokens"], Json::array({64, 32}));
  EXPECT_EQ(j["kv_bytes"], 12345);
  EXPECT_EQ(j["kv_compression"]["method"], "pyramidkv");
  EXPECT_EQ(j["kv_compression"]["budget"], 48);
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["expires_at"], 1700003600);
}

}  // namespace
}  // namespace funnel
