// NIAH context building and scoring (client/niah_haystack.h, client/niah_format.h) and LongBench
// prompt building (client/longbench_prompt.h), with synthetic ids and the real stories260K
// tokenizer and shared data files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "client/cli_args.h"
#include "client/eval_runner.h"
#include "client/longbench_prompt.h"
#include "client/niah_format.h"
#include "client/niah_haystack.h"
#include "runtime/text/tokenizer.h"
#include "tests/testing/golden.h"
#include "tests/testing/test_data.h"

namespace funnel {
namespace {

constexpr int32_t kPeriod = 5;
bool IsPeriod(int32_t id) { return id == kPeriod; }

TEST(NiahHaystackTest, InsertsAtThePrecedingSentenceBoundary) {
  const std::vector<int32_t> hay = {10, 11, kPeriod, 12, 13, kPeriod, 14, 15, 16, 17};
  const std::vector<int32_t> needle = {90, 91};
  // Cut to 10 - 2 = 8 tokens; depth 50%: int(8 * 0.5) = 4, back to just after the period at 2.
  NeedleContext c = InsertNeedle(hay, needle, 10, 50.0, IsPeriod);
  EXPECT_EQ(c.ids, (std::vector<int32_t>{10, 11, kPeriod, 90, 91, 12, 13, kPeriod, 14, 15}));
  EXPECT_EQ(c.needle_start, 3);
  // Depth 80%: int(6.4) = 6, token 5 is a period: stays at 6.
  c = InsertNeedle(hay, needle, 10, 80.0, IsPeriod);
  EXPECT_EQ(c.needle_start, 6);
  // 100%: appended.
  c = InsertNeedle(hay, needle, 10, 100.0, IsPeriod);
  EXPECT_EQ(c.ids, (std::vector<int32_t>{10, 11, kPeriod, 12, 13, kPeriod, 14, 15, 90, 91}));
  EXPECT_EQ(c.needle_start, 8);
  // 0%, and no period before the insertion point: the start.
  EXPECT_EQ(InsertNeedle(hay, needle, 10, 0.0, IsPeriod).needle_start, 0);
  EXPECT_EQ(InsertNeedle(hay, needle, 10, 20.0, IsPeriod).needle_start, 0);
}

TEST(NiahHaystackTest, RepeatsAShortHaystack) {
  const std::vector<int32_t> hay = {1, 2, kPeriod};
  const NeedleContext c = InsertNeedle(hay, std::vector<int32_t>{9}, 8, 100.0, IsPeriod);
  EXPECT_EQ(c.ids, (std::vector<int32_t>{1, 2, kPeriod, 1, 2, kPeriod, 1, 9}));
}

TEST(NiahHaystackTest, ScoresAsTheReferenceHarness) {
  const std::string answer = kClassicAnswer;
  EXPECT_DOUBLE_EQ(
      WordOverlapScore("Eat a sandwich and sit in Dolores Park on a sunny day.", answer), 1.0);
  // The answer has 11 distinct words ("a" twice); 3 of them present.
  EXPECT_DOUBLE_EQ(WordOverlapScore("eat a sandwich", answer), 3.0 / 11.0);
  EXPECT_DOUBLE_EQ(WordOverlapScore("", answer), 0.0);
  EXPECT_TRUE(ExactAnswerMatch(" 12345. The rest", " 12345.", "."));
  EXPECT_TRUE(ExactAnswerMatch("12345.", " 12345.", "."));
  EXPECT_FALSE(ExactAnswerMatch(" 123456.", " 12345.", "."));
  EXPECT_FALSE(ExactAnswerMatch(" 1234", " 12345.", "."));
  EXPECT_EQ(CutAfterStop("ab. cd.", "."), "ab.");
  EXPECT_TRUE(ContainsAnswer(
      "The best thing is to EAT a sandwich and sit in Dolores Park on a sunny day.", answer));
  EXPECT_FALSE(ContainsAnswer("eat a sandwich", answer));
}

TEST(NiahHaystackTest, LoadsSortedEssaysAndSkipsTrainingFiles) {
  const std::string dir = testing::SharedDataPath("eval/niah/PaulGrahamEssays");
  auto all = LoadHaystack({dir}, 0, false);
  ASSERT_TRUE(all.ok()) << all.status();
  auto held_out = LoadHaystack({dir}, 40, true);
  ASSERT_TRUE(held_out.ok()) << held_out.status();
  EXPECT_LT(held_out->size(), all->size());
  EXPECT_EQ(held_out->find('\n'), std::string::npos);
  EXPECT_EQ(held_out->find("  "), std::string::npos);
  // The 41st essay in name order starts the held-out text.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".txt") names.push_back(e.path().string());
  }
  std::sort(names.begin(), names.end());
  ASSERT_GT(names.size(), 40u);
  std::ifstream in(names[40]);
  std::string first_word;
  in >> first_word;
  EXPECT_EQ(held_out->substr(0, first_word.size()), first_word);
  EXPECT_FALSE(LoadHaystack({dir}, 1000, false).ok());
  EXPECT_FALSE(LoadHaystack({dir + "/missing"}, 0, false).ok());
}

TEST(NiahHaystackTest, PeriodTokensOfARealTokenizer) {
  auto tok = LoadEvalTokenizer(testing::Stories260KPath());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EncodeOptions o;
  o.add_bos = false;
  o.add_space_prefix = false;
  const std::vector<int32_t> ids = (*tok)->Encode("Hi there. Bye", o);
  int periods = 0;
  for (int32_t id : ids) periods += IsPeriodToken(**tok, id) ? 1 : 0;
  EXPECT_EQ(periods, 1);
}

TEST(NiahFormatTest, FixtureFormatDrawsFreshFacts) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("niah_format_" + std::to_string(::getpid()) + ".json"))
                               .string();
  std::ofstream(path) << R"({"templates": {
      "passkey": {"needle": " The pass key is {value}. Remember it.", "question": "\nWhat is the pass key? The pass key is", "answer": " {value}."},
      "kv": {"needle": " The number for {key} is {value}.", "question": "\nNumber for {key}?", "answer": " {value}."}},
    "values": {"kv_keys": ["apple", "river"]},
    "stop": ".", "max_new_tokens": 48,
    "classic_needle": {"needle": " N.", "question": "\nQ?", "answer": " A."}})";
  auto f = LoadFixtureNiahFormat(path, "passkey");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->stop, ".");
  EXPECT_EQ(f->max_new_tokens, 48);
  EXPECT_TRUE(f->fixture);
  std::mt19937_64 rng(7);
  std::set<std::string> answers;
  for (int i = 0; i < 20; ++i) {
    const NiahFact fact = DrawNiahFact(*f, rng);
    ASSERT_EQ(fact.answer.size(), 7u) << fact.answer;  // " ddddd."
    const std::string digits = fact.answer.substr(1, 5);
    EXPECT_NE(digits[0], '0');
    EXPECT_EQ(std::set<char>(digits.begin(), digits.end()).size(), 5u) << digits;
    EXPECT_NE(fact.needle.find(digits), std::string::npos);
    answers.insert(fact.answer);
  }
  EXPECT_GT(answers.size(), 10u);
  auto kv = LoadFixtureNiahFormat(path, "kv");
  ASSERT_TRUE(kv.ok()) << kv.status();
  const NiahFact fact = DrawNiahFact(*kv, rng);
  EXPECT_TRUE(fact.question == "\nNumber for apple?" || fact.question == "\nNumber for river?");
  auto classic = LoadFixtureNiahFormat(path, "classic");
  ASSERT_TRUE(classic.ok());
  EXPECT_EQ(DrawNiahFact(*classic, rng).answer, " A.");
  EXPECT_FALSE(LoadFixtureNiahFormat(path, "city").ok());  // no template for city
  EXPECT_FALSE(LoadFixtureNiahFormat(path + ".missing", "passkey").ok());
  std::filesystem::remove(path);
}

TEST(NiahFormatTest, PromptTemplateSubstitutesOnce) {
  NiahFormat f = ReferenceNiahFormat({"", kClassicNeedle, kClassicQuestion, kClassicAnswer});
  EXPECT_EQ(RenderNiahPrompt(f, "ctx {question}", "Q?"),
            "<|im_start|> This is a very long story book: <book> ctx {question} </book>.\n Based "
            "on the content of the book, Question: Q?\nAnswer:");
}

TEST(LongBenchPromptTest, FormatsLikePythonStrFormat) {
  auto p = FormatLongBenchPrompt("A {context} B {input} {{x}}",
                                 {{"context", "c{input}"}, {"input", "i"}});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, "A c{input} B i {x}");
  EXPECT_FALSE(FormatLongBenchPrompt("{missing}", {}).ok());
  EXPECT_FALSE(FormatLongBenchPrompt("{open", {}).ok());
}

TEST(LongBenchPromptTest, TruncatesTheMiddle) {
  auto tok = LoadEvalTokenizer(testing::Stories260KPath());
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::string prompt = "Start of the story.";
  for (int i = 0; i < 50; ++i) prompt += " The cat sat on the mat.";
  prompt += " End here";
  const size_t full = (*tok)->Encode(prompt).size();
  ASSERT_GT(full, 100u);
  EXPECT_EQ(TruncateMiddle(**tok, prompt, static_cast<int64_t>(full)), prompt);
  const std::string cut = TruncateMiddle(**tok, prompt, 40);
  EXPECT_EQ(cut.rfind("Start of the story.", 0), 0u) << cut;
  EXPECT_EQ(cut.substr(cut.size() - 8), "End here") << cut;
  const size_t cut_tokens = (*tok)->Encode(cut).size();
  EXPECT_GE(cut_tokens, 36u);
  EXPECT_LE(cut_tokens, 42u);
}

TEST(EvalPolicyGridTest, FullOnceOtherMethodsAtEveryBudget) {
  CliSpec spec;
  AddEvalKvKnobFlags(spec);
  auto knobs = CliArgs::Parse({"--kv-window", "4", "--kv-pooling", "avg"}, spec);
  ASSERT_TRUE(knobs.ok()) << knobs.status();
  auto grid = ParsePolicyGrid("full,pyramidkv,streamingllm,full", "32,64", *knobs);
  ASSERT_TRUE(grid.ok()) << grid.status();
  std::vector<std::string> labels;
  for (const EvalPolicy& e : *grid) labels.push_back(e.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"full", "pyramidkv/32", "pyramidkv/64",
                                              "streamingllm/32", "streamingllm/64"}));
  EXPECT_EQ((*grid)[1].proto.method(), v1::KV_METHOD_PYRAMIDKV);
  EXPECT_EQ((*grid)[1].proto.budget(), 32);
  EXPECT_EQ((*grid)[1].proto.window(), 4);
  EXPECT_EQ((*grid)[1].proto.pooling(), v1::KV_POOLING_AVG);
  EXPECT_EQ((*grid)[0].budget(), 0);
  // full alone needs no budgets; other methods do, and they must be positive integers.
  EXPECT_TRUE(ParsePolicyGrid("full", "", *knobs).ok());
  EXPECT_FALSE(ParsePolicyGrid("snapkv", "", *knobs).ok());
  EXPECT_FALSE(ParsePolicyGrid("snapkv", "32,x", *knobs).ok());
  EXPECT_FALSE(ParsePolicyGrid("snapkv", "0", *knobs).ok());
  EXPECT_FALSE(ParsePolicyGrid("magic", "32", *knobs).ok());
  EXPECT_FALSE(ParseNumberList("0,101", "--depths", 0, 100).ok());
  EXPECT_EQ(*ParseNumberList("0,12.5,100", "--depths", 0, 100),
            (std::vector<double>{0, 12.5, 100}));
}

TEST(LongBenchPromptTest, ReplacesInvalidUtf8LikePython) {
  EXPECT_EQ(ReplaceInvalidUtf8("ab"), "ab");
  EXPECT_EQ(ReplaceInvalidUtf8("\xE4\xB8\xAD"), "\xE4\xB8\xAD");  // 中
  // A character cut after two of its three bytes: one U+FFFD for the maximal invalid prefix.
  EXPECT_EQ(ReplaceInvalidUtf8("\xE4\xB8x"), "\xEF\xBF\xBDx");
  // A stray continuation byte and an overlong lead: one U+FFFD each byte.
  EXPECT_EQ(ReplaceInvalidUtf8("\x80\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(LongBenchPromptTest, TruncatedChineseStaysValidUtf8) {
  auto tok = LoadEvalTokenizer(testing::Stories260KPath());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto samples =
      LoadLongBenchTask(testing::SharedDataPath("eval/longbench/multifieldqa_zh.jsonl"), 1);
  ASSERT_TRUE(samples.ok()) << samples.status();
  // stories260K has no Chinese pieces: every character is 3 byte tokens, so cuts split some.
  for (int64_t max_tokens : {101, 102, 103}) {
    const std::string cut = TruncateMiddle(**tok, (*samples)[0].fields["context"], max_tokens);
    EXPECT_EQ(ReplaceInvalidUtf8(cut), cut) << max_tokens;
  }
}

TEST(LongBenchPromptTest, LoadsSharedTaskFilesAndReferenceTables) {
  const std::string dir = testing::SharedDataPath("eval/longbench");
  auto samples = LoadLongBenchTask(dir + "/passage_retrieval_zh.jsonl", 3);
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 3u);
  EXPECT_EQ((*samples)[0].answers, std::vector<std::string>{"段落27"});
  EXPECT_TRUE((*samples)[0].fields.contains("context"));
  EXPECT_TRUE((*samples)[0].fields.contains("input"));
  auto maxlen = LoadIntMap(dir + "/dataset2maxlen.json");
  ASSERT_TRUE(maxlen.ok());
  EXPECT_EQ((*maxlen)["multi_news"], 512);
  EXPECT_EQ((*maxlen)["passage_retrieval_zh"], 32);
  auto prompts = LoadStringMap(dir + "/dataset2prompt.json");
  ASSERT_TRUE(prompts.ok());
  EXPECT_NE((*prompts)["lcc"].find("{context}"), std::string::npos);
  EXPECT_FALSE(LongBenchUsesChatTemplate("trec"));
  EXPECT_FALSE(LongBenchUsesChatTemplate("repobench-p"));
  EXPECT_TRUE(LongBenchUsesChatTemplate("multi_news"));
  EXPECT_FALSE(LoadLongBenchTask(dir + "/nope.jsonl", 0).ok());
}

}  // namespace
}  // namespace funnel
