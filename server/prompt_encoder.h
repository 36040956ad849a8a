// Turns a request's input (text, ids or chat messages) into the prompt ids fed to the engine.
//
// - Text: must be valid UTF-8; BOS as the vocabulary asks. Continuations of a session get
//   neither BOS nor the SentencePiece space prefix, so the ids continue the session's text.
// - Ids: fed exactly as given; each must be in the vocabulary.
// - Messages: the request's named chat template, else the server's (--chat-template or the
//   model's own). A model template that is not recognised makes template-less chat requests
//   INVALID_ARGUMENT (the error says how to name one). Messages that render to no tokens at all
//   are INVALID_ARGUMENT, as an empty text prompt is.
//
// Thread rules: immutable after construction; safe to share.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

class PromptEncoder {
 public:
  // `server_template`: the template of chat requests that name none, or why there is none.
  PromptEncoder(const Tokenizer& tokenizer, absl::StatusOr<ChatTemplate> server_template);

  absl::StatusOr<std::vector<int32_t>> EncodeText(const std::string& text, bool continuation) const;
  absl::StatusOr<std::vector<int32_t>> CheckIds(std::span<const int32_t> ids) const;
  // `template_name` empty: the server's template. The generation prompt (the assistant turn's
  // opening) is added unless `add_generation_prompt` is false (session contexts).
  absl::StatusOr<std::vector<int32_t>> EncodeMessages(const std::vector<ChatMessage>& messages,
                                                      const std::string& template_name,
                                                      bool continuation,
                                                      bool add_generation_prompt) const;

  // The server template's name, or "" when the model's is not recognised.
  std::string server_template_name() const;
  const Tokenizer& tokenizer() const { return tokenizer_; }

 private:
  const Tokenizer& tokenizer_;
  absl::StatusOr<ChatTemplate> server_template_;
  std::vector<ChatTemplate> named_;  // one per kind, bound to tokenizer_
};

}  // namespace funnel
