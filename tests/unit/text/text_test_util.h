// Helpers shared by the text tests: loading tokenizers from shared data, random UTF-8 text.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "gtest/gtest.h"
#include "runtime/model/gguf_file.h"
#include "runtime/text/tokenizer.h"
#include "tests/testing/test_data.h"

namespace funnel::testing {

// Loads the tokenizer of a shared-data GGUF; fails the test (and returns null) on error.
inline std::unique_ptr<Tokenizer> LoadTokenizer(std::string_view relative) {
  auto gguf = GgufFile::Open(SharedDataPath(relative));
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  if (!gguf.ok()) return nullptr;
  auto tok = Tokenizer::FromGguf(**gguf);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

inline void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A random valid UTF-8 string of `n` code points: ASCII words, runs of spaces, control
// characters, accents, combining marks, Cyrillic, CJK, emoji with ZWJ / variation selectors,
// and arbitrary scalar values. Never U+2581, which SentencePiece cannot round-trip.
inline std::string RandomUtf8(std::mt19937& rng, int n) {
  auto pick = [&](uint32_t lo, uint32_t hi) {
    return std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
  };
  std::string out;
  for (int i = 0; i < n; ++i) {
    uint32_t cp = 0;
    switch (pick(0, 11)) {
      case 0:
      case 1:
      case 2:
        cp = pick('a', 'z');
        break;
      case 3:
        cp = ' ';
        break;
      case 4:
        cp = pick(0, 0x1F);
        break;
      case 5:
        cp = pick(0x20, 0x7E);
        break;
      case 6:
        cp = pick(0xA0, 0x17F);
        break;
      case 7:
        cp = pick(0x300, 0x36F);
        break;
      case 8:
        cp = pick(0x400, 0x4FF);
        break;
      case 9:
        cp = pick(0x4E00, 0x9FFF);
        break;
      case 10:
        cp = pick(0, 3) == 0 ? (pick(0, 1) ? 0x200D : 0xFE0F) : pick(0x1F300, 0x1FAFF);
        break;
      default:
        cp = pick(0x80, 0x10FFFF);
        break;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
    if (cp == 0x2581) cp = '_';
    AppendUtf8(cp, out);
  }
  return out;
}

// Printable form of arbitrary bytes for failure messages.
inline std::string Escape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  return out;
}

// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or values above U+10FFFF).
inline bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      n = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
      cp = c & 0x07;
    } else
      return false;
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

}  // namespace funnel::testing
