// Mistral chat formats against Mistral's own samples (mistral-common tests/data/samples: the
// request, and the token ids and text its instruct tokenizers produce for each version).
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer_loader.h"
#include "tests/testing/test_data.h"
#include "tests/unit/text/tokenizer_vector_util.h"

namespace funnel {
namespace {

using Json = nlohmann::json;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr char kSamples[] = "tokenizers/mistral/test_samples/";

std::string ModelFile(const std::string& version) {
  if (version == "v1") return "tokenizers/mistral/tokenizer.model.v1";
  if (version == "v2") return "tokenizers/mistral/mistral_instruct_tokenizer_240216.model.v2";
  if (version == "v3") return "tokenizers/mistral/mistral_instruct_tokenizer_240323.model.v3";
  return "tokenizers/mistral/mistral_instruct_tokenizer_241114.model.v7";
}

std::unique_ptr<Tokenizer> LoadVersion(const std::string& version) {
  auto tok = LoadTokenizer(testing::SharedDataPath(ModelFile(version)));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

std::string StringOr(const Json& j, const char* key) {
  return j.contains(key) && j.at(key).is_string() ? j.at(key).get<std::string>() : "";
}

// The sample's request as ChatMessages.
std::vector<ChatMessage> ReadMessages(const Json& sample) {
  std::vector<ChatMessage> messages;
  for (const Json& m : sample.at("messages")) {
    ChatMessage msg(m.at("role").get<std::string>(), StringOr(m, "content"));
    msg.tool_call_id = StringOr(m, "tool_call_id");
    msg.name = StringOr(m, "name");
    if (m.contains("tool_calls") && m.at("tool_calls").is_array()) {
      for (const Json& c : m.at("tool_calls")) {
        msg.tool_calls.push_back(
            {StringOr(c, "id"), c.at("function").at("name"), c.at("function").at("arguments")});
      }
    }
    messages.push_back(std::move(msg));
  }
  return messages;
}

struct SampleCase {
  const char* sample;
  const char* version;
};

class MistralSampleTest : public ::testing::TestWithParam<SampleCase> {};

TEST_P(MistralSampleTest, TokensAndTextMatchMistralCommon) {
  const std::string dir = std::string(kSamples) + GetParam().sample + "/";
  const std::string version = GetParam().version;
  auto tok = LoadVersion(version);
  ASSERT_NE(tok, nullptr);
  auto tmpl = ChatTemplate::FromName("mistral-" + version, *tok);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  const Json sample =
      Json::parse(testing::ReadTextFile(testing::SharedDataPath(dir + "sample.json")));
  ChatTemplateOptions options;
  const std::vector<ChatMessage> messages = ReadMessages(sample);
  // The tools as written (ordered_json keeps the key order, as Python dicts do).
  const auto ordered = nlohmann::ordered_json::parse(
      testing::ReadTextFile(testing::SharedDataPath(dir + "sample.json")));
  if (!ordered.at("tools").empty()) options.tools_json = ordered.at("tools").dump();
  auto ids = tmpl->Apply(messages, options);
  ASSERT_TRUE(ids.ok()) << ids.status();

  const Json expected = Json::parse(
      testing::ReadTextFile(testing::SharedDataPath(dir + "tokens_" + version + ".json")));
  EXPECT_THAT(*ids, ElementsAreArray(expected.at("tokens").get<std::vector<int32_t>>()));
  // The samples' text is the pieces joined (one file writes '▁' as ' ': compare with spaces).
  auto spaces = [](std::string s) {
    for (size_t p; (p = s.find("\xE2\x96\x81")) != std::string::npos;) s.replace(p, 3, " ");
    return s;
  };
  std::string text;
  for (int32_t id : *ids) text += tok->piece(id);
  EXPECT_EQ(
      spaces(text),
      spaces(testing::ReadTextFile(testing::SharedDataPath(dir + "text_" + version + ".txt"))));
}

INSTANTIATE_TEST_SUITE_P(
    Samples, MistralSampleTest,
    ::testing::Values(SampleCase{"no_tools", "v1"}, SampleCase{"no_tools", "v2"},
                      SampleCase{"no_tools", "v3"}, SampleCase{"get_weather_full", "v2"},
                      SampleCase{"get_weather_full", "v3"},
                      SampleCase{"get_weather_no_history", "v2"},
                      SampleCase{"get_weather_no_history", "v3"},
                      SampleCase{"get_weather_no_system_prompt", "v2"},
                      SampleCase{"get_weather_no_system_prompt", "v3"},
                      SampleCase{"parallel_calls", "v2"}, SampleCase{"parallel_calls", "v3"},
                      SampleCase{"several_calls", "v2"}, SampleCase{"several_calls", "v3"}),
    [](const ::testing::TestParamInfo<SampleCase>& info) {
      return std::string(info.param.sample) + "_" + info.param.version;
    });

TEST(MistralFormatTest, GenericNameFollowsTheVocabularyVersion) {
  for (const char* version : {"v1", "v3", "v7"}) {
    auto tok = LoadVersion(version);
    ASSERT_NE(tok, nullptr);
    auto t = ChatTemplate::FromName("mistral", *tok);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->kind(), ChatTemplateKind::kMistral);
    EXPECT_EQ(ChatTemplate::KindName(t->format()), "mistral-" + std::string(version));
  }
}

// v7 (no samples shipped): system messages stay in place between [SYSTEM_PROMPT] tokens; each
// part is encoded on its own as mistral-common's InstructTokenizerV7 does.
TEST(MistralFormatTest, V7SystemPromptsInPlace) {
  auto tok = LoadVersion("v7");
  ASSERT_NE(tok, nullptr);
  auto t = ChatTemplate::FromName("mistral-v7", *tok);
  ASSERT_TRUE(t.ok());
  std::vector<ChatMessage> msgs = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!  "}, {"user", "Bye"}};
  auto ids = t->Apply(msgs);
  ASSERT_TRUE(ids.ok()) << ids.status();
  auto enc = [&](const std::string& s) { return tok->Encode(s, {.add_bos = false}); };
  std::vector<int32_t> expected = {1, 16};  // <s> [SYSTEM_PROMPT]
  auto append = [&](const std::vector<int32_t>& v) {
    expected.insert(expected.end(), v.begin(), v.end());
  };
  append(enc("Be brief."));
  append({17, 3});  // [/SYSTEM_PROMPT] [INST]
  append(enc("Hi"));
  append({4});
  append(enc("Hello!"));  // trailing spaces dropped
  append({2, 3});
  append(enc("Bye"));
  append({4});
  EXPECT_THAT(*ids, ElementsAreArray(expected));
}

TEST(MistralFormatTest, V7ToolResultsCarryTheCallId) {
  auto tok = LoadVersion("v7");
  ASSERT_NE(tok, nullptr);
  auto t = ChatTemplate::FromName("mistral-v7", *tok);
  ChatMessage call("assistant", "");
  call.tool_calls.push_back({"abc123def", "f", R"({"x":1})"});
  ChatMessage result("tool", "42");
  result.tool_call_id = "abc123def";
  std::vector<ChatMessage> msgs = {{"user", "go"}, call, result};
  auto ids = t->Apply(msgs);
  ASSERT_TRUE(ids.ok()) << ids.status();
  auto enc = [&](const std::string& s) { return tok->Encode(s, {.add_bos = false}); };
  std::vector<int32_t> expected = {1, 3};
  auto append = [&](const std::vector<int32_t>& v) {
    expected.insert(expected.end(), v.begin(), v.end());
  };
  append(enc("go"));
  append({4, 5});  // [/INST] [TOOL_CALLS]
  append(enc(R"([{"name": "f", "arguments": {"x": 1}, "id": "abc123def"}])"));
  append({2, 8});  // </s> [TOOL_RESULTS]
  append(enc("abc123def"));
  append({18});  // [TOOL_CONTENT]
  append(enc("42"));
  append({9});
  EXPECT_THAT(*ids, ElementsAreArray(expected));
}

TEST(MistralFormatTest, RecognizedFromJinja) {
  EXPECT_EQ(*ChatTemplate::Recognize("{{ '[SYSTEM_PROMPT]' + m + '[/SYSTEM_PROMPT]' }}[INST]"),
            ChatTemplateKind::kMistralV7);
  EXPECT_EQ(*ChatTemplate::Recognize("{{ '[AVAILABLE_TOOLS] ' }}{{ '[INST] ' + c + '[/INST]' }}"),
            ChatTemplateKind::kMistral);
}

TEST(MistralFormatTest, ToolsOutsideTheirFormatsAreErrors) {
  auto v1 = LoadVersion("v1");
  ASSERT_NE(v1, nullptr);
  auto t = ChatTemplate::FromName("mistral-v1", *v1);
  std::vector<ChatMessage> msgs = {{"user", "hi"}};
  ChatTemplateOptions options;
  options.tools_json = "[]";
  EXPECT_THAT(t->Apply(msgs, options).status().message(),
              HasSubstr("not supported by the mistral-v1"));
  std::vector<ChatMessage> tool_msgs = {{"user", "hi"}, {"tool", "1"}};
  EXPECT_THAT(t->Apply(tool_msgs).status().message(), HasSubstr("is not one of system, user"));
  auto chatml = ChatTemplate::FromName("chatml", *v1);
  EXPECT_THAT(chatml->Apply(msgs, options).status().message(),
              HasSubstr("tools need a Mistral v2+ chat template"));
  auto v3tok = LoadVersion("v3");
  auto v3 = ChatTemplate::FromName("mistral-v3", *v3tok);
  std::vector<ChatMessage> no_id = {{"user", "hi"}, {"tool", "1"}};
  EXPECT_THAT(v3->Apply(no_id).status().message(), HasSubstr("needs a tool_call_id"));
  options.tools_json = "{\"not\": \"a list\"}";
  EXPECT_THAT(v3->Apply(msgs, options).status().message(), HasSubstr("not a JSON array"));
  std::vector<ChatMessage> empty_assistant = {{"user", "hi"}, {"assistant", ""}};
  EXPECT_THAT(v3->Apply(empty_assistant).status().message(),
              HasSubstr("needs content or tool calls"));
}

}  // namespace
}  // namespace funnel
