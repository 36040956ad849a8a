// LongBench metrics against values computed by hand from LongBench's metrics.py / eval.py (and
// the `rouge` and fuzzywuzzy packages they call); the working is in the comments.
#include <gtest/gtest.h>

#include "client/longbench_metrics.h"

namespace funnel {
namespace {

TEST(LongBenchMetricsTest, NormalizeAnswerLowercasesDropsPunctuationArticlesAndSpaces) {
  // lower -> "the cat's  hat!", punctuation -> "the cats  hat", articles -> " cats  hat".
  EXPECT_EQ(NormalizeAnswer("The Cat's  Hat!"), "cats hat");
  // Articles only as whole words.
  EXPECT_EQ(NormalizeAnswer("Another theme, an apple"), "another theme apple");
  // Non-ASCII punctuation is not string.punctuation: the en dash stays, and splits words for \b.
  EXPECT_EQ(NormalizeAnswer("a\xE2\x80\x93"
                            "b"),
            "\xE2\x80\x93"
            "b");
  EXPECT_EQ(NormalizeZhAnswer("厦门 大学。"), "厦门大学");
}

TEST(LongBenchMetricsTest, QaF1) {
  // pred "cat sat on mat" (4), truth "cat on mat" (3), 3 common: P = 3/4, R = 1, F1 = 6/7.
  EXPECT_NEAR(QaF1Score("The cat sat on the mat.", "a cat on a mat"), 6.0 / 7.0, 1e-12);
  EXPECT_DOUBLE_EQ(QaF1Score("Paris", "paris."), 1.0);
  EXPECT_DOUBLE_EQ(QaF1Score("", "x"), 0.0);
  // Counter intersection: pred "x x y" vs truth "x y y": common x1 y1 = 2, P = R = 2/3.
  EXPECT_NEAR(QaF1Score("x x y", "x y y"), 2.0 / 3.0, 1e-12);
}

TEST(LongBenchMetricsTest, QaF1ZhSegmentsCharacters) {
  // [厦 门 大 学] both sides ('。' dropped).
  EXPECT_DOUBLE_EQ(QaF1ZhScore("厦门大学。", "厦门大学"), 1.0);
  // 北京大学 vs 厦门大学: common 大, 学: P = R = 1/2.
  EXPECT_DOUBLE_EQ(QaF1ZhScore("北京大学", "厦门大学"), 0.5);
}

TEST(LongBenchMetricsTest, RougeL) {
  // One sentence each. ref words {the, cat, is, on, mat} (m = 5), hyp {the, cat, sat, on, mat}
  // (n = 5). LCS "the cat on the mat" → word set {the, cat, on, mat} = 4. P = R = 0.8,
  // F = 2 * 0.64 / (1.6 + 1e-8).
  EXPECT_NEAR(RougeLScore("the cat sat on the mat", "the cat is on the mat"), 1.28 / (1.6 + 1e-8),
              1e-12);
  // Summary level: hyp sentences "a b", "c d"; ref "a c", "b d". Union of per-pair LCS words
  // {a}, {c}, {b}, {d} = 4 = m = n, so F = 2 / (2 + 1e-8) although the orders differ.
  EXPECT_NEAR(RougeLScore("a b. c d", "a c. b d"), 2.0 / (2.0 + 1e-8), 1e-12);
  // Word sets: "the the the" vs "the": m = n = 1, union {the}.
  EXPECT_NEAR(RougeLScore("the the the", "the"), 2.0 / (2.0 + 1e-8), 1e-12);
  // "b a" vs "a b": LCS length 1, one word: P = R = 1/2, F = 0.5 / (1 + 1e-8).
  EXPECT_NEAR(RougeLScore("b a", "a b"), 0.5 / (1.0 + 1e-8), 1e-12);
  // Empty hypothesis (no sentence after splitting at '.'): the original raises, scored 0.
  EXPECT_EQ(RougeLScore("", "a b"), 0.0);
  EXPECT_EQ(RougeLScore("...", "a b"), 0.0);
  // Case-sensitive: "The" != "the". ref {the, end}, hyp {The, end}: LCS {end}, F = 0.5.
  EXPECT_NEAR(RougeLScore("The end", "the end"), 0.5 / (1.0 + 1e-8), 1e-12);
}

TEST(LongBenchMetricsTest, RougeZhSegmentsCharacters) {
  // "我 爱 北 京" vs "我 爱 上 海": LCS {我, 爱}, m = n = 4: F = 2 * 0.25 / (1 + 1e-8).
  EXPECT_NEAR(RougeZhScore("我爱北京", "我爱上海"), 0.5 / (1.0 + 1e-8), 1e-12);
}

TEST(LongBenchMetricsTest, Classification) {
  const std::vector<std::string> classes = {"Location", "Description", "Entity"};
  EXPECT_DOUBLE_EQ(ClassificationScore("Location", "Location", classes), 1.0);
  // Two classes named, one right: 1/2.
  EXPECT_DOUBLE_EQ(ClassificationScore("Location or Entity", "Entity", classes), 0.5);
  EXPECT_DOUBLE_EQ(ClassificationScore("Description", "Entity", classes), 0.0);
  // The original's remove-while-iterating: matches [Num, Nu, Number]; "Num" (in the truth,
  // not equal) is removed, which skips "Nu"; [Nu, Number] remain: 1/2.
  EXPECT_DOUBLE_EQ(ClassificationScore("Number", "Number", {"Num", "Nu", "Number"}), 0.5);
}

TEST(LongBenchMetricsTest, RetrievalAndCount) {
  EXPECT_DOUBLE_EQ(RetrievalScore("Paragraph 3", "Paragraph 3"), 1.0);
  // Numbers ["3", "13"], one equal to 3.
  EXPECT_DOUBLE_EQ(RetrievalScore("Paragraph 3 or Paragraph 13", "Paragraph 3"), 0.5);
  EXPECT_DOUBLE_EQ(RetrievalScore("no idea", "Paragraph 3"), 0.0);
  EXPECT_DOUBLE_EQ(RetrievalScore("Paragraph 03", "Paragraph 3"), 0.0);  // string comparison
  EXPECT_DOUBLE_EQ(RetrievalZhScore("段落27", "段落27"), 1.0);
  EXPECT_DOUBLE_EQ(RetrievalZhScore("段落2", "段落27"), 0.0);
  // ["14", "15"], one right.
  EXPECT_DOUBLE_EQ(CountScore("There are 14 unique paragraphs, not 15", "14"), 0.5);
  EXPECT_DOUBLE_EQ(CountScore("fourteen", "14"), 0.0);
}

TEST(LongBenchMetricsTest, FuzzRatio) {
  // python-Levenshtein ratio = 2 * LCS / (|a| + |b|).
  // "kitten"/"sitting": LCS "ittn" = 4, 8/13 = 0.615 → 62.
  EXPECT_EQ(FuzzRatio("kitten", "sitting"), 62);
  // fuzzywuzzy's README example: 28/29 = 0.9655 → 97.
  EXPECT_EQ(FuzzRatio("this is a test", "this is a test!"), 97);
  // Half to even: LCS 1 of 16 characters → 12.5 → 12; LCS 3 → 37.5 → 38.
  EXPECT_EQ(FuzzRatio("abcdefgh", "aijklmno"), 12);
  EXPECT_EQ(FuzzRatio("abcdefgh", "abcijklm"), 38);
  EXPECT_EQ(FuzzRatio("", ""), 100);
  EXPECT_EQ(FuzzRatio("a", ""), 0);
  // Code points, not bytes: "é" vs "e" share nothing (0), "éa" vs "a" share "a": 2/3 → 67.
  EXPECT_EQ(FuzzRatio("\xC3\xA9"
                      "a",
                      "a"),
            67);
}

TEST(LongBenchMetricsTest, CodeSimTakesFirstLineWithoutCommentsOrFences) {
  EXPECT_DOUBLE_EQ(CodeSimScore("\n```python\n# set x\nx = foo(1)\ny = 2", "x = foo(1)"), 1.0);
  EXPECT_DOUBLE_EQ(CodeSimScore("// c\nkitten", "sitting"), 0.62);
  EXPECT_DOUBLE_EQ(CodeSimScore("# only comments", "x"), 0.0);
}

TEST(LongBenchMetricsTest, SampleScoreCutsFewShotTasksToFirstLineAndTakesBestAnswer) {
  auto metric = MetricForTask("trec");
  ASSERT_TRUE(metric.ok());
  EXPECT_EQ(*metric, LongBenchMetric::kClassification);
  // First line after leading newlines: "Location".
  EXPECT_DOUBLE_EQ(ScoreLongBenchSample("trec", *metric, "\n\nLocation\nEntity", {"Location"},
                                        {"Location", "Entity"}),
                   1.0);
  // Not cut for qasper: the second line counts.
  auto qa = MetricForTask("qasper");
  ASSERT_TRUE(qa.ok());
  EXPECT_DOUBLE_EQ(ScoreLongBenchSample("qasper", *qa, "yes\nno", {"no"}, {}), 2.0 * 0.5 / 1.5);
  // Best over answers.
  EXPECT_DOUBLE_EQ(ScoreLongBenchSample("qasper", *qa, "blue", {"red", "blue"}, {}), 1.0);
  EXPECT_FALSE(MetricForTask("no_such_task").ok());
  EXPECT_EQ(*MetricForTask("multifieldqa_zh"), LongBenchMetric::kQaF1Zh);
  EXPECT_EQ(*MetricForTask("passage_retrieval_zh"), LongBenchMetric::kRetrievalZh);
  EXPECT_EQ(*MetricForTask("multi_news"), LongBenchMetric::kRougeL);
  EXPECT_EQ(*MetricForTask("repobench-p"), LongBenchMetric::kCodeSim);
}

}  // namespace
}  // namespace funnel
