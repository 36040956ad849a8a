// Streaming decode for generation: ids go in one at a time, complete UTF-8 text comes out.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/text/tokenizer.h"

namespace funnel {

// Feeds ids one at a time and returns only complete UTF-8 text, never half a character: bytes of
// a character split over several byte-fallback tokens are held back until it completes. Bytes
// that can never become valid UTF-8 are replaced by U+FFFD (one per maximal invalid subpart) as
// soon as that is certain, and an incomplete tail is replaced at Flush. The concatenation of all
// Push() and Flush() results equals Tokenizer::Decode(all ids) whenever that is valid UTF-8.
//
// The tokenizer must outlive this object. Not thread-safe; one instance per stream.
class IncrementalDetokenizer {
 public:
  // strip_leading_space: apply the prefix rule (drop the leading space of the first piece, when
  // the vocabulary adds one). Pass false when continuing text that has already started.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool strip_leading_space = true);

  // Newly completed text after appending `id`.
  std::string Push(int32_t id);
  // Whatever is left, with an incomplete trailing character as U+FFFD.
  std::string Flush();

 private:
  // Moves the decodable prefix of pending_ to the result; with `final`, all of it.
  std::string Drain(bool final);

  const Tokenizer& tokenizer_;
  bool strip_leading_space_;
  bool at_start_;
  std::string pending_;  // bytes of an incomplete UTF-8 character
};

}  // namespace funnel
