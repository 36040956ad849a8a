#include "runtime/sample/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace funnel {
namespace {

bool IsUtf8Continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Length of the longest suffix of `text` that is a proper prefix of `stop`, if longer than
// `at_least`; otherwise `at_least`.
size_t LongestPartialMatch(std::string_view text, std::string_view stop, size_t at_least) {
  const size_t longest = std::min(text.size(), stop.size() - 1);
  for (size_t len = longest; len > at_least; --len) {
    if (text.substr(text.size() - len) == stop.substr(0, len)) return len;
  }
  return at_least;
}

}  // namespace

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& stop) { return stop.empty(); });
}

StopStringMatcher::Result StopStringMatcher::Push(std::string_view text) {
  if (stopped_) return {"", true};
  pending_.append(text);
  if (const std::optional<size_t> start = FindStop()) {
    stopped_ = true;
    Result result{pending_.substr(0, *start), true};
    pending_.clear();
    return result;
  }
  const size_t hold_start = HoldBackStart();
  Result result{pending_.substr(0, hold_start), false};
  pending_.erase(0, hold_start);
  return result;
}

std::string StopStringMatcher::Flush() {
  if (stopped_) return "";
  return std::exchange(pending_, {});
}

std::optional<size_t> StopStringMatcher::FindStop() const {
  std::optional<size_t> best_start;
  size_t best_end = 0;
  for (const std::string& stop : stops_) {
    const size_t start = pending_.find(stop);
    if (start == std::string::npos) continue;
    const size_t end = start + stop.size();
    if (!best_start || end < best_end || (end == best_end && start < *best_start)) {
      best_start = start;
      best_end = end;
    }
  }
  return best_start;
}

size_t StopStringMatcher::HoldBackStart() const {
  size_t held = 0;
  for (const std::string& stop : stops_) held = LongestPartialMatch(pending_, stop, held);
  size_t start = pending_.size() - held;
  while (start > 0 && start < pending_.size() && IsUtf8Continuation(pending_[start])) --start;
  return start;
}

}  // namespace funnel
