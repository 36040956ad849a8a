// Finds stop strings in streamed text, holding back text that might start one.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace funnel {

// Generation stops at the first stop string to *complete* in the concatenated stream (earliest
// end; among stop strings ending at the same byte, the longest). The result depends only on the
// concatenated text, not on how it was split into Push calls.
//
// Text is held back exactly while a suffix of it is a proper prefix of some stop string,
// widened to a UTF-8 character boundary: given complete UTF-8 chunks, every emit is complete
// UTF-8.
class StopStringMatcher {
 public:
  // Empty stop strings are ignored.
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string emit;
    bool stopped = false;
  };

  // `emit` = text safe to show now. When a stop string completes, `emit` = the text before it,
  // `stopped` = true (the stop string itself is not emitted), and later calls return {"", true}.
  Result Push(std::string_view text);

  // Releases held-back text at the end of generation; "" once stopped.
  std::string Flush();

 private:
  // Start of the first-completing stop string in pending_, if any.
  std::optional<size_t> FindStop() const;
  // Start of the text to hold back: the longest suffix of pending_ that is a proper prefix of a
  // stop string, moved back to a character boundary.
  size_t HoldBackStart() const;

  std::vector<std::string> stops_;
  std::string pending_;  // Received but not yet emitted.
  bool stopped_ = false;
};

}  // namespace funnel
