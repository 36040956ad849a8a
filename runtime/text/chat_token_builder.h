// Accumulates a chat prompt as token ids: markers (a template's special tokens, or their text
// when the vocabulary lacks them), text runs, and separately encoded segments. Used by
// ChatTemplate::Apply and the Mistral formats; one builder per Apply call (not thread-safe).
//
// Text is encoded with special-token parsing off, and any id that ChatTemplate::IsProtected says
// message text must not produce (markers, BOS, EOS, control tokens) is broken into smaller pieces,
// so content can never inject a role marker.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/text/tokenizer.h"

namespace funnel {

class ChatTemplate;

class ChatTokenBuilder {
 public:
  // `space_prefix_at_start`: the first text run follows the vocabulary's space-prefix rule.
  ChatTokenBuilder(const ChatTemplate& tmpl, bool space_prefix_at_start);

  // BOS (when the vocabulary has one); the next text run gets the space-prefix rule.
  void Bos();
  // EOS (when the vocabulary has one).
  void Eos();
  // The marker's token, or its text (joining the current text run) when the vocabulary lacks it.
  void Marker(std::string_view marker);
  // Appends to the current text run, encoded as one string when a token interrupts it.
  void Text(std::string_view text);
  // Encodes `text` on its own, with the vocabulary's space-prefix rule, as mistral-common encodes
  // each message part. Empty text adds nothing.
  void Segment(std::string_view text);

  std::vector<int32_t> Finish();

 private:
  void Token(int32_t id);
  void Flush();
  void EncodeGuarded(std::string_view text, bool prefix, int depth);

  const ChatTemplate& tmpl_;
  const Tokenizer& tok_;
  bool prefix_next_;
  std::string pending_;
  std::vector<int32_t> ids_;
};

}  // namespace funnel
