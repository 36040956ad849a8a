#include "client/niah_haystack.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "runtime/text/tokenizer.h"

namespace funnel {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::vector<std::string>> ListFiles(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> in_dir;
      for (const auto& e : fs::directory_iterator(p, ec)) {
        if (e.is_regular_file() && e.path().extension() == ".txt")
          in_dir.push_back(e.path().string());
      }
      if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot list haystack folder ", p));
      std::sort(in_dir.begin(), in_dir.end());
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else if (fs::is_regular_file(p, ec)) {
      files.push_back(p);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("haystack path not found: ", p));
    }
  }
  return files;
}

std::string CollapseWhitespace(const std::string& text) {
  return absl::StrJoin(absl::StrSplit(text, absl::ByAnyChar(" \t\n\r\f\v"), absl::SkipEmpty()),
                       " ");
}

std::string LowerAscii(std::string s) {
  absl::AsciiStrToLower(&s);
  return s;
}

}  // namespace

absl::StatusOr<std::string> LoadHaystack(const std::vector<std::string>& paths, int skip_files,
                                         bool collapse_whitespace) {
  absl::StatusOr<std::vector<std::string>> files = ListFiles(paths);
  if (!files.ok()) return files.status();
  if (skip_files < 0 || static_cast<size_t>(skip_files) >= files->size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the haystack has ", files->size(), " files; cannot skip ", skip_files));
  }
  std::string text;
  for (size_t i = static_cast<size_t>(skip_files); i < files->size(); ++i) {
    std::ifstream in((*files)[i], std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", (*files)[i]));
    std::stringstream buf;
    buf << in.rdbuf();
    if (collapse_whitespace) {
      const std::string doc = CollapseWhitespace(buf.str());
      if (doc.empty()) continue;
      if (!text.empty()) text += " ";
      text += doc;
    } else {
      text += buf.str();
    }
  }
  if (text.empty()) return absl::InvalidArgumentError("the haystack is empty");
  return text;
}

NeedleContext InsertNeedle(std::span<const int32_t> haystack, std::span<const int32_t> needle,
                           int64_t context_tokens, double depth_percent,
                           const std::function<bool(int32_t)>& is_period) {
  const int64_t keep = std::max<int64_t>(context_tokens - static_cast<int64_t>(needle.size()), 0);
  std::vector<int32_t> context;
  context.reserve(static_cast<size_t>(keep) + needle.size());
  while (static_cast<int64_t>(context.size()) < keep && !haystack.empty()) {
    const size_t n = std::min(haystack.size(), static_cast<size_t>(keep) - context.size());
    context.insert(context.end(), haystack.begin(),
                   haystack.begin() + static_cast<std::ptrdiff_t>(n));
  }
  NeedleContext out;
  int64_t at = static_cast<int64_t>(context.size());
  if (depth_percent < 100.0) {
    at = static_cast<int64_t>(static_cast<double>(context.size()) * (depth_percent / 100.0));
    while (at > 0 && !is_period(context[static_cast<size_t>(at - 1)])) --at;
  }
  out.needle_start = at;
  out.ids.assign(context.begin(), context.begin() + at);
  out.ids.insert(out.ids.end(), needle.begin(), needle.end());
  out.ids.insert(out.ids.end(), context.begin() + at, context.end());
  return out;
}

bool IsPeriodToken(const Tokenizer& tokenizer, int32_t id) {
  return absl::StripAsciiWhitespace(tokenizer.TokenToPiece(id)) == ".";
}

double WordOverlapScore(const std::string& response, const std::string& answer) {
  const std::vector<std::string> answer_words =
      absl::StrSplit(LowerAscii(answer), absl::ByAnyChar(" \t\n\r\f\v"), absl::SkipEmpty());
  const std::set<std::string> expected(answer_words.begin(), answer_words.end());
  if (expected.empty()) return 0.0;
  const std::vector<std::string> got_words =
      absl::StrSplit(LowerAscii(response), absl::ByAnyChar(" \t\n\r\f\v"), absl::SkipEmpty());
  const std::set<std::string> got(got_words.begin(), got_words.end());
  int64_t common = 0;
  for (const auto& w : expected) common += got.contains(w) ? 1 : 0;
  return static_cast<double>(common) / static_cast<double>(expected.size());
}

std::string CutAfterStop(const std::string& response, const std::string& stop) {
  if (stop.empty()) return response;
  const size_t at = response.find(stop);
  return at == std::string::npos ? response : response.substr(0, at + stop.size());
}

bool ExactAnswerMatch(const std::string& response, const std::string& answer,
                      const std::string& stop) {
  const std::string got(absl::StripLeadingAsciiWhitespace(CutAfterStop(response, stop)));
  const std::string want(absl::StripLeadingAsciiWhitespace(answer));
  return !want.empty() && got == want;
}

bool ContainsAnswer(const std::string& response, const std::string& answer) {
  const std::string want = LowerAscii(std::string(absl::StripAsciiWhitespace(answer)));
  return !want.empty() && LowerAscii(response).find(want) != std::string::npos;
}

}  // namespace funnel
