// libFuzzer target: funnel-server's request validation, fed the bytes a gRPC client sends.
//
// Input: byte 0 selects what the rest is and which server set-up checks it; bytes 1.. are the
// serialized message (what gRPC hands the service after framing):
//   bits 0-1  0, 3: v1::GenerateRequest → GenerateRequestFromProto
//             1:    v1::CreateSessionRequest → CreateSessionRequestFromProto
//             2:    raw text → ToValidUtf8 and TokenEventToProto (the response side's text)
//   bits 2-4  the server's chat template (PromptEncoder): plain, chatml, llama3, llama2, zephyr,
//             mistral (v7 in this vocabulary), a Qwen2-style ChatML with a literal system prompt,
//             or none recognised (chat requests without a chat_template must fail)
//   bit 5     the server's default KV policy: full, or pyramidkv with budget 64
//   bits 6-7  the model depth used for the budget arithmetic check: 1, 2, 16 or 80 layers
// The tokenizer is tests/fuzz/fuzz_vocabulary.h's (byte fallback, every template's markers).
//
// Checked on every input: nothing crashes or trips ASan/UBSan, errors are INVALID_ARGUMENT with
// a message. When a request is accepted: prompt ids are non-empty and in the vocabulary; ids
// given are fed unchanged; a text prompt decodes back to itself (a literal U+2581 as a space);
// sampling and KV policy pass the engine's own Validate; the per-layer budgets of the policy stay
// within the prompt; an APPEND has a session; and chat content never produces a token the
// template protects (BOS, EOS / end of turn, control tokens, its role markers: the sequence of
// those tokens is the same as for the same messages with every content "x").
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "funnel/v1/inference.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/text/chat_template.h"
#include "server/prompt_encoder.h"
#include "server/proto_conversion.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_vocabulary.h"

namespace funnel::fuzz {
namespace {

constexpr int kNumServerTemplates = 8;

// Everything built once: the tokenizer, and per server template its ChatTemplate (for the
// checks) and a PromptEncoder holding another copy of it.
struct Fixture {
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<absl::StatusOr<ChatTemplate>> templates;
  std::vector<std::unique_ptr<PromptEncoder>> encoders;
  KvPolicy full_default;
  KvPolicy pyramid_default;
};

absl::StatusOr<ChatTemplate> ServerTemplate(int index, const Tokenizer& tok) {
  switch (index) {
    case 0:
      return ChatTemplate::Detect("", tok);  // no template: plain
    case 1:
      return ChatTemplate::FromName("chatml", tok);
    case 2:
      return ChatTemplate::FromName("llama3", tok);
    case 3:
      return ChatTemplate::FromName("llama2", tok);
    case 4:
      return ChatTemplate::FromName("zephyr", tok);
    case 5:
      return ChatTemplate::FromName("mistral", tok);
    case 6:
      return ChatTemplate::Detect(
          "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
          "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
          "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}",
          tok);
    default:
      return absl::InvalidArgumentError("the model's chat template is not recognised");
  }
}

const Fixture& GetFixture() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture;
    f->tokenizer = MakeFuzzTokenizer();
    for (int i = 0; i < kNumServerTemplates; ++i) {
      absl::StatusOr<ChatTemplate> t = ServerTemplate(i, *f->tokenizer);
      FUZZ_CHECK(t.ok() == (i != kNumServerTemplates - 1), t.status().ToString());
      f->templates.push_back(t);
      f->encoders.push_back(std::make_unique<PromptEncoder>(*f->tokenizer, std::move(t)));
    }
    f->pyramid_default.method = KvMethod::kPyramidKv;
    f->pyramid_default.budget = 64;
    FUZZ_CHECK(f->pyramid_default.Validate().ok(), "default policy");
    return f;
  }();
  return *fixture;
}

void CheckError(const absl::Status& status) {
  FUZZ_LOG(absl::StrCat("rejected: ", status.ToString()));
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, status.ToString());
  FUZZ_CHECK(!status.message().empty(), "an error without a message");
}

void CheckIds(const std::vector<int32_t>& ids, const Tokenizer& tok) {
  FUZZ_CHECK(!ids.empty(), "accepted an empty prompt");
  for (int32_t id : ids) {
    FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), absl::StrCat("id ", id, " outside the vocab"));
  }
}

// `ids` encode `text` (BOS first unless `continuation`): they decode back to it, except that a
// literal U+2581 in the text comes back as a space (SentencePiece's own escape for spaces; every
// SentencePiece tokenizer reads it so).
void CheckTextRoundTrip(const std::vector<int32_t>& ids, const std::string& text, bool continuation,
                        const Tokenizer& tok) {
  const std::string expected = absl::StrReplaceAll(text, {{"\xE2\x96\x81", " "}});
  std::string decoded;
  if (continuation) {
    for (int32_t id : ids) decoded += tok.TokenToPiece(id);
  } else {
    FUZZ_CHECK(ids.front() == tok.bos_id(), "text prompt without BOS");
    decoded = tok.Decode(ids);
  }
  FUZZ_CHECK(decoded == expected, absl::StrCat(continuation ? "continuation '" : "prompt '", text,
                                               "' decodes to '", decoded, "'"));
}

// The ids the template must keep out of message content: BOS, end-of-generation and control
// tokens, and its own role markers (ChatTemplate::IsProtected, chat_template.h).
std::vector<int32_t> ProtectedIds(const std::vector<int32_t>& ids, const ChatTemplate& tmpl) {
  std::vector<int32_t> out;
  for (int32_t id : ids) {
    if (tmpl.IsProtected(id)) out.push_back(id);
  }
  return out;
}

std::string Pieces(const std::vector<int32_t>& ids, const Tokenizer& tok) {
  std::string out;
  for (int32_t id : ids) absl::StrAppend(&out, id, ":", tok.piece(id), " ");
  return out;
}

// Chat content cannot inject structure: the protected tokens of the accepted prompt are exactly
// those of the same conversation with every content replaced by "x". `server_template` is the
// template used when the request names none (null: the server has none).
void CheckNoInjection(const std::vector<int32_t>& ids, const v1::ChatMessages& messages,
                      const std::string& template_name, bool continuation, bool generation,
                      const PromptEncoder& encoder, const ChatTemplate* server_template) {
  std::vector<ChatMessage> plain = MessagesFromProto(messages);
  for (ChatMessage& m : plain) m.content = "x";
  absl::StatusOr<std::vector<int32_t>> reference =
      encoder.EncodeMessages(plain, template_name, continuation, generation);
  FUZZ_CHECK(reference.ok(), reference.status().ToString());
  const Tokenizer& tok = encoder.tokenizer();
  absl::StatusOr<ChatTemplate> named = ChatTemplate::FromName(template_name, tok);
  FUZZ_CHECK(template_name.empty() || named.ok(), named.status().ToString());
  FUZZ_CHECK(!template_name.empty() || server_template != nullptr,
             "a chat request succeeded without any template");
  const ChatTemplate& tmpl = template_name.empty() ? *server_template : *named;
  const std::vector<int32_t> got = ProtectedIds(ids, tmpl);
  const std::vector<int32_t> want = ProtectedIds(*reference, tmpl);
  FUZZ_CHECK(got == want,
             absl::StrCat("chat content produced a protected token under ", tmpl.name(), ": got ",
                          Pieces(got, tok), "want ", Pieces(want, tok)));
}

void CheckPolicy(const std::optional<KvPolicy>& policy, int64_t prompt_tokens, int32_t layers) {
  if (!policy) return;
  FUZZ_CHECK(policy->Validate().ok(), "accepted an invalid KV policy");
  for (int64_t n : {prompt_tokens, int64_t{4096}, int64_t{131072}}) {
    const LayerBudgets b = ComputeLayerBudgets(*policy, layers, n);
    FUZZ_CHECK(b.selected.size() == static_cast<size_t>(layers), "budget per layer");
    if (!b.compress) continue;
    FUZZ_CHECK(b.budget >= 1 && b.budget <= n, absl::StrCat("budget ", b.budget, " of ", n));
    FUZZ_CHECK(b.window >= 0 && b.window <= b.budget, "window outside the budget");
    for (int32_t l = 0; l < layers; ++l) {
      const int64_t stored = b.stored(l);
      FUZZ_CHECK(b.selected[static_cast<size_t>(l)] >= 0 && stored >= 1 && stored <= n,
                 absl::StrCat("layer ", l, " stores ", stored, " of ", n, " tokens"));
    }
  }
}

void FuzzGenerate(const uint8_t* data, size_t size, const PromptEncoder& encoder,
                  const ChatTemplate* server_template, const KvPolicy& server_default,
                  int32_t layers) {
  v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    FUZZ_LOG("not a GenerateRequest");
    return;
  }
  absl::StatusOr<GenerateRequest> req = GenerateRequestFromProto(request, encoder, server_default);
  if (!req.ok()) return CheckError(req.status());
  const Tokenizer& tok = encoder.tokenizer();
  CheckIds(req->prompt, tok);
  const bool continuation = !request.session_id().empty();
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt:
      CheckTextRoundTrip(req->prompt, request.prompt(), continuation, tok);
      break;
    case v1::GenerateRequest::kPromptIds:
      FUZZ_CHECK(std::vector<int32_t>(request.prompt_ids().ids().begin(),
                                      request.prompt_ids().ids().end()) == req->prompt,
                 "prompt_ids not fed as given");
      break;
    case v1::GenerateRequest::kMessages:
      CheckNoInjection(req->prompt, request.messages(), request.chat_template(), continuation,
                       /*generation=*/true, encoder, server_template);
      break;
    case v1::GenerateRequest::INPUT_NOT_SET:
      FUZZ_CHECK(false, "accepted a request without input");
  }
  FUZZ_CHECK(req->sampling.Validate().ok(), "accepted invalid sampling parameters");
  FUZZ_CHECK(req->top_logprobs >= -1 && req->top_logprobs <= 20, "top_logprobs out of range");
  FUZZ_CHECK(req->session_id == request.session_id(), "session id changed");
  FUZZ_CHECK(req->session_mode != SessionMode::kAppend || !req->session_id.empty(),
             "APPEND without a session");
  FUZZ_CHECK(req->request_id.empty() && req->owner.empty(), "fields left to the caller were set");
  CheckPolicy(req->kv_policy, static_cast<int64_t>(req->prompt.size()), layers);
  FUZZ_LOG(absl::StrCat("accepted Generate: ", req->prompt.size(), " prompt ids"));
}

void FuzzCreateSession(const uint8_t* data, size_t size, const PromptEncoder& encoder,
                       const ChatTemplate* server_template, const KvPolicy& server_default,
                       int32_t layers) {
  v1::CreateSessionRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    FUZZ_LOG("not a CreateSessionRequest");
    return;
  }
  absl::StatusOr<CreateSessionRequest> req =
      CreateSessionRequestFromProto(request, encoder, server_default);
  if (!req.ok()) return CheckError(req.status());
  const Tokenizer& tok = encoder.tokenizer();
  CheckIds(req->context, tok);
  if (request.input_case() == v1::CreateSessionRequest::kPrompt) {
    CheckTextRoundTrip(req->context, request.prompt(), /*continuation=*/false, tok);
  } else if (request.input_case() == v1::CreateSessionRequest::kMessages) {
    CheckNoInjection(req->context, request.messages(), request.chat_template(),
                     /*continuation=*/false, /*generation=*/false, encoder, server_template);
  }
  FUZZ_CHECK(request.ttl_seconds() >= 0, "accepted a negative ttl");
  FUZZ_CHECK(req->ttl >= absl::ZeroDuration(), "negative ttl");
  CheckPolicy(req->kv_policy, static_cast<int64_t>(req->context.size()), layers);
  FUZZ_LOG(absl::StrCat("accepted CreateSession: ", req->context.size(), " context ids"));
}

// The response side: engine text (any bytes) → proto3 strings, which must be valid UTF-8.
void FuzzResponseText(const uint8_t* data, size_t size, const Tokenizer& tok) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string valid = ToValidUtf8(text);
  FUZZ_CHECK(IsValidUtf8(valid), "ToValidUtf8 gave invalid UTF-8");
  FUZZ_CHECK(!IsValidUtf8(text) || valid == text, "ToValidUtf8 changed valid text");
  TokenEvent event;
  event.token = size >= 4 ? static_cast<int32_t>(data[0] | data[1] << 8 | data[2] << 16 |
                                                 static_cast<uint32_t>(data[3]) << 24)
                          : 0;
  event.text = text;
  event.logprob = TokenLogprob{event.token, -1.0f};
  for (size_t i = 0; i < size && i < 4; ++i) event.top_logprobs.push_back({data[i] * 7 - 300, 0});
  v1::TokenDelta delta;
  TokenEventToProto(event, tok, &delta);
  FUZZ_CHECK(IsValidUtf8(delta.text()) && IsValidUtf8(delta.logprob().text()), "delta text");
  for (const v1::TokenLogprob& lp : delta.top_logprobs()) {
    FUZZ_CHECK(IsValidUtf8(lp.text()), "top_logprobs text");
  }
}

}  // namespace
}  // namespace funnel::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // proto3's invalid-UTF-8 parse errors: not ours
  funnel::fuzz::GetFixture();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace funnel::fuzz;
  if (size == 0) return 0;
  const Fixture& f = GetFixture();
  const uint8_t selector = data[0];
  const int template_index = (selector >> 2) & 7;
  const funnel::PromptEncoder& encoder = *f.encoders[template_index];
  const absl::StatusOr<funnel::ChatTemplate>& server_template = f.templates[template_index];
  const funnel::ChatTemplate* tmpl = server_template.ok() ? &*server_template : nullptr;
  const funnel::KvPolicy& policy = (selector & 0x20) != 0 ? f.pyramid_default : f.full_default;
  static constexpr int32_t kLayers[] = {1, 2, 16, 80};
  const int32_t layers = kLayers[selector >> 6];
  switch (selector & 3) {
    case 1:
      FuzzCreateSession(data + 1, size - 1, encoder, tmpl, policy, layers);
      break;
    case 2:
      FuzzResponseText(data + 1, size - 1, *f.tokenizer);
      break;
    default:
      FuzzGenerate(data + 1, size - 1, encoder, tmpl, policy, layers);
  }
  return 0;
}
