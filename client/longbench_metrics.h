// LongBench v1 metrics, as LongBench's metrics.py / eval.py compute them.
//
// All functions take UTF-8 text and return a score in [0, 1] (the task score is 100 × the mean).
// Deviations from the Python originals (documented in docs/eval.md):
//   - Chinese word segmentation: jieba is not available here, so the *_zh metrics segment into
//     single characters (each Unicode code point is a word).
//   - Lower-casing covers ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic; \d and \w are
//     ASCII digits and letters/digits/underscore plus every non-ASCII code point that is not
//     whitespace or punctuation.
//   - fuzz.ratio is the python-Levenshtein ratio 2·LCS/(|a|+|b|) over code points, rounded to an
//     integer percentage (half to even), as fuzzywuzzy with python-Levenshtein does.
//   - ROUGE-L is the `rouge` package's (pltrdy, 1.0.x) summary-level union LCS with its
//     defaults: sentences split at '.', words split at ' ', word sets (exclusive mode),
//     F = 2PR/(P+R+1e-8); any error in the original (empty hypothesis) scores 0.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace funnel {

// normalize_answer: lower-case, drop ASCII punctuation, drop the words a/an/the, collapse
// whitespace to single spaces.
std::string NormalizeAnswer(const std::string& s);
// normalize_zh_answer: lower-case, drop ASCII and Chinese punctuation, drop all whitespace.
std::string NormalizeZhAnswer(const std::string& s);

double QaF1Score(const std::string& prediction, const std::string& ground_truth);
double QaF1ZhScore(const std::string& prediction, const std::string& ground_truth);
double RougeLScore(const std::string& prediction, const std::string& ground_truth);
double RougeZhScore(const std::string& prediction, const std::string& ground_truth);
double ClassificationScore(const std::string& prediction, const std::string& ground_truth,
                           const std::vector<std::string>& all_classes);
double RetrievalScore(const std::string& prediction, const std::string& ground_truth);
double RetrievalZhScore(const std::string& prediction, const std::string& ground_truth);
double CountScore(const std::string& prediction, const std::string& ground_truth);
double CodeSimScore(const std::string& prediction, const std::string& ground_truth);
// fuzz.ratio(a, b): 0..100 (100 for equal strings, 0 when exactly one is empty).
int FuzzRatio(const std::string& a, const std::string& b);

enum class LongBenchMetric {
  kQaF1,
  kQaF1Zh,
  kRougeL,
  kRougeZh,
  kClassification,
  kRetrieval,
  kRetrievalZh,
  kCount,
  kCodeSim,
};

// eval.py's dataset2metric; InvalidArgument for a task LongBench v1 does not have.
absl::StatusOr<LongBenchMetric> MetricForTask(const std::string& task);
const char* LongBenchMetricName(LongBenchMetric metric);  // "qa_f1_score", ...
double ScoreMetric(LongBenchMetric metric, const std::string& prediction,
                   const std::string& ground_truth, const std::vector<std::string>& all_classes);

// eval.py's per-sample score: for trec, triviaqa, samsum and lsht the prediction is cut to its
// first line (after leading newlines), then the best score over the ground truths.
double ScoreLongBenchSample(const std::string& task, LongBenchMetric metric,
                            const std::string& prediction, const std::vector<std::string>& answers,
                            const std::vector<std::string>& all_classes);

}  // namespace funnel
