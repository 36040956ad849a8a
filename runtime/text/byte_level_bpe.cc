#include "runtime/text/byte_level_bpe.h"

#include <utility>

#include "absl/strings/string_view.h"

namespace funnel {
namespace {

constexpr bool MapsToItself(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

// Code point of each byte in GPT-2's bytes_to_unicode().
constexpr std::array<uint16_t, 256> MakeByteToCodePoint() {
  std::array<uint16_t, 256> map{};
  uint16_t next = 256;
  for (int b = 0; b < 256; ++b) map[b] = MapsToItself(b) ? static_cast<uint16_t>(b) : next++;
  return map;
}

constexpr std::array<uint16_t, 256> kByteToCodePoint = MakeByteToCodePoint();
constexpr size_t kCodePointLimit = 0x144;  // the map's largest code point is U+0143

// Byte of each code point below kCodePointLimit; -1 when none maps there.
constexpr std::array<int16_t, kCodePointLimit> MakeCodePointToByte() {
  std::array<int16_t, kCodePointLimit> inverse{};
  for (auto& v : inverse) v = -1;
  for (int b = 0; b < 256; ++b) inverse[kByteToCodePoint[b]] = static_cast<int16_t>(b);
  return inverse;
}

constexpr std::array<int16_t, kCodePointLimit> kCodePointToByte = MakeCodePointToByte();

void AppendCodePoint(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {  // the map stays below U+0800
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

std::string BytesToByteLevel(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) AppendCodePoint(kByteToCodePoint[static_cast<uint8_t>(c)], out);
  return out;
}

bool ByteLevelToBytes(std::string_view text, std::string& bytes) {
  bytes.clear();
  for (size_t i = 0; i < text.size();) {
    const auto c0 = static_cast<uint8_t>(text[i]);
    uint32_t cp = 0;
    if (c0 < 0x80) {
      cp = c0;
      i += 1;
    } else if ((c0 & 0xE0) == 0xC0 && i + 1 < text.size() &&
               (static_cast<uint8_t>(text[i + 1]) & 0xC0) == 0x80) {
      cp = ((c0 & 0x1Fu) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      return false;
    }
    if (cp >= kCodePointLimit || kCodePointToByte[cp] < 0) return false;
    bytes += static_cast<char>(kCodePointToByte[cp]);
  }
  return true;
}

void ByteLevelBpeEncoder::EncodeWord(std::string_view word, std::vector<int32_t>& symbols) const {
  symbols.clear();
  if (o_.ignore_merges) {
    const auto it = o_.whole_tokens.find(absl::string_view(word.data(), word.size()));
    if (it != o_.whole_tokens.end()) {
      symbols.push_back(it->second);
      return;
    }
  }
  for (char c : word) {
    const int32_t id = o_.byte_ids[static_cast<uint8_t>(c)];
    if (id >= 0) {
      symbols.push_back(id);
    } else if (o_.unk_id >= 0) {
      symbols.push_back(o_.unk_id);
    }
  }
  o_.merges.MergeWord(symbols);
}

void ByteLevelBpeEncoder::Encode(std::string_view text, bool space_prefix,
                                 std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string prefixed;
  if (space_prefix && o_.add_prefix_space && text[0] != ' ') {
    prefixed = " " + std::string(text);
    text = prefixed;
  }
  std::vector<std::string_view> words;
  words.reserve(text.size() / 4 + 1);
  o_.pre_tokenizer->Split(text, words);

  // Ids of each distinct word of this call: (offset, count) into `cached`.
  absl::flat_hash_map<absl::string_view, std::pair<uint32_t, uint32_t>> cache;
  std::vector<int32_t> cached;
  std::vector<int32_t> symbols;
  for (std::string_view word : words) {
    const absl::string_view key(word.data(), word.size());
    auto it = cache.find(key);
    if (it == cache.end()) {
      EncodeWord(word, symbols);
      const auto offset = static_cast<uint32_t>(cached.size());
      cached.insert(cached.end(), symbols.begin(), symbols.end());
      it = cache.emplace(key, std::make_pair(offset, static_cast<uint32_t>(symbols.size()))).first;
    }
    const auto [offset, count] = it->second;
    out.insert(out.end(), cached.begin() + offset, cached.begin() + offset + count);
  }
}

}  // namespace funnel
