#include "runtime/text/chat_token_builder.h"

#include <algorithm>
#include <utility>

#include "runtime/text/chat_template.h"

namespace funnel {
namespace {

size_t Utf8Length(std::string_view s) {
  const auto lead = static_cast<uint8_t>(s[0]);
  size_t len = 1;
  if (lead >= 0xC0 && lead < 0xE0) len = 2;
  if (lead >= 0xE0 && lead < 0xF0) len = 3;
  if (lead >= 0xF0) len = 4;
  return std::min(len, s.size());
}

}  // namespace

ChatTokenBuilder::ChatTokenBuilder(const ChatTemplate& tmpl, bool space_prefix_at_start)
    : tmpl_(tmpl), tok_(tmpl.tokenizer()), prefix_next_(space_prefix_at_start) {}

void ChatTokenBuilder::Bos() {
  if (tok_.bos_id() < 0) return;
  Token(tok_.bos_id());
  prefix_next_ = true;
}

void ChatTokenBuilder::Eos() {
  if (tok_.eos_id() >= 0) Token(tok_.eos_id());
}

void ChatTokenBuilder::Marker(std::string_view marker) {
  const int32_t id = tmpl_.MarkerId(marker);
  if (id >= 0) {
    Token(id);
  } else {
    Text(marker);
  }
}

void ChatTokenBuilder::Text(std::string_view text) { pending_ += text; }

void ChatTokenBuilder::Segment(std::string_view text) {
  Flush();
  if (!text.empty()) EncodeGuarded(text, /*prefix=*/true, /*depth=*/0);
  prefix_next_ = false;
}

std::vector<int32_t> ChatTokenBuilder::Finish() {
  Flush();
  return std::move(ids_);
}

void ChatTokenBuilder::Token(int32_t id) {
  Flush();
  ids_.push_back(id);
  prefix_next_ = false;
}

void ChatTokenBuilder::Flush() {
  if (pending_.empty()) return;
  EncodeGuarded(pending_, prefix_next_, /*depth=*/0);
  pending_.clear();
  prefix_next_ = false;
}

// Encodes text; a protected id that the text produced (a marker stored as a user-defined or
// normal piece) is replaced by the encoding of its piece split after the first character,
// recursively. Both halves are shorter than `text`, so this ends. An id whose piece is not the
// text that produced it (unk, which stands for an unknown character, or any piece longer than
// the text) is not split but replaced like a one-character marker: by unk, or by nothing when unk
// is itself protected (a vocabulary whose unk is BOS or a control token).
void ChatTokenBuilder::EncodeGuarded(std::string_view text, bool prefix, int depth) {
  EncodeOptions options{.add_bos = false, .add_space_prefix = prefix, .add_eos = false};
  for (int32_t id : tok_.Encode(text, options)) {
    if (!tmpl_.IsProtected(id)) {
      ids_.push_back(id);
      continue;
    }
    const std::string piece = tok_.TokenToPiece(id);
    const size_t first = piece.empty() ? 0 : Utf8Length(piece);
    if (id == tok_.unk_id() || first == 0 || first >= piece.size() || piece.size() > text.size() ||
        depth > 64) {
      const int32_t unk = tok_.unk_id();
      if (unk >= 0 && !tmpl_.IsProtected(unk)) ids_.push_back(unk);
      continue;
    }
    EncodeGuarded(std::string_view(piece).substr(0, first), false, depth + 1);
    EncodeGuarded(std::string_view(piece).substr(first), false, depth + 1);
  }
}

}  // namespace funnel
