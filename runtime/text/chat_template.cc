#include "runtime/text/chat_template.h"

#include <array>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/text/chat_token_builder.h"
#include "runtime/text/mistral_chat_format.h"

namespace funnel {
namespace {

struct KindEntry {
  ChatTemplateKind kind;
  const char* name;
};

// Family names sorted, then Mistral's versioned formats (ValidNames lists them in this order).
constexpr std::array<KindEntry, 10> kKinds = {{
    {ChatTemplateKind::kChatMl, "chatml"},
    {ChatTemplateKind::kLlama2, "llama2"},
    {ChatTemplateKind::kLlama3, "llama3"},
    {ChatTemplateKind::kMistral, "mistral"},
    {ChatTemplateKind::kPlain, "plain"},
    {ChatTemplateKind::kZephyr, "zephyr"},
    {ChatTemplateKind::kMistralV1, "mistral-v1"},
    {ChatTemplateKind::kMistralV2, "mistral-v2"},
    {ChatTemplateKind::kMistralV3, "mistral-v3"},
    {ChatTemplateKind::kMistralV7, "mistral-v7"},
}};

bool IsMistral(ChatTemplateKind kind) {
  return kind == ChatTemplateKind::kMistral || kind == ChatTemplateKind::kMistralV1 ||
         kind == ChatTemplateKind::kMistralV2 || kind == ChatTemplateKind::kMistralV3 ||
         kind == ChatTemplateKind::kMistralV7;
}

// kMistral → the version the vocabulary is made for.
ChatTemplateKind ResolveFormat(ChatTemplateKind kind, const Tokenizer& tok) {
  if (kind != ChatTemplateKind::kMistral) return kind;
  if (tok.IsControl(tok.FindToken("[SYSTEM_PROMPT]"))) return ChatTemplateKind::kMistralV7;
  if (tok.IsControl(tok.FindToken("[INST]"))) return ChatTemplateKind::kMistralV3;
  return ChatTemplateKind::kMistralV1;
}

std::vector<std::string_view> MarkersOf(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kPlain:
      return {};
    case ChatTemplateKind::kLlama2:
      return {"[INST]", "[/INST]"};
    case ChatTemplateKind::kMistral:
    case ChatTemplateKind::kMistralV1:
    case ChatTemplateKind::kMistralV2:
    case ChatTemplateKind::kMistralV3:
    case ChatTemplateKind::kMistralV7:
      return {"[INST]",          "[/INST]",         "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
              "[TOOL_CALLS]",    "[TOOL_RESULTS]",  "[/TOOL_RESULTS]",   "[TOOL_CONTENT]",
              "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"};
    case ChatTemplateKind::kLlama3:
      return {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    case ChatTemplateKind::kChatMl:
      return {"<|im_start|>", "<|im_end|>"};
    case ChatTemplateKind::kZephyr:
      return {"<|system|>", "<|user|>", "<|assistant|>"};
  }
  return {};
}

// absl 20220623 keeps its own string_view (not std::string_view).
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

std::string Capitalized(std::string_view role) {
  std::string out(role);
  if (!out.empty()) out[0] = absl::ascii_toupper(static_cast<unsigned char>(out[0]));
  return out;
}

bool AllValidUtf8(const ChatMessage& m) {
  if (!IsValidUtf8(m.content) || !IsValidUtf8(m.tool_call_id) || !IsValidUtf8(m.name)) return false;
  for (const ChatToolCall& c : m.tool_calls) {
    if (!IsValidUtf8(c.id) || !IsValidUtf8(c.name) || !IsValidUtf8(c.arguments)) return false;
  }
  return true;
}

// `tools`: whether the format takes tool messages and tool calls.
absl::Status ValidateMessages(std::span<const ChatMessage> messages, bool tools) {
  if (messages.empty()) return absl::InvalidArgumentError("messages: at least one is required");
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool tool_role = tools && m.role == "tool";
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && !tool_role) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role: '", m.role,
                                                     "' is not one of system, user, ",
                                                     tools ? "assistant, tool" : "assistant"));
    }
    if (!tools && !m.tool_calls.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "]: tool calls need a Mistral v2+ chat template"));
    }
    if (!AllValidUtf8(m)) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "].content is not valid UTF-8"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<uint8_t>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;  // continuation byte as lead, C0/C1 overlong leads, F5..FF
    }
    if (i + len > text.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;  // overlong
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

namespace {

void RenderPlain(std::span<const ChatMessage> messages, bool gen, ChatTokenBuilder& b) {
  for (const ChatMessage& m : messages) {
    b.Text(absl::StrCat(Capitalized(m.role), ": ", m.content, "\n"));
  }
  if (gen) b.Text("Assistant:");
}

// Llama 2: [INST] turns; the system prompt goes into the next user turn.
void RenderLlama2(std::span<const ChatMessage> messages, ChatTokenBuilder& b) {
  std::string system;
  bool first_turn = true;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      system = system.empty() ? m.content : absl::StrCat(system, "\n\n", m.content);
    } else if (m.role == "assistant") {
      b.Text(absl::StrCat(" ", m.content, " "));
      b.Eos();
    } else {
      if (!first_turn) b.Bos();
      first_turn = false;
      std::string user = m.content;
      if (!system.empty()) {
        user = absl::StrCat("<<SYS>>\n", system, "\n<</SYS>>\n\n", user);
        system.clear();
      }
      b.Marker("[INST]");
      b.Text(absl::StrCat(" ", user, " "));
      b.Marker("[/INST]");
    }
  }
}

void RenderLlama3(std::span<const ChatMessage> messages, bool gen, ChatTokenBuilder& b) {
  auto header = [&b](std::string_view role) {
    b.Marker("<|start_header_id|>");
    b.Text(role);
    b.Marker("<|end_header_id|>");
  };
  for (const ChatMessage& m : messages) {
    header(m.role);
    b.Text(absl::StrCat("\n\n", absl::StripAsciiWhitespace(m.content)));
    b.Marker("<|eot_id|>");
  }
  if (gen) {
    header("assistant");
    b.Text("\n\n");
  }
}

void RenderChatMl(std::span<const ChatMessage> messages, const std::string& default_system,
                  bool gen, ChatTokenBuilder& b) {
  if (!default_system.empty() && messages.front().role != "system") {
    b.Marker("<|im_start|>");
    b.Text(absl::StrCat("system\n", default_system));
    b.Marker("<|im_end|>");
    b.Text("\n");
  }
  for (const ChatMessage& m : messages) {
    b.Marker("<|im_start|>");
    b.Text(absl::StrCat(m.role, "\n", m.content));
    b.Marker("<|im_end|>");
    b.Text("\n");
  }
  if (gen) {
    b.Marker("<|im_start|>");
    b.Text("assistant\n");
  }
}

void RenderZephyr(std::span<const ChatMessage> messages, bool gen, ChatTokenBuilder& b) {
  for (const ChatMessage& m : messages) {
    b.Marker(absl::StrCat("<|", m.role, "|>"));
    b.Text(absl::StrCat("\n", m.content));
    b.Eos();
    b.Text("\n");
  }
  if (gen) {
    b.Marker("<|assistant|>");
    b.Text("\n");
  }
}

// A ChatML template's literal system prompt for conversations without one (Qwen2's
// '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'): the text between
// "<|im_start|>system" + newline (a real one, or "\n" as Jinja escape) and "<|im_end|>" when it
// is a plain literal (no quote, brace, '+' or backslash); "" otherwise.
std::string DefaultSystemPrompt(std::string_view jinja) {
  for (std::string_view open : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    for (size_t pos = jinja.find(open); pos != std::string_view::npos;
         pos = jinja.find(open, pos + 1)) {
      const size_t start = pos + open.size();
      const size_t end = jinja.find("<|im_end|>", start);
      if (end == std::string_view::npos) break;
      const std::string_view text = jinja.substr(start, end - start);
      if (text.empty() || text.find_first_of("'\"{}+\\") != std::string_view::npos) continue;
      return std::string(text);
    }
  }
  return "";
}

}  // namespace

ChatTemplate::ChatTemplate(ChatTemplateKind kind, const Tokenizer& tokenizer)
    : kind_(kind), format_(ResolveFormat(kind, tokenizer)), tokenizer_(&tokenizer) {
  const std::vector<std::string_view> markers = MarkersOf(kind);
  if (markers.empty()) return;
  absl::flat_hash_set<std::string_view> wanted(markers.begin(), markers.end());
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::string& piece = tokenizer.piece(id);
    if (!wanted.contains(piece)) continue;
    const TokenType type = tokenizer.type(id);
    if (type == TokenType::kByte || type == TokenType::kUnknown) continue;
    // Prefer a control / user-defined entry over a normal one with the same piece.
    auto [it, inserted] = marker_ids_.emplace(piece, id);
    if (!inserted && (type == TokenType::kControl || type == TokenType::kUserDefined)) {
      it->second = id;
    }
  }
  for (const auto& [piece, id] : marker_ids_) marker_id_set_.insert(id);
}

bool ChatTemplate::IsProtected(int32_t id) const {
  return id == tokenizer_->bos_id() || tokenizer_->IsEndOfGeneration(id) ||
         tokenizer_->IsControl(id) || marker_id_set_.contains(id);
}

int32_t ChatTemplate::MarkerId(std::string_view marker) const {
  auto it = marker_ids_.find(Av(marker));
  return it == marker_ids_.end() ? -1 : it->second;
}

const char* ChatTemplate::KindName(ChatTemplateKind kind) {
  for (const KindEntry& e : kKinds) {
    if (e.kind == kind) return e.name;
  }
  return "?";
}

std::string ChatTemplate::ValidNames() {
  std::vector<std::string> names;
  for (const KindEntry& e : kKinds) names.emplace_back(e.name);
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<ChatTemplateKind> ChatTemplate::KindFromName(std::string_view name) {
  for (const KindEntry& e : kKinds) {
    if (name == e.name) return e.kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat template '", Av(name), "'; valid names: ", ValidNames()));
}

absl::StatusOr<ChatTemplateKind> ChatTemplate::Recognize(std::string_view jinja) {
  if (jinja.empty()) return ChatTemplateKind::kPlain;
  if (Contains(jinja, "<|im_start|>")) return ChatTemplateKind::kChatMl;
  if (Contains(jinja, "<|start_header_id|>") && Contains(jinja, "<|end_header_id|>")) {
    return ChatTemplateKind::kLlama3;
  }
  if (Contains(jinja, "<|user|>") && Contains(jinja, "<|assistant|>") &&
      !Contains(jinja, "<|end|>")) {
    return ChatTemplateKind::kZephyr;
  }
  if (Contains(jinja, "[SYSTEM_PROMPT]")) return ChatTemplateKind::kMistralV7;
  if (Contains(jinja, "[INST]")) {
    return Contains(jinja, "<<SYS>>") ? ChatTemplateKind::kLlama2 : ChatTemplateKind::kMistral;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("the model's chat template is not recognised; name one with chat_template / "
                   "--chat-template (",
                   ValidNames(), ")"));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromName(std::string_view name,
                                                    const Tokenizer& tokenizer) {
  auto kind = KindFromName(name);
  if (!kind.ok()) return kind.status();
  return ChatTemplate(*kind, tokenizer);
}

absl::StatusOr<ChatTemplate> ChatTemplate::Detect(std::string_view jinja,
                                                  const Tokenizer& tokenizer) {
  auto kind = Recognize(jinja);
  if (!kind.ok()) return kind.status();
  ChatTemplate tmpl(*kind, tokenizer);
  if (*kind == ChatTemplateKind::kChatMl) tmpl.default_system_ = DefaultSystemPrompt(jinja);
  return tmpl;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromGguf(const GgufFile& gguf,
                                                    const Tokenizer& tokenizer) {
  absl::StatusOr<std::string> jinja = gguf.GetString("tokenizer.chat_template");
  if (absl::IsNotFound(jinja.status())) return ChatTemplate(ChatTemplateKind::kPlain, tokenizer);
  if (!jinja.ok()) return jinja.status();
  return Detect(*jinja, tokenizer);
}

absl::StatusOr<std::vector<int32_t>> ChatTemplate::Apply(std::span<const ChatMessage> messages,
                                                         const ChatTemplateOptions& options) const {
  const bool mistral = IsMistral(format_);
  const bool tools = mistral && format_ != ChatTemplateKind::kMistralV1;
  if (absl::Status s = ValidateMessages(messages, tools); !s.ok()) return s;
  if (!mistral && !options.tools_json.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tools need a Mistral v2+ chat template, not ", name()));
  }
  ChatTokenBuilder b(*this, /*space_prefix_at_start=*/options.add_bos);
  if (options.add_bos && tokenizer_->add_bos()) b.Bos();
  const bool gen = options.add_generation_prompt;
  switch (format_) {
    case ChatTemplateKind::kPlain:
      RenderPlain(messages, gen, b);
      break;
    case ChatTemplateKind::kLlama2:
      RenderLlama2(messages, b);
      break;
    case ChatTemplateKind::kLlama3:
      RenderLlama3(messages, gen, b);
      break;
    case ChatTemplateKind::kChatMl:
      RenderChatMl(messages, default_system_, gen, b);
      break;
    case ChatTemplateKind::kZephyr:
      RenderZephyr(messages, gen, b);
      break;
    case ChatTemplateKind::kMistral:  // resolved by ResolveFormat
    case ChatTemplateKind::kMistralV1:
    case ChatTemplateKind::kMistralV2:
    case ChatTemplateKind::kMistralV3:
    case ChatTemplateKind::kMistralV7: {
      const MistralVersion v = format_ == ChatTemplateKind::kMistralV1   ? MistralVersion::kV1
                               : format_ == ChatTemplateKind::kMistralV2 ? MistralVersion::kV2
                               : format_ == ChatTemplateKind::kMistralV7 ? MistralVersion::kV7
                                                                         : MistralVersion::kV3;
      if (absl::Status s = RenderMistral(v, messages, options.tools_json, b); !s.ok()) return s;
      break;
    }
  }
  return b.Finish();
}

}  // namespace funnel
