// Chat messages → prompt token ids, in the format of a model family.
//
// Role markers are emitted as SPECIAL TOKENS: each marker string ("<|im_start|>",
// "<|start_header_id|>", "[INST]", ...) is looked up as a whole piece in the vocabulary and, when
// present, fed as that id. Markers the vocabulary lacks (e.g. "[INST]" in the Llama 2 vocabulary,
// where it is plain text) are encoded as text, exactly as the model was trained. Message content is
// encoded as text with special-token parsing off (Tokenizer::Encode never parses control tokens),
// and any marker, BOS, EOS or control id that user text would still produce (a marker stored as a
// user-defined or normal piece, which Encode matches) is broken into smaller pieces, so content can
// never inject a role marker.
//
// Formats (S = system, U = user, A = assistant; <x> = the marker token x when the vocabulary has
// it, else the text x; BOS/EOS = the vocabulary's ids):
//   plain    BOS "System: S\nUser: U\nAssistant: A\n" ... "Assistant:"    (models without any
//            template; all text)
//   llama2   BOS "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]" " A " EOS BOS "[INST] U [/INST]"
//   llama3   BOS <|start_header_id|> "role" <|end_header_id|> "\n\ncontent" <|eot_id|> ...
//            <|start_header_id|> "assistant" <|end_header_id|> "\n\n"
//   chatml   BOS <|im_start|> "role\ncontent" <|im_end|> "\n" ... <|im_start|> "assistant\n"
//            (a ChatML template that opens conversations without a system message with a literal
//            one, as Qwen2's does, gets that system message first; Detect only)
//   zephyr   BOS <|system|> "\nS" EOS "\n" <|user|> "\nU" EOS "\n" ... <|assistant|> "\n"
// The leading BOS is emitted when the vocabulary asks for one (add_bos_token) and the options
// allow it; Llama 2's per-turn BOS always. System messages of llama2 are prepended to the
// next user message. Llama 3 content is trimmed of surrounding whitespace, as its template does.
// Text right after BOS (or at the very start) follows the vocabulary's space-prefix rule; text
// after any other token is encoded as is.
//
// Mistral formats reproduce mistral-common's instruct tokenizers token for token (each text
// segment [s] is encoded on its own, with the space-prefix rule, as mistral-common encodes it):
//   mistral-v1  BOS ["[INST] " S "\n\n" U " [/INST]"] [A] EOS ["[INST] U2 [/INST]"] ...
//               (system prompt in the first user message; [INST] is text in the v1 vocabulary)
//   mistral-v3  BOS <[INST]> [U] <[/INST]> [A] EOS ... <[AVAILABLE_TOOLS]> [tools]
//   <[/AVAILABLE_TOOLS]>
//               <[INST]> [S "\n\n" U_last] <[/INST]>   (system prompt in the last user message;
//               tool calls <[TOOL_CALLS]> [json] EOS and results <[TOOL_RESULTS]> [json]
//               <[/TOOL_RESULTS]>)
//   mistral-v2  as v3 without tools; v2's tool JSON (no call ids, results as [{"name",
//               "content"}]) and tool turns before the last user message left out
//   mistral-v7  as v3, but each system message in place: <[SYSTEM_PROMPT]> [S] <[/SYSTEM_PROMPT]>
//               and tool results <[TOOL_RESULTS]> [id] <[TOOL_CONTENT]> [content] <[/TOOL_RESULTS]>
//   mistral     the format of the vocabulary's version: v7 when it has a [SYSTEM_PROMPT] control
//               token, v3 when [INST] is a control token, else v1.
// Consecutive messages of the same role are joined with "\n\n" and assistant content loses
// trailing spaces (v3/v7), as mistral-common's request normalizer does.
//
// Recognition of a model's Jinja template (tokenizer.chat_template in GGUF, chat_template in
// tokenizer_config.json) is by distinctive substrings: "<|im_start|>" → chatml;
// "<|start_header_id|>" + "<|end_header_id|>" → llama3; "<|user|>" + "<|assistant|>" without
// "<|end|>" → zephyr; "[INST]" with "<<SYS>>" → llama2; "[SYSTEM_PROMPT]" → mistral-v7;
// "[INST]" otherwise → mistral (the vocabulary's version). No template at all → plain. Anything
// else is not recognised (InvalidArgument listing the names).
//
// A ChatTemplate is bound to one tokenizer (which must outlive it), immutable, and safe to share
// between threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "runtime/model/gguf_file.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

enum class ChatTemplateKind {
  kPlain,
  kLlama2,
  kLlama3,
  kChatMl,
  kZephyr,
  kMistral,  // the vocabulary's Mistral version (resolved when the template is made)
  kMistralV1,
  kMistralV2,
  kMistralV3,
  kMistralV7,
};

// A function call made by the assistant (Mistral formats; other formats reject them).
struct ChatToolCall {
  std::string id;  // empty or "null": none
  std::string name;
  std::string arguments;  // JSON text, as the OpenAI API carries it
};

struct ChatMessage {
  ChatMessage() = default;
  ChatMessage(std::string role_in, std::string content_in)
      : role(std::move(role_in)), content(std::move(content_in)) {}

  std::string role;  // "system", "user", "assistant" or "tool" (Mistral formats)
  std::string content;
  std::vector<ChatToolCall> tool_calls;  // assistant
  std::string tool_call_id;              // tool: the call this answers
  std::string name;                      // tool: the function's name
};

struct ChatTemplateOptions {
  // Start with BOS (when the vocabulary asks for it); false when the messages continue a session.
  bool add_bos = true;
  // End by opening the assistant's turn.
  bool add_generation_prompt = true;
  // Mistral formats: a JSON array of tool definitions ({"type": "function", "function": {"name",
  // "description", "parameters"}}) offered before the last user message. Empty: none.
  std::string tools_json{};
};

class ChatTemplate {
 public:
  // By name (see ValidNames); InvalidArgument listing the valid names otherwise.
  static absl::StatusOr<ChatTemplate> FromName(std::string_view name, const Tokenizer& tokenizer);
  // From a Jinja template source; empty → plain; InvalidArgument when not recognised.
  static absl::StatusOr<ChatTemplate> Detect(std::string_view jinja, const Tokenizer& tokenizer);
  // From the model's `tokenizer.chat_template` (absent → plain).
  static absl::StatusOr<ChatTemplate> FromGguf(const GgufFile& gguf, const Tokenizer& tokenizer);
  // The kind a Jinja source is recognised as; InvalidArgument when not recognised.
  static absl::StatusOr<ChatTemplateKind> Recognize(std::string_view jinja);
  static absl::StatusOr<ChatTemplateKind> KindFromName(std::string_view name);
  static const char* KindName(ChatTemplateKind kind);
  // "chatml, llama2, llama3, mistral, plain, zephyr, mistral-v1, mistral-v2, mistral-v3,
  // mistral-v7": the family names, then Mistral's versioned formats.
  static std::string ValidNames();

  ChatTemplate(ChatTemplateKind kind, const Tokenizer& tokenizer);

  ChatTemplateKind kind() const { return kind_; }
  const char* name() const { return KindName(kind_); }
  // The format actually rendered: kind(), except kMistral resolved to its version.
  ChatTemplateKind format() const { return format_; }
  // The id fed for a marker string, or -1 when the vocabulary lacks it (it is encoded as text).
  int32_t MarkerId(std::string_view marker) const;
  // Ids that message text must never produce: this format's markers, BOS, EOS/end-of-turn ids and
  // control tokens.
  bool IsProtected(int32_t id) const;
  const Tokenizer& tokenizer() const { return *tokenizer_; }

  // The prompt ids for `messages`. InvalidArgument for no messages, an unknown role, content that
  // is not valid UTF-8, tool messages / tool calls / tools outside the Mistral v3/v7 formats, or
  // tool JSON that does not parse.
  absl::StatusOr<std::vector<int32_t>> Apply(std::span<const ChatMessage> messages,
                                             const ChatTemplateOptions& options = {}) const;

 private:
  ChatTemplateKind kind_;
  ChatTemplateKind format_;
  std::string default_system_;  // chatml: the template's own system prompt (Detect)
  const Tokenizer* tokenizer_;
  absl::flat_hash_map<std::string, int32_t> marker_ids_;  // markers the vocabulary has
  absl::flat_hash_set<int32_t> marker_id_set_;
};

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool IsValidUtf8(std::string_view text);

}  // namespace funnel
