#include "server/prompt_encoder.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace funnel {

PromptEncoder::PromptEncoder(const Tokenizer& tokenizer,
                             absl::StatusOr<ChatTemplate> server_template)
    : tokenizer_(tokenizer), server_template_(std::move(server_template)) {
  for (ChatTemplateKind kind :
       {ChatTemplateKind::kPlain, ChatTemplateKind::kLlama2, ChatTemplateKind::kLlama3,
        ChatTemplateKind::kChatMl, ChatTemplateKind::kZephyr, ChatTemplateKind::kMistral,
        ChatTemplateKind::kMistralV1, ChatTemplateKind::kMistralV2, ChatTemplateKind::kMistralV3,
        ChatTemplateKind::kMistralV7}) {
    named_.emplace_back(kind, tokenizer_);
  }
}

absl::StatusOr<std::vector<int32_t>> PromptEncoder::EncodeText(const std::string& text,
                                                               bool continuation) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("prompt is not valid UTF-8");
  EncodeOptions options;  // BOS / EOS as the vocabulary asks
  if (continuation) {
    options = EncodeOptions{.add_bos = false, .add_space_prefix = false, .add_eos = false};
  }
  std::vector<int32_t> ids = tokenizer_.Encode(text, options);
  if (ids.empty()) return absl::InvalidArgumentError("prompt is empty");
  return ids;
}

absl::StatusOr<std::vector<int32_t>> PromptEncoder::CheckIds(std::span<const int32_t> ids) const {
  if (ids.empty()) return absl::InvalidArgumentError("prompt_ids is empty");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= tokenizer_.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt_ids[", i, "] = ", ids[i],
                                                     " is outside the vocabulary [0, ",
                                                     tokenizer_.vocab_size(), ")"));
    }
  }
  return std::vector<int32_t>(ids.begin(), ids.end());
}

absl::StatusOr<std::vector<int32_t>> PromptEncoder::EncodeMessages(
    const std::vector<ChatMessage>& messages, const std::string& template_name, bool continuation,
    bool add_generation_prompt) const {
  const ChatTemplate* tmpl = nullptr;
  if (template_name.empty()) {
    if (!server_template_.ok()) return server_template_.status();
    tmpl = &*server_template_;
  } else {
    auto kind = ChatTemplate::KindFromName(template_name);
    if (!kind.ok()) return kind.status();
    for (const ChatTemplate& t : named_) {
      if (t.kind() == *kind) tmpl = &t;
    }
  }
  ChatTemplateOptions options;
  options.add_bos = !continuation;
  options.add_generation_prompt = add_generation_prompt;
  absl::StatusOr<std::vector<int32_t>> ids = tmpl->Apply(messages, options);
  // E.g. llama2 renders a system message only before a user message, and a continuation has
  // no BOS: the same refusal as an empty text prompt.
  if (ids.ok() && ids->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages give an empty prompt under the ", tmpl->name(),
                     " chat template (a system message needs a user message after it)"));
  }
  return ids;
}

std::string PromptEncoder::server_template_name() const {
  return server_template_.ok() ? server_template_->name() : "";
}

}  // namespace funnel
