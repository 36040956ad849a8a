// OpenAI request parsing and validation: the v1 protos built from valid bodies, and 400s (with
// the offending param) for malformed JSON, wrong types, out-of-range values and unsupported
// fields.
#include "server/gateway/openai_request.h"

#include <gtest/gtest.h>

#include <string>

namespace funnel {
namespace {

absl::StatusOr<CompletionRequest> Chat(const std::string& body, int32_t max_choices = 16) {
  return ParseCompletionRequest(Endpoint::kChatCompletions, body, {.max_choices = max_choices});
}

absl::StatusOr<CompletionRequest> Completion(const std::string& body) {
  return ParseCompletionRequest(Endpoint::kCompletions, body, {});
}

// The param of a 400, or "<ok>" / "<no param>".
std::string ParamOfResult(const absl::StatusOr<CompletionRequest>& r) {
  if (r.ok()) return "<ok>";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  return ParamOf(r.status()).value_or("<no param>");
}

TEST(OpenAiRequest, ChatMessagesAndSamplingBecomeOneGenerateRequest) {
  auto r = Chat(R"({"model": "m", "messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null}],
    "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "presence_penalty": 0.1,
    "frequency_penalty": -0.2, "repetition_penalty": 1.1, "seed": 7, "max_tokens": 12,
    "stop": ["\n", "END"], "user": "u1", "unknown_field": {"ignored": true}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->user, "u1");
  EXPECT_FALSE(r->stream);
  EXPECT_EQ(r->top_logprobs, -1);
  ASSERT_EQ(r->choices.size(), 1u);
  const v1::GenerateRequest& g = r->choices[0];
  ASSERT_TRUE(g.has_messages());
  ASSERT_EQ(g.messages().messages_size(), 3);
  EXPECT_EQ(g.messages().messages(0).role(), "system");  // developer → system
  EXPECT_EQ(g.messages().messages(1).content(), "a\nb");
  EXPECT_EQ(g.messages().messages(2).role(), "assistant");
  EXPECT_EQ(g.messages().messages(2).content(), "");
  const v1::SamplingParams& s = g.sampling();
  EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(s.top_p(), 0.9f);
  EXPECT_EQ(s.top_k(), 40);
  EXPECT_FLOAT_EQ(s.min_p(), 0.05f);
  EXPECT_FLOAT_EQ(s.presence_penalty(), 0.1f);
  EXPECT_FLOAT_EQ(s.frequency_penalty(), -0.2f);
  EXPECT_FLOAT_EQ(s.repetition_penalty(), 1.1f);
  EXPECT_EQ(s.seed(), 7u);
  EXPECT_EQ(s.max_tokens(), 12);
  ASSERT_EQ(s.stop_size(), 2);
  EXPECT_EQ(s.stop(1), "END");
  EXPECT_FALSE(s.has_top_logprobs());
  EXPECT_FALSE(g.has_kv_policy());
}

TEST(OpenAiRequest, UnsetFieldsStayUnsetAndMaxTokensDefaultsPerEndpoint) {
  auto chat = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
                       "temperature": null})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  const v1::SamplingParams& s = chat->choices[0].sampling();
  EXPECT_FALSE(s.has_temperature());  // null = absent
  EXPECT_FALSE(s.has_seed());
  EXPECT_EQ(s.max_tokens(), 2147483647);  // chat: to the end of the context
  auto completion = Completion(R"({"model": "m", "prompt": "x"})");
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_EQ(completion->choices[0].sampling().max_tokens(), 16);  // OpenAI's completions default
}

TEST(OpenAiRequest, MaxCompletionTokensWinsOverMaxTokens) {
  auto r = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 50, "max_completion_tokens": 5})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->choices[0].sampling().max_tokens(), 5);
}

TEST(OpenAiRequest, PromptShapes) {
  auto text = Completion(R"({"model": "m", "prompt": "hello"})");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->choices[0].prompt(), "hello");
  auto ids = Completion(R"({"model": "m", "prompt": [1, 403, 407]})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(ids->choices[0].has_prompt_ids());
  EXPECT_EQ(ids->choices[0].prompt_ids().ids_size(), 3);
  EXPECT_EQ(ids->choices[0].prompt_ids().ids(2), 407);
  auto batch = Completion(R"({"model": "m", "prompt": ["a", [5, 6]], "n": 2, "seed": 10})");
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->choices.size(), 4u);  // prompt p, sample j → choice p * n + j
  EXPECT_EQ(batch->choices[0].prompt(), "a");
  EXPECT_EQ(batch->choices[1].prompt(), "a");
  EXPECT_EQ(batch->choices[2].prompt_ids().ids(1), 6);
  EXPECT_EQ(batch->choices[0].sampling().seed(), 10u);
  EXPECT_EQ(batch->choices[1].sampling().seed(), 11u);
  EXPECT_EQ(batch->choices[2].sampling().seed(), 10u);
  EXPECT_EQ(batch->choices[3].sampling().seed(), 11u);
}

TEST(OpenAiRequest, FanOutWithoutSeedLeavesSeedUnset) {
  auto r = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3})");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->choices.size(), 3u);
  EXPECT_EQ(r->n, 3);
  for (const auto& c : r->choices) EXPECT_FALSE(c.sampling().has_seed());
}

TEST(OpenAiRequest, NegativeSeedWrapsToItsBits) {
  auto r = Completion(R"({"model": "m", "prompt": "x", "seed": -1})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->choices[0].sampling().seed(), ~uint64_t{0});
}

TEST(OpenAiRequest, LogprobsPerEndpoint) {
  auto chat = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
                       "logprobs": true, "top_logprobs": 3})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->top_logprobs, 3);
  EXPECT_EQ(chat->choices[0].sampling().top_logprobs(), 3);
  auto chat_plain = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
                             "logprobs": true})");
  ASSERT_TRUE(chat_plain.ok());
  EXPECT_EQ(chat_plain->top_logprobs, 0);
  auto completion = Completion(R"({"model": "m", "prompt": "x", "logprobs": 2})");
  ASSERT_TRUE(completion.ok());
  EXPECT_EQ(completion->top_logprobs, 2);
  EXPECT_EQ(ParamOfResult(Chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                   "top_logprobs": 2})")),
            "top_logprobs");
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m", "prompt": "x", "logprobs": 21})")),
            "logprobs");
}

TEST(OpenAiRequest, StreamOptions) {
  auto r = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true,
                    "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
}

TEST(OpenAiRequest, SessionAndKvCompressionExtensions) {
  auto r = Completion(R"({"model": "m", "prompt": " Q?", "session_id": "sess-r1-0123456789abcdef",
                          "session_mode": "append", "ignore_eos": true,
                          "kv_compression": {"method": "pyramidkv", "budget": 64, "window": 4,
                                             "pooling": "avg", "kernel": 5, "beta": 10,
                                             "rounding": "official"}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->session_id, "sess-r1-0123456789abcdef");
  const v1::GenerateRequest& g = r->choices[0];
  EXPECT_EQ(g.session_id(), "sess-r1-0123456789abcdef");
  EXPECT_EQ(g.session_mode(), v1::SESSION_MODE_APPEND);
  EXPECT_TRUE(g.sampling().ignore_eos());
  ASSERT_TRUE(g.has_kv_policy());
  EXPECT_EQ(g.kv_policy().method(), v1::KV_METHOD_PYRAMIDKV);
  EXPECT_EQ(g.kv_policy().budget(), 64);
  EXPECT_EQ(g.kv_policy().window(), 4);
  EXPECT_EQ(g.kv_policy().pooling(), v1::KV_POOLING_AVG);
  EXPECT_EQ(g.kv_policy().kernel(), 5);
  EXPECT_DOUBLE_EQ(g.kv_policy().beta(), 10.0);
  EXPECT_TRUE(g.kv_policy().official_rounding());
}

TEST(OpenAiRequest, KvMethodNamesRoundTripThroughTheProtoEnum) {
  for (const char* name : {"full", "pyramidkv", "snapkv", "streamingllm", "h2o"}) {
    std::optional<v1::KvMethod> m = KvMethodFromApiName(name);
    ASSERT_TRUE(m.has_value()) << name;
    EXPECT_EQ(KvMethodApiName(*m), name);
  }
  EXPECT_FALSE(KvMethodFromApiName("PyramidKV").has_value());
  EXPECT_FALSE(KvMethodFromApiName("unspecified").has_value());
  EXPECT_FALSE(KvMethodFromApiName("").has_value());
}

TEST(OpenAiRequest, MalformedBodiesAre400WithoutParam) {
  const std::vector<std::string> bodies = {
      "",
      "{",
      "[]",
      "\"text\"",
      "null",
      "{\"model\": \"m\",}",
      "{\"model\": 'm'}",
      std::string("{\"model\": \"m\", \"prompt\": \"\xff\"}"),  // invalid UTF-8
      std::string("{\"model\": \"m\", \"prompt\": \"\xc3\"}"),  // truncated UTF-8
      std::string(100, '[') + std::string(100, ']')};
  for (const std::string& body : bodies) {
    auto r = Completion(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_FALSE(ParamOf(r.status()).has_value()) << body;
  }
}

TEST(OpenAiRequest, WrongTypesNameTheirParam) {
  const std::string messages = R"("messages": [{"role": "user", "content": "x"}])";
  const std::pair<std::string, std::string> cases[] = {
      {R"({"messages": [{"role": "user", "content": "x"}]})", "model"},
      {R"({"model": 5, )" + messages + "}", "model"},
      {R"({"model": "m"})", "messages"},
      {R"({"model": "m", "messages": []})", "messages"},
      {R"({"model": "m", "messages": [5]})", "messages[0]"},
      {R"({"model": "m", "messages": [{"content": "x"}]})", "messages[0].role"},
      {R"({"model": "m", "messages": [{"role": "tool", "content": "x"}]})", "messages[0].role"},
      {R"({"model": "m", "messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content[0]"},
      {R"({"model": "m", )" + messages + R"(, "temperature": "hot"})", "temperature"},
      {R"({"model": "m", )" + messages + R"(, "max_tokens": 1.5})", "max_tokens"},
      {R"({"model": "m", )" + messages + R"(, "max_tokens": -1})", "max_tokens"},
      {R"({"model": "m", )" + messages + R"(, "max_tokens": 3000000000})", "max_tokens"},
      {R"({"model": "m", )" + messages + R"(, "n": 0})", "n"},
      {R"({"model": "m", )" + messages + R"(, "n": 17})", "n"},
      {R"({"model": "m", )" + messages + R"(, "stream": "yes"})", "stream"},
      {R"({"model": "m", )" + messages + R"(, "stop": [1]})", "stop"},
      {R"({"model": "m", )" + messages + R"(, "stop": 7})", "stop"},
      {R"({"model": "m", )" + messages + R"(, "seed": "7"})", "seed"},
      {R"({"model": "m", )" + messages + R"(, "top_k": -2})", "top_k"},
      {R"({"model": "m", )" + messages + R"(, "session_id": 1})", "session_id"},
      {R"({"model": "m", )" + messages + R"(, "session_mode": "append"})", "session_mode"},
      {R"({"model": "m", )" + messages + R"(, "kv_compression": "pyramidkv"})", "kv_compression"},
      {R"({"model": "m", )" + messages + R"(, "kv_compression": {"method": "zip"}})",
       "kv_compression.method"},
      {R"({"model": "m", )" + messages + R"(, "kv_compression": {"budjet": 64}})",
       "kv_compression.budjet"},
      {R"({"model": "m", )" + messages + R"(, "kv_compression": {"budget": 0}})",
       "kv_compression.budget"},
      {R"({"model": "m", )" + messages + R"(, "echo": true})", "echo"},
      {R"({"model": "m", )" + messages + R"(, "logit_bias": {"5": 1}})", "logit_bias"},
      {R"({"model": "m", )" + messages + R"(, "tools": [{"type": "function"}]})", "tools"},
      {R"({"model": "m", )" + messages + R"(, "response_format": {"type": "json_object"}})",
       "response_format"},
      {R"({"model": "m", )" + messages + R"(, "best_of": 3})", "best_of"},
  };
  for (const auto& [body, param] : cases) {
    EXPECT_EQ(ParamOfResult(Chat(body)), param) << body;
  }
}

TEST(OpenAiRequest, CompletionPromptErrors) {
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m"})")), "prompt");
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m", "prompt": []})")), "prompt");
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m", "prompt": [1, "a"]})")), "prompt");
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m", "prompt": [-1]})")), "prompt");
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m", "prompt": [true]})")), "prompt");
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m", "prompt": ["a", []]})")), "prompt");
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m", "prompt": {"text": "a"}})")), "prompt");
}

TEST(OpenAiRequest, ChoicesAreCappedAcrossPrompts) {
  auto ok =
      ParseCompletionRequest(Endpoint::kCompletions,
                             R"({"model": "m", "prompt": ["a", "b"], "n": 2})", {.max_choices = 4});
  EXPECT_TRUE(ok.ok()) << ok.status();
  auto over = ParseCompletionRequest(Endpoint::kCompletions,
                                     R"({"model": "m", "prompt": ["a", "b", "c"], "n": 2})",
                                     {.max_choices = 4});
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(ParamOf(over.status()), "n");
}

TEST(OpenAiRequest, HarmlessDefaultsOfUnsupportedFieldsAreAccepted) {
  auto r = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "echo": false,
                    "logit_bias": {}, "tools": [], "response_format": {"type": "text"},
                    "best_of": 1, "suffix": null, "tool_choice": "none"})");
  EXPECT_TRUE(r.ok()) << r.status();
}

// Found by tests/fuzz/gateway_request_fuzzer's seeds: "suffix": "" was refused (nlohmann's
// empty() is false for every string), although an empty suffix asks for nothing.
TEST(OpenAiRequest, EmptySuffixIsAcceptedAndAnyOtherRefused) {
  auto empty = Completion(R"({"model": "m", "prompt": "a", "suffix": ""})");
  EXPECT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m", "prompt": "a", "suffix": "b"})")), "suffix");
  EXPECT_EQ(ParamOfResult(Completion(R"({"model": "m", "prompt": "a", "suffix": 0})")), "suffix");
}

TEST(OpenAiRequest, SessionCreateBody) {
  auto r = ParseSessionCreateRequest(
      R"({"model": "m", "prompt": "A long document", "ttl_seconds": 60,
          "kv_compression": {"method": "snapkv", "ratio": 0.25}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->request.prompt(), "A long document");
  EXPECT_EQ(r->request.ttl_seconds(), 60);
  EXPECT_EQ(r->request.kv_policy().method(), v1::KV_METHOD_SNAPKV);
  EXPECT_DOUBLE_EQ(r->request.kv_policy().ratio(), 0.25);
  auto chat = ParseSessionCreateRequest(
      R"({"model": "m", "messages": [{"role": "system", "content": "doc"}],
          "chat_template": "chatml"})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.messages().messages(0).content(), "doc");
  EXPECT_EQ(chat->request.chat_template(), "chatml");

  auto both = ParseSessionCreateRequest(
      R"({"model": "m", "prompt": "a", "messages": [{"role": "user", "content": "b"}]})");
  EXPECT_FALSE(both.ok());
  auto neither = ParseSessionCreateRequest(R"({"model": "m"})");
  EXPECT_FALSE(neither.ok());
  auto ttl = ParseSessionCreateRequest(R"({"model": "m", "prompt": "a", "ttl_seconds": -5})");
  ASSERT_FALSE(ttl.ok());
  EXPECT_EQ(ParamOf(ttl.status()), "ttl_seconds");
}

TEST(OpenAiRequest, NestingDepthSkipsBracketsInsideStrings) {
  EXPECT_EQ(JsonNestingDepth(R"({"a": [[1], {"b": 2}]})"), 3);
  EXPECT_EQ(JsonNestingDepth(R"({"a": "[[[[\"[[["})"), 1);
  EXPECT_EQ(JsonNestingDepth("plain"), 0);
}

}  // namespace
}  // namespace funnel
