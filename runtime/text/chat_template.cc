#include "runtime/text/chat_template.h"

#include <array>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace funnel {
namespace {

struct KindEntry {
  ChatTemplateKind kind;
  const char* name;
};

// Sorted by name (ValidNames lists them in this order).
constexpr std::array<KindEntry, 6> kKinds = {{
    {ChatTemplateKind::kChatMl, "chatml"},
    {ChatTemplateKind::kLlama2, "llama2"},
    {ChatTemplateKind::kLlama3, "llama3"},
    {ChatTemplateKind::kMistral, "mistral"},
    {ChatTemplateKind::kPlain, "plain"},
    {ChatTemplateKind::kZephyr, "zephyr"},
}};

std::vector<std::string_view> MarkersOf(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kPlain:
      return {};
    case ChatTemplateKind::kLlama2:
    case ChatTemplateKind::kMistral:
      return {"[INST]", "[/INST]"};
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

size_t Utf8Length(std::string_view s) {
  const auto lead = static_cast<uint8_t>(s[0]);
  size_t len = 1;
  if (lead >= 0xC0 && lead < 0xE0) len = 2;
  if (lead >= 0xE0 && lead < 0xF0) len = 3;
  if (lead >= 0xF0) len = 4;
  return std::min(len, s.size());
}

std::string Capitalized(std::string_view role) {
  std::string out(role);
  if (!out.empty()) out[0] = absl::ascii_toupper(static_cast<unsigned char>(out[0]));
  return out;
}

absl::Status ValidateMessages(std::span<const ChatMessage> messages) {
  if (messages.empty()) return absl::InvalidArgumentError("messages: at least one is required");
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role: '", m.role,
                                                     "' is not one of system, user, assistant"));
    }
    if (!IsValidUtf8(m.content)) {
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

// Accumulates markers and text, encoding each text run when a token interrupts it.
class Builder {
 public:
  Builder(const ChatTemplate& tmpl, bool space_prefix_at_start)
      : tmpl_(tmpl), tok_(tmpl.tokenizer()), prefix_next_(space_prefix_at_start) {}

  void Bos() {
    if (tok_.bos_id() < 0) return;
    Token(tok_.bos_id());
    prefix_next_ = true;
  }
  void Eos() {
    if (tok_.eos_id() >= 0) Token(tok_.eos_id());
  }
  void Marker(std::string_view marker) {
    const int32_t id = tmpl_.MarkerId(marker);
    if (id >= 0) {
      Token(id);
    } else {
      Text(marker);
    }
  }
  void Text(std::string_view text) { pending_ += text; }

  std::vector<int32_t> Finish() {
    Flush();
    return std::move(ids_);
  }

 private:
  void Token(int32_t id) {
    Flush();
    ids_.push_back(id);
    prefix_next_ = false;
  }
  void Flush() {
    if (pending_.empty()) return;
    EncodeGuarded(pending_, prefix_next_, /*depth=*/0);
    pending_.clear();
    prefix_next_ = false;
  }
  // Encodes text; a protected id that the text produced (only possible for markers stored as
  // user-defined or normal pieces) is replaced by the encoding of its text split after the first
  // character, recursively (the pieces are strictly shorter, so this ends).
  void EncodeGuarded(std::string_view text, bool prefix, int depth) {
    EncodeOptions options{.add_bos = false, .add_space_prefix = prefix, .add_eos = false};
    for (int32_t id : tok_.Encode(text, options)) {
      if (!tmpl_.IsProtected(id)) {
        ids_.push_back(id);
        continue;
      }
      const std::string piece = tok_.TokenToPiece(id);
      const size_t first = piece.empty() ? 0 : Utf8Length(piece);
      if (first == 0 || first >= piece.size() || depth > 64) {
        if (tok_.unk_id() >= 0) ids_.push_back(tok_.unk_id());  // a one-character marker
        continue;
      }
      EncodeGuarded(std::string_view(piece).substr(0, first), false, depth + 1);
      EncodeGuarded(std::string_view(piece).substr(first), false, depth + 1);
    }
  }

  const ChatTemplate& tmpl_;
  const Tokenizer& tok_;
  bool prefix_next_;
  std::string pending_;
  std::vector<int32_t> ids_;
};

void RenderPlain(std::span<const ChatMessage> messages, bool gen, Builder& b) {
  for (const ChatMessage& m : messages) {
    b.Text(absl::StrCat(Capitalized(m.role), ": ", m.content, "\n"));
  }
  if (gen) b.Text("Assistant:");
}

// Llama 2 and Mistral: [INST] turns; the system prompt goes into the next user turn.
void RenderInst(std::span<const ChatMessage> messages, bool llama2, Builder& b) {
  std::string system;
  bool first_turn = true;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      system = system.empty() ? m.content : absl::StrCat(system, "\n\n", m.content);
    } else if (m.role == "assistant") {
      b.Text(llama2 ? absl::StrCat(" ", m.content, " ") : m.content);
      b.Eos();
    } else {
      if (llama2 && !first_turn) b.Bos();
      first_turn = false;
      std::string user = m.content;
      if (!system.empty()) {
        user = llama2 ? absl::StrCat("<<SYS>>\n", system, "\n<</SYS>>\n\n", user)
                      : absl::StrCat(system, "\n\n", user);
        system.clear();
      }
      b.Marker("[INST]");
      b.Text(absl::StrCat(" ", user, " "));
      b.Marker("[/INST]");
    }
  }
}

void RenderLlama3(std::span<const ChatMessage> messages, bool gen, Builder& b) {
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

void RenderChatMl(std::span<const ChatMessage> messages, bool gen, Builder& b) {
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

void RenderZephyr(std::span<const ChatMessage> messages, bool gen, Builder& b) {
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

}  // namespace

ChatTemplate::ChatTemplate(ChatTemplateKind kind, const Tokenizer& tokenizer)
    : kind_(kind), tokenizer_(&tokenizer) {
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
  if (Contains(jinja, "[INST]")) {
    return Contains(jinja, "<<SYS>>") ? ChatTemplateKind::kLlama2 : ChatTemplateKind::kMistral;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("the model's chat template is not recognised; name one with chat_template (",
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
  return ChatTemplate(*kind, tokenizer);
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
  if (absl::Status s = ValidateMessages(messages); !s.ok()) return s;
  Builder b(*this, /*space_prefix_at_start=*/options.add_bos);
  if (options.add_bos && tokenizer_->add_bos()) b.Bos();
  const bool gen = options.add_generation_prompt;
  switch (kind_) {
    case ChatTemplateKind::kPlain:
      RenderPlain(messages, gen, b);
      break;
    case ChatTemplateKind::kLlama2:
    case ChatTemplateKind::kMistral:
      RenderInst(messages, kind_ == ChatTemplateKind::kLlama2, b);
      break;
    case ChatTemplateKind::kLlama3:
      RenderLlama3(messages, gen, b);
      break;
    case ChatTemplateKind::kChatMl:
      RenderChatMl(messages, gen, b);
      break;
    case ChatTemplateKind::kZephyr:
      RenderZephyr(messages, gen, b);
      break;
  }
  return b.Finish();
}

}  // namespace funnel
