#include "runtime/text/incremental_detokenizer.h"

#include <cstddef>
#include <cstdint>

namespace funnel {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the UTF-8 sequence a lead byte starts, or 0 when it cannot start one.
size_t SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Whether `byte` may follow `lead` as its second byte (excludes overlongs, surrogates and
// code points above U+10FFFF); later continuation bytes only need to be 10xxxxxx.
bool ValidSecondByte(uint8_t lead, uint8_t byte) {
  uint8_t lo = 0x80, hi = 0xBF;
  if (lead == 0xE0) lo = 0xA0;
  if (lead == 0xED) hi = 0x9F;
  if (lead == 0xF0) lo = 0x90;
  if (lead == 0xF4) hi = 0x8F;
  return byte >= lo && byte <= hi;
}

// Number of leading bytes of `s` (starting a sequence of length n) that form a valid prefix.
size_t ValidPrefix(std::string_view s, size_t n) {
  const auto lead = static_cast<uint8_t>(s[0]);
  size_t i = 1;
  for (; i < n && i < s.size(); ++i) {
    const auto b = static_cast<uint8_t>(s[i]);
    const bool ok = i == 1 ? ValidSecondByte(lead, b) : (b & 0xC0) == 0x80;
    if (!ok) break;
  }
  return i;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool strip_leading_space)
    : tokenizer_(tokenizer), strip_leading_space_(strip_leading_space), at_start_(true) {}

std::string IncrementalDetokenizer::Push(int32_t id) {
  const std::string piece = tokenizer_.TokenToPiece(id);
  if (piece.empty()) return "";
  pending_ += (at_start_ && strip_leading_space_) ? tokenizer_.TokenToLeadingPiece(id) : piece;
  at_start_ = false;
  return Drain(/*final=*/false);
}

std::string IncrementalDetokenizer::Flush() { return Drain(/*final=*/true); }

std::string IncrementalDetokenizer::Drain(bool final) {
  std::string out;
  const std::string_view s = pending_;
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = SequenceLength(static_cast<uint8_t>(s[i]));
    if (n == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    const size_t valid = ValidPrefix(s.substr(i), n);
    if (valid == n) {
      out.append(s.substr(i, n));
    } else if (i + valid == s.size() && !final) {
      break;  // may still complete
    } else {
      out += kReplacement;
    }
    i += valid;
  }
  pending_.erase(0, i);
  return out;
}

}  // namespace funnel
