#include "client/longbench_metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace funnel {
namespace {

// ---- UTF-8 <-> code points -------------------------------------------------------------

// Invalid bytes become U+FFFD (as Python's errors="replace" would).
std::u32string Decode(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      ok = (d >> 6) == 2;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

std::string Encode(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

// ---- Python character classes --------------------------------------------------------------

// str.split() separators.
bool IsSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// string.punctuation
bool IsAsciiPunct(char32_t c) {
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
         (c >= 0x7B && c <= 0x7E);
}

// metrics.py's cn_punctuation.
bool IsZhPunct(char32_t c) {
  static const std::u32string kZh = Decode(
      "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔"
      "〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—"
      "‘’‛“”„‟…‧﹏.");
  return kZh.find(c) != std::u32string::npos;
}

// \w: ASCII letters, digits, '_', and non-ASCII code points other than spaces and symbols.
bool IsWordChar(char32_t c) {
  if (c < 0x80)
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (IsSpace(c) || IsZhPunct(c)) return false;
  if (c >= 0xA1 && c <= 0xBF) {
    return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA ||
           (c >= 0xBC && c <= 0xBE);
  }
  if (c == 0xD7 || c == 0xF7) return false;
  if (c >= 0x2000 && c <= 0x206F) return false;  // general punctuation
  if (c >= 0x3000 && c <= 0x303F) return false;  // CJK symbols and punctuation
  if (c >= 0xFF01 && c <= 0xFF0F) return false;  // fullwidth punctuation
  if ((c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) ||
      (c >= 0xFF5B && c <= 0xFF65)) {
    return false;
  }
  return true;
}

char32_t Lower(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7)) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x138 && c != 0x149 && c != 0x17F) {
    // Latin Extended-A pairs: upper case at even code points, except the 0x139-0x148 and
    // 0x179-0x17E runs, where it is at odd ones.
    const bool odd_upper = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
    if (odd_upper ? (c % 2 == 1) : (c % 2 == 0)) return c + 1;
    return c;
  }
  if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 32;  // Greek
  if (c >= 0x410 && c <= 0x42F) return c + 32;                // Cyrillic
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  return c;
}

std::u32string LowerAll(std::u32string s) {
  for (char32_t& c : s) c = Lower(c);
  return s;
}

// str.split() with no argument.
std::vector<std::u32string> SplitWhitespace(const std::u32string& s) {
  std::vector<std::u32string> out;
  std::u32string cur;
  for (char32_t c : s) {
    if (IsSpace(c)) {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// str.split(sep) with a one-character separator (empty pieces kept).
std::vector<std::u32string> SplitOn(const std::u32string& s, char32_t sep) {
  std::vector<std::u32string> out(1);
  for (char32_t c : s) {
    if (c == sep) {
      out.emplace_back();
    } else {
      out.back().push_back(c);
    }
  }
  return out;
}

std::u32string JoinWith(const std::vector<std::u32string>& parts, char32_t sep) {
  std::u32string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out.push_back(sep);
    out += parts[i];
  }
  return out;
}

// ---- metrics.py pieces ---------------------------------------------------------------------

std::u32string NormalizeAnswer32(const std::u32string& s) {
  std::u32string text;
  for (char32_t c : LowerAll(s)) {
    if (!IsAsciiPunct(c)) text.push_back(c);
  }
  // re.sub(r"\b(a|an|the)\b", " ", text): a match is always a whole run of word characters.
  std::u32string no_articles;
  size_t i = 0;
  while (i < text.size()) {
    if (!IsWordChar(text[i])) {
      no_articles.push_back(text[i++]);
      continue;
    }
    size_t j = i;
    while (j < text.size() && IsWordChar(text[j])) ++j;
    const std::u32string word = text.substr(i, j - i);
    no_articles += (word == U"a" || word == U"an" || word == U"the") ? U" " : word;
    i = j;
  }
  return JoinWith(SplitWhitespace(no_articles), U' ');
}

std::u32string NormalizeZhAnswer32(const std::u32string& s) {
  std::u32string out;
  for (char32_t c : LowerAll(s)) {
    if (!IsAsciiPunct(c) && !IsZhPunct(c) && !IsSpace(c)) out.push_back(c);
  }
  return out;
}

// f1_score over token lists (Counter intersection).
double F1(const std::vector<std::u32string>& prediction, const std::vector<std::u32string>& truth) {
  std::map<std::u32string, int> counts;
  for (const auto& t : truth) ++counts[t];
  int same = 0;
  for (const auto& p : prediction) {
    auto it = counts.find(p);
    if (it != counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = 1.0 * same / static_cast<double>(prediction.size());
  const double recall = 1.0 * same / static_cast<double>(truth.size());
  return (2 * precision * recall) / (precision + recall);
}

// Rouge._get_scores: split at '.', keep non-empty pieces, collapse their whitespace.
std::vector<std::u32string> RougeSentences(const std::u32string& text) {
  std::vector<std::u32string> out;
  for (const auto& piece : SplitOn(text, U'.')) {
    if (!piece.empty()) out.push_back(JoinWith(SplitWhitespace(piece), U' '));
  }
  return out;
}

// The words of rouge_score._recon_lcs(x, y) (the LCS the original's backtracking picks).
void AddLcsWords(const std::vector<std::u32string>& x, const std::vector<std::u32string>& y,
                 std::set<std::u32string>& words) {
  const size_t n = x.size(), m = y.size();
  std::vector<int> table((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> int& { return table[i * (m + 1) + j]; };
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      at(i, j) = x[i - 1] == y[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
    }
  }
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      words.insert(x[i - 1]);
      --i;
      --j;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      --i;
    } else {
      --j;
    }
  }
}

double RougeL32(const std::u32string& prediction, const std::u32string& truth) {
  const std::vector<std::u32string> hyp = RougeSentences(prediction);
  const std::vector<std::u32string> ref = RougeSentences(truth);
  if (hyp.empty() || ref.empty()) return 0.0;  // the original raises; the caller scores 0
  std::set<std::u32string> ref_words, hyp_words, lcs_union;
  std::vector<std::vector<std::u32string>> hyp_split;
  for (const auto& s : hyp) {
    hyp_split.push_back(SplitOn(s, U' '));
    hyp_words.insert(hyp_split.back().begin(), hyp_split.back().end());
  }
  for (const auto& r : ref) {
    const std::vector<std::u32string> rw = SplitOn(r, U' ');
    ref_words.insert(rw.begin(), rw.end());
    for (const auto& hw : hyp_split) AddLcsWords(rw, hw, lcs_union);
  }
  const double llcs = static_cast<double>(lcs_union.size());
  const double r = llcs / static_cast<double>(ref_words.size());
  const double p = llcs / static_cast<double>(hyp_words.size());
  return 2.0 * ((p * r) / (p + r + 1e-8));
}

// Space-joined single characters (stands in for " ".join(jieba.cut(text))).
std::u32string CharSegmented(const std::string& text) {
  std::u32string s = Decode(text), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0) out.push_back(U' ');
    out.push_back(s[i]);
  }
  return out;
}

// re.findall(r"\d+", text)
std::vector<std::string> DigitRuns(const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] < '0' || text[i] > '9') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    out.push_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

// Share of the digit runs of `prediction` equal to `id` (0 when there is none).
double ShareEqual(const std::string& prediction, const std::string& id) {
  const std::vector<std::string> numbers = DigitRuns(prediction);
  if (numbers.empty()) return 0.0;
  const auto right = std::count(numbers.begin(), numbers.end(), id);
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

// The digits after the first `prefix` that is followed by a digit (re `prefix(\d+)`); "" if none.
std::string FirstNumberAfter(const std::string& text, const std::string& prefix) {
  for (size_t at = text.find(prefix); at != std::string::npos; at = text.find(prefix, at + 1)) {
    size_t j = at + prefix.size();
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    if (j > at + prefix.size()) return text.substr(at + prefix.size(), j - at - prefix.size());
  }
  return "";
}

double RetrievalWith(const std::string& prediction, const std::string& truth,
                     const std::string& prefix) {
  const std::string id = FirstNumberAfter(truth, prefix);
  if (id.empty()) return 0.0;  // the original raises IndexError
  return ShareEqual(prediction, id);
}

}  // namespace

std::string NormalizeAnswer(const std::string& s) { return Encode(NormalizeAnswer32(Decode(s))); }
std::string NormalizeZhAnswer(const std::string& s) {
  return Encode(NormalizeZhAnswer32(Decode(s)));
}

double QaF1Score(const std::string& prediction, const std::string& ground_truth) {
  return F1(SplitWhitespace(NormalizeAnswer32(Decode(prediction))),
            SplitWhitespace(NormalizeAnswer32(Decode(ground_truth))));
}

double QaF1ZhScore(const std::string& prediction, const std::string& ground_truth) {
  auto tokens = [](const std::string& text) {
    std::vector<std::u32string> out;
    for (char32_t c : Decode(text)) {
      std::u32string t = NormalizeZhAnswer32(std::u32string(1, c));
      if (!t.empty()) out.push_back(std::move(t));
    }
    return out;
  };
  return F1(tokens(prediction), tokens(ground_truth));
}

double RougeLScore(const std::string& prediction, const std::string& ground_truth) {
  return RougeL32(Decode(prediction), Decode(ground_truth));
}

double RougeZhScore(const std::string& prediction, const std::string& ground_truth) {
  return RougeL32(CharSegmented(prediction), CharSegmented(ground_truth));
}

double ClassificationScore(const std::string& prediction, const std::string& ground_truth,
                           const std::vector<std::string>& all_classes) {
  std::vector<std::string> matches;
  for (const auto& c : all_classes) {
    if (prediction.find(c) != std::string::npos) matches.push_back(c);
  }
  // The original removes from the list it iterates over, so the element after each removed
  // one is skipped; reproduced here.
  for (size_t i = 0; i < matches.size(); ++i) {
    const std::string term = matches[i];
    if (ground_truth.find(term) != std::string::npos && term != ground_truth) {
      matches.erase(std::find(matches.begin(), matches.end(), term));
    }
  }
  if (std::find(matches.begin(), matches.end(), ground_truth) == matches.end()) return 0.0;
  return 1.0 / static_cast<double>(matches.size());
}

double RetrievalScore(const std::string& prediction, const std::string& ground_truth) {
  return RetrievalWith(prediction, ground_truth, "Paragraph ");
}

double RetrievalZhScore(const std::string& prediction, const std::string& ground_truth) {
  return RetrievalWith(prediction, ground_truth, "段落");
}

double CountScore(const std::string& prediction, const std::string& ground_truth) {
  return ShareEqual(prediction, ground_truth);
}

int FuzzRatio(const std::string& a, const std::string& b) {
  if (a == b) return 100;
  const std::u32string x = Decode(a), y = Decode(b);
  if (x.empty() || y.empty()) return 0;
  std::vector<int> prev(y.size() + 1, 0), cur(y.size() + 1, 0);
  for (size_t i = 1; i <= x.size(); ++i) {
    for (size_t j = 1; j <= y.size(); ++j) {
      cur[j] = x[i - 1] == y[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  const int lcs = prev[y.size()];
  const int lensum = static_cast<int>(x.size() + y.size());
  const int distance = lensum - 2 * lcs;  // Levenshtein with substitutions costing 2
  const double ratio = static_cast<double>(lensum - distance) / lensum;
  return static_cast<int>(std::nearbyint(100.0 * ratio));  // round half to even, as Python
}

double CodeSimScore(const std::string& prediction, const std::string& ground_truth) {
  const size_t start = prediction.find_first_not_of('\n');
  const std::string rest = start == std::string::npos ? "" : prediction.substr(start);
  std::string line;
  size_t pos = 0;
  while (true) {
    const size_t end = rest.find('\n', pos);
    const std::string candidate =
        rest.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    if (candidate.find('`') == std::string::npos && candidate.find('#') == std::string::npos &&
        candidate.find("//") == std::string::npos) {
      line = candidate;
      break;
    }
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return FuzzRatio(line, ground_truth) / 100.0;
}

absl::StatusOr<LongBenchMetric> MetricForTask(const std::string& task) {
  static const std::map<std::string, LongBenchMetric> kMetrics = {
      {"narrativeqa", LongBenchMetric::kQaF1},
      {"qasper", LongBenchMetric::kQaF1},
      {"multifieldqa_en", LongBenchMetric::kQaF1},
      {"multifieldqa_zh", LongBenchMetric::kQaF1Zh},
      {"hotpotqa", LongBenchMetric::kQaF1},
      {"2wikimqa", LongBenchMetric::kQaF1},
      {"musique", LongBenchMetric::kQaF1},
      {"dureader", LongBenchMetric::kRougeZh},
      {"gov_report", LongBenchMetric::kRougeL},
      {"qmsum", LongBenchMetric::kRougeL},
      {"multi_news", LongBenchMetric::kRougeL},
      {"vcsum", LongBenchMetric::kRougeZh},
      {"trec", LongBenchMetric::kClassification},
      {"triviaqa", LongBenchMetric::kQaF1},
      {"samsum", LongBenchMetric::kRougeL},
      {"lsht", LongBenchMetric::kClassification},
      {"passage_retrieval_en", LongBenchMetric::kRetrieval},
      {"passage_count", LongBenchMetric::kCount},
      {"passage_retrieval_zh", LongBenchMetric::kRetrievalZh},
      {"lcc", LongBenchMetric::kCodeSim},
      {"repobench-p", LongBenchMetric::kCodeSim},
  };
  auto it = kMetrics.find(task);
  if (it == kMetrics.end()) {
    std::string known;
    for (const auto& [name, metric] : kMetrics)
      absl::StrAppend(&known, known.empty() ? "" : ", ", name);
    return absl::InvalidArgumentError(
        absl::StrCat("unknown LongBench task '", task, "' (known: ", known, ")"));
  }
  return it->second;
}

const char* LongBenchMetricName(LongBenchMetric metric) {
  switch (metric) {
    case LongBenchMetric::kQaF1:
      return "qa_f1_score";
    case LongBenchMetric::kQaF1Zh:
      return "qa_f1_zh_score";
    case LongBenchMetric::kRougeL:
      return "rouge_score";
    case LongBenchMetric::kRougeZh:
      return "rouge_zh_score";
    case LongBenchMetric::kClassification:
      return "classification_score";
    case LongBenchMetric::kRetrieval:
      return "retrieval_score";
    case LongBenchMetric::kRetrievalZh:
      return "retrieval_zh_score";
    case LongBenchMetric::kCount:
      return "count_score";
    case LongBenchMetric::kCodeSim:
      return "code_sim_score";
  }
  return "?";
}

double ScoreMetric(LongBenchMetric metric, const std::string& prediction,
                   const std::string& ground_truth, const std::vector<std::string>& all_classes) {
  switch (metric) {
    case LongBenchMetric::kQaF1:
      return QaF1Score(prediction, ground_truth);
    case LongBenchMetric::kQaF1Zh:
      return QaF1ZhScore(prediction, ground_truth);
    case LongBenchMetric::kRougeL:
      return RougeLScore(prediction, ground_truth);
    case LongBenchMetric::kRougeZh:
      return RougeZhScore(prediction, ground_truth);
    case LongBenchMetric::kClassification:
      return ClassificationScore(prediction, ground_truth, all_classes);
    case LongBenchMetric::kRetrieval:
      return RetrievalScore(prediction, ground_truth);
    case LongBenchMetric::kRetrievalZh:
      return RetrievalZhScore(prediction, ground_truth);
    case LongBenchMetric::kCount:
      return CountScore(prediction, ground_truth);
    case LongBenchMetric::kCodeSim:
      return CodeSimScore(prediction, ground_truth);
  }
  return 0.0;
}

double ScoreLongBenchSample(const std::string& task, LongBenchMetric metric,
                            const std::string& prediction, const std::vector<std::string>& answers,
                            const std::vector<std::string>& all_classes) {
  std::string pred = prediction;
  if (task == "trec" || task == "triviaqa" || task == "samsum" || task == "lsht") {
    const size_t start = pred.find_first_not_of('\n');
    pred = start == std::string::npos ? "" : pred.substr(start);
    pred = pred.substr(0, pred.find('\n'));
  }
  double best = 0.0;
  for (const auto& truth : answers)
    best = std::max(best, ScoreMetric(metric, pred, truth, all_classes));
  return best;
}

}  // namespace funnel
