// absl::Status <-> grpc::Status, and the proto <-> runtime conversions of the service: request
// validation errors (INVALID_ARGUMENT naming the field), defaults, and response filling.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/proto_conversion.h"
#include "server/status_conversion.h"
#include "tests/unit/server/server_test_util.h"

namespace funnel {
namespace {

// --- status_conversion ---------------------------------------------------------------------

TEST(ServerStatusConversionTest, EveryCanonicalCodeKeepsItsNumberAndMessage) {
  for (int code = 1; code <= 16; ++code) {
    const absl::Status s(static_cast<absl::StatusCode>(code), "message " + std::to_string(code));
    const grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(g.error_message(), "message " + std::to_string(code));
    const absl::Status back = FromGrpcStatus(g);
    EXPECT_EQ(back, s);
  }
  // Spot checks against the gRPC names (DESIGN.md section 9).
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::UnauthenticatedError("x")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::CancelledError("x")).error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(ToGrpcStatus(absl::DeadlineExceededError("x")).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(ToGrpcStatus(absl::InternalError("x")).error_code(), grpc::StatusCode::INTERNAL);
}

TEST(ServerStatusConversionTest, OkStaysOkAndUnknownCodesBecomeUnknown) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  const grpc::Status g = ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(42), "odd"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(g.error_message(), "odd");
  const absl::Status a = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "odd"));
  EXPECT_EQ(a.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(a.message(), "odd");
}

TEST(ServerStatusConversionTest, UnparsableRequestIsInvalidArgumentMentioningUtf8) {
  const grpc::Status s = UnparsableRequestStatus();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("UTF-8"), std::string::npos);
}

// --- sampling ------------------------------------------------------------------------------

TEST(ServerProtoConversionTest, UnsetSamplingTakesTheDocumentedDefaults) {
  auto r = SamplingFromProto(v1::SamplingParams());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.temperature, 1.0f);
  EXPECT_EQ(r->params.top_p, 1.0f);
  EXPECT_EQ(r->params.top_k, 0);
  EXPECT_EQ(r->params.min_p, 0.0f);
  EXPECT_EQ(r->params.repetition_penalty, 1.0f);
  EXPECT_EQ(r->params.max_tokens, 16);
  EXPECT_FALSE(r->params.seed.has_value());
  EXPECT_TRUE(r->params.stop.empty());
  EXPECT_FALSE(r->params.ignore_eos);
  EXPECT_EQ(r->top_logprobs, -1);
}

TEST(ServerProtoConversionTest, SetSamplingFieldsAreCopied) {
  v1::SamplingParams p;
  p.set_temperature(0);  // explicitly greedy, not the default 1
  p.set_top_k(5);
  p.set_top_p(0.5f);
  p.set_min_p(0.1f);
  p.set_repetition_penalty(1.2f);
  p.set_presence_penalty(-0.5f);
  p.set_frequency_penalty(0.25f);
  p.set_seed(77);
  p.set_max_tokens(0);
  p.add_stop("END");
  p.add_stop("\n\n");
  p.set_ignore_eos(true);
  p.set_top_logprobs(0);
  auto r = SamplingFromProto(p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.temperature, 0.0f);
  EXPECT_EQ(r->params.top_k, 5);
  EXPECT_EQ(r->params.top_p, 0.5f);
  EXPECT_EQ(r->params.min_p, 0.1f);
  EXPECT_EQ(r->params.repetition_penalty, 1.2f);
  EXPECT_EQ(r->params.presence_penalty, -0.5f);
  EXPECT_EQ(r->params.frequency_penalty, 0.25f);
  EXPECT_EQ(r->params.seed, 77u);
  EXPECT_EQ(r->params.max_tokens, 0);
  EXPECT_EQ(r->params.stop, (std::vector<std::string>{"END", "\n\n"}));
  EXPECT_TRUE(r->params.ignore_eos);
  EXPECT_EQ(r->top_logprobs, 0);
}

// Expects INVALID_ARGUMENT whose message contains `field`.
template <typename T>
void ExpectInvalid(const absl::StatusOr<T>& r, const std::string& field) {
  ASSERT_FALSE(r.ok()) << "expected an error naming " << field;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(std::string(r.status().message()).find(field), std::string::npos)
      << r.status().message() << " does not name " << field;
}

TEST(ServerProtoConversionTest, BadSamplingIsInvalidArgumentNamingTheField) {
  struct Case {
    void (*set)(v1::SamplingParams&);
    const char* field;
  };
  const Case cases[] = {
      {[](v1::SamplingParams& p) { p.set_temperature(-1); }, "sampling: temperature"},
      {[](v1::SamplingParams& p) { p.set_temperature(std::numeric_limits<float>::quiet_NaN()); },
       "sampling: temperature"},
      {[](v1::SamplingParams& p) { p.set_top_p(1.5f); }, "sampling: top_p"},
      {[](v1::SamplingParams& p) { p.set_top_p(0); }, "sampling: top_p"},
      {[](v1::SamplingParams& p) { p.set_top_k(-2); }, "sampling: top_k"},
      {[](v1::SamplingParams& p) { p.set_min_p(2); }, "sampling: min_p"},
      {[](v1::SamplingParams& p) { p.set_repetition_penalty(0); }, "sampling: repetition_penalty"},
      {[](v1::SamplingParams& p) { p.set_presence_penalty(3); }, "sampling: presence_penalty"},
      {[](v1::SamplingParams& p) { p.set_frequency_penalty(-3); }, "sampling: frequency_penalty"},
      {[](v1::SamplingParams& p) { p.set_max_tokens(-3); }, "sampling: max_tokens"},
      {[](v1::SamplingParams& p) { p.add_stop(""); }, "sampling: stop[0]"},
      {[](v1::SamplingParams& p) { p.add_stop(std::string(257, 'x')); }, "sampling: stop[0]"},
      {[](v1::SamplingParams& p) {
         for (int i = 0; i < 17; ++i) p.add_stop("s");
       },
       "sampling: stop"},
      {[](v1::SamplingParams& p) { p.set_top_logprobs(21); }, "sampling.top_logprobs"},
      {[](v1::SamplingParams& p) { p.set_top_logprobs(-1); }, "sampling.top_logprobs"},
  };
  for (const Case& c : cases) {
    v1::SamplingParams p;
    c.set(p);
    SCOPED_TRACE(p.ShortDebugString());
    ExpectInvalid(SamplingFromProto(p), c.field);
  }
}

// --- KV policy -----------------------------------------------------------------------------

KvPolicy PyramidDefault() {
  KvPolicy p;
  p.method = KvMethod::kPyramidKv;
  p.budget = 128;
  p.window = 16;
  return p;
}

TEST(ServerProtoConversionTest, AbsentKvPolicyMeansTheEngineDefault) {
  v1::KvPolicy proto;
  proto.set_method(v1::KV_METHOD_SNAPKV);  // ignored: not present
  auto r = KvPolicyFromProto(proto, /*present=*/false, PyramidDefault());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->has_value());
}

TEST(ServerProtoConversionTest, PresentKvPolicyLayersOnTheServerDefault) {
  {
    auto r = KvPolicyFromProto(v1::KvPolicy(), true, PyramidDefault());
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->has_value());
    EXPECT_EQ((*r)->method, KvMethod::kPyramidKv);
    EXPECT_EQ((*r)->budget, 128);
    EXPECT_EQ((*r)->window, 16);
  }
  {
    v1::KvPolicy proto;
    proto.set_method(v1::KV_METHOD_FULL);  // full drops the default's budget
    auto r = KvPolicyFromProto(proto, true, PyramidDefault());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->method, KvMethod::kFull);
    EXPECT_EQ((*r)->budget, 0);
    EXPECT_EQ((*r)->ratio, 0.0);
  }
  {
    v1::KvPolicy proto;
    proto.set_method(v1::KV_METHOD_SNAPKV);
    proto.set_ratio(0.25);  // a ratio replaces the default's budget
    proto.set_pooling(v1::KV_POOLING_AVG);
    proto.set_kernel(5);
    proto.set_beta(4);
    proto.set_window(4);
    proto.set_official_rounding(true);
    auto r = KvPolicyFromProto(proto, true, PyramidDefault());
    ASSERT_TRUE(r.ok()) << r.status();
    const KvPolicy& p = **r;
    EXPECT_EQ(p.method, KvMethod::kSnapKv);
    EXPECT_EQ(p.budget, 0);
    EXPECT_EQ(p.ratio, 0.25);
    EXPECT_EQ(p.pooling, KvPooling::kAvg);
    EXPECT_EQ(p.kernel, 5);
    EXPECT_EQ(p.beta, 4.0);
    EXPECT_EQ(p.window, 4);
    EXPECT_EQ(p.rounding, BudgetRounding::kOfficial);
  }
}

TEST(ServerProtoConversionTest, BadKvPoliciesAreInvalidArgumentNamingTheField) {
  const KvPolicy full;  // server default: full
  struct Case {
    void (*set)(v1::KvPolicy&);
    const char* field;
  };
  const Case cases[] = {
      {[](v1::KvPolicy& p) { p.set_budget(-1); }, "kv_policy.budget"},
      {[](v1::KvPolicy& p) { p.set_ratio(-0.5); }, "kv_policy.ratio"},
      {[](v1::KvPolicy& p) { p.set_ratio(std::nan("")); }, "kv_policy.ratio"},
      {[](v1::KvPolicy& p) { p.set_ratio(HUGE_VAL); }, "kv_policy.ratio"},
      {[](v1::KvPolicy& p) { p.set_window(-1); }, "kv_policy.window"},
      {[](v1::KvPolicy& p) { p.set_kernel(-3); }, "kv_policy.kernel"},
      {[](v1::KvPolicy& p) { p.set_beta(-1); }, "kv_policy.beta"},
      {[](v1::KvPolicy& p) { p.set_beta(std::nan("")); }, "kv_policy.beta"},
      {[](v1::KvPolicy& p) { p.set_method(static_cast<v1::KvMethod>(99)); },
       "kv_policy.method: unknown value 99"},
      // Combinations checked by KvPolicy::Validate.
      {[](v1::KvPolicy& p) { p.set_method(v1::KV_METHOD_PYRAMIDKV); }, "kv_policy: "},
      {[](v1::KvPolicy& p) {
         p.set_method(v1::KV_METHOD_FULL);
         p.set_budget(64);
       },
       "kv_policy: "},
      {[](v1::KvPolicy& p) {
         p.set_method(v1::KV_METHOD_SNAPKV);
         p.set_budget(64);
         p.set_ratio(0.5);
       },
       "kv_policy: "},
      {[](v1::KvPolicy& p) {
         p.set_method(v1::KV_METHOD_SNAPKV);
         p.set_ratio(1.5);
       },
       "kv_policy: "},
      {[](v1::KvPolicy& p) {
         p.set_method(v1::KV_METHOD_SNAPKV);
         p.set_budget(64);
         p.set_kernel(4);
       },
       "kv_policy: kv pooling kernel must be odd"},
      {[](v1::KvPolicy& p) {
         p.set_method(v1::KV_METHOD_PYRAMIDKV);
         p.set_budget(64);
         p.set_beta(0.5);
       },
       "kv_policy: kv beta must be >= 1"},
  };
  for (const Case& c : cases) {
    v1::KvPolicy p;
    c.set(p);
    SCOPED_TRACE(p.ShortDebugString());
    ExpectInvalid(KvPolicyFromProto(p, true, full), c.field);
  }
}

TEST(ServerProtoConversionTest, KvPolicyRoundTrip) {
  KvPolicy p;
  p.method = KvMethod::kH2o;
  p.budget = 96;
  p.window = 4;
  p.pooling = KvPooling::kAvg;
  p.kernel = 3;
  p.beta = 2.5;
  p.rounding = BudgetRounding::kOfficial;
  v1::KvPolicy proto;
  KvPolicyToProto(p, &proto);
  EXPECT_EQ(proto.method(), v1::KV_METHOD_H2O);
  EXPECT_EQ(proto.budget(), 96);
  EXPECT_EQ(proto.pooling(), v1::KV_POOLING_AVG);
  EXPECT_TRUE(proto.official_rounding());
  auto back = KvPolicyFromProto(proto, true, KvPolicy());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->method, p.method);
  EXPECT_EQ((*back)->budget, p.budget);
  EXPECT_EQ((*back)->window, p.window);
  EXPECT_EQ((*back)->pooling, p.pooling);
  EXPECT_EQ((*back)->kernel, p.kernel);
  EXPECT_EQ((*back)->beta, p.beta);
  EXPECT_EQ((*back)->rounding, p.rounding);
}

// --- responses -----------------------------------------------------------------------------

TEST(ServerProtoConversionTest, ToValidUtf8ReplacesOnlyBadBytes) {
  EXPECT_EQ(ToValidUtf8("plain"), "plain");
  EXPECT_EQ(ToValidUtf8("h\xC3\xA9llo \xE6\x97\xA5\xF0\x9F\x98\x80"),
            "h\xC3\xA9llo \xE6\x97\xA5\xF0\x9F\x98\x80");
  const std::string kReplacement = "\xEF\xBF\xBD";
  EXPECT_EQ(ToValidUtf8("a\xFF"
                        "b"),
            "a" + kReplacement + "b");
  EXPECT_EQ(ToValidUtf8("\xC0\x80"), kReplacement + kReplacement);         // overlong NUL
  EXPECT_EQ(ToValidUtf8("x\xE6\x97"), "x" + kReplacement + kReplacement);  // truncated at the end
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"), kReplacement + kReplacement + kReplacement);  // surrogate
  EXPECT_EQ(ToValidUtf8("\xF4\x90\x80\x80"),  // above U+10FFFF
            kReplacement + kReplacement + kReplacement + kReplacement);
}

TEST(ServerProtoConversionTest, FinishReasons) {
  EXPECT_EQ(FinishReasonToProto("stop"), v1::FINISH_REASON_STOP);
  EXPECT_EQ(FinishReasonToProto("length"), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(FinishReasonToProto(""), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_EQ(FinishReasonToProto("cancelled"), v1::FINISH_REASON_UNSPECIFIED);
}

TEST(ServerProtoConversionTest, UsageAndSessionAreCopied) {
  Usage u;
  u.prompt_tokens = 10;
  u.session_tokens_reused = 200;
  u.completion_tokens = 7;
  u.kv_entries_per_layer = {40, 30, 20};
  u.queue_ms = 1.5;
  u.prefill_ms = 2.5;
  u.decode_ms = 3.5;
  u.ttft_ms = 4.5;
  u.total_ms = 9.5;
  v1::Usage pu;
  UsageToProto(u, &pu);
  EXPECT_EQ(pu.prompt_tokens(), 10);
  EXPECT_EQ(pu.session_tokens_reused(), 200);
  EXPECT_EQ(pu.completion_tokens(), 7);
  EXPECT_EQ(
      std::vector<int64_t>(pu.kv_entries_per_layer().begin(), pu.kv_entries_per_layer().end()),
      (std::vector<int64_t>{40, 30, 20}));
  EXPECT_EQ(pu.timings().queue_ms(), 1.5);
  EXPECT_EQ(pu.timings().prefill_ms(), 2.5);
  EXPECT_EQ(pu.timings().decode_ms(), 3.5);
  EXPECT_EQ(pu.timings().ttft_ms(), 4.5);
  EXPECT_EQ(pu.timings().total_ms(), 9.5);

  SessionInfo s;
  s.session_id = "sess-r0-0123456789abcdef";
  s.tokens = 300;
  s.per_layer_tokens = {64, 32};
  s.kv_bytes = 4096;
  s.kv_policy = PyramidDefault();
  s.created = absl::FromUnixMillis(1700000000123);
  s.expires = absl::InfiniteFuture();
  s.active_requests = 2;
  v1::Session ps;
  SessionToProto(s, &ps);
  EXPECT_EQ(ps.session_id(), s.session_id);
  EXPECT_EQ(ps.tokens(), 300);
  EXPECT_EQ(ps.per_layer_tokens_size(), 2);
  EXPECT_EQ(ps.per_layer_tokens(0), 64);
  EXPECT_EQ(ps.kv_bytes(), 4096);
  EXPECT_EQ(ps.kv_policy().method(), v1::KV_METHOD_PYRAMIDKV);
  EXPECT_EQ(ps.kv_policy().budget(), 128);
  EXPECT_EQ(ps.created_unix_ms(), 1700000000123);
  EXPECT_EQ(ps.expires_unix_ms(), 0);  // never
  EXPECT_EQ(ps.active_requests(), 2);
}

TEST(ServerProtoConversionTest, MessagesKeepRoleAndContent) {
  v1::ChatMessages proto;
  auto* m = proto.add_messages();
  m->set_role("system");
  m->set_content("Be brief.");
  m = proto.add_messages();
  m->set_role("user");
  m->set_content("Hi");
  const std::vector<ChatMessage> out = MessagesFromProto(proto);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].role, "system");
  EXPECT_EQ(out[0].content, "Be brief.");
  EXPECT_EQ(out[1].role, "user");
  EXPECT_EQ(out[1].content, "Hi");
}

TEST(ServerProtoConversionTest, TokenEventWithLogprobs) {
  auto tokenizer = testing::MakeWordTokenizer(16);
  TokenEvent e;
  e.token = 5;
  e.text = " w5\xE6";  // an invalid tail is replaced, never sent as is
  e.logprob = TokenLogprob{5, -0.25f};
  e.top_logprobs = {{5, -0.25f}, {7, -2.0f}};
  v1::TokenDelta d;
  d.set_token_id(99);  // stale content is cleared
  d.add_top_logprobs()->set_token_id(1);
  TokenEventToProto(e, *tokenizer, &d);
  EXPECT_EQ(d.token_id(), 5);
  EXPECT_EQ(d.text(), " w5\xEF\xBF\xBD");
  ASSERT_TRUE(d.has_logprob());
  EXPECT_EQ(d.logprob().token_id(), 5);
  EXPECT_EQ(d.logprob().text(), " w5");
  EXPECT_EQ(d.logprob().logprob(), -0.25f);
  ASSERT_EQ(d.top_logprobs_size(), 2);
  EXPECT_EQ(d.top_logprobs(1).token_id(), 7);
  EXPECT_EQ(d.top_logprobs(1).text(), " w7");
  EXPECT_EQ(d.top_logprobs(1).logprob(), -2.0f);

  TokenEvent plain;
  plain.token = 2;  // EOS: empty text, no logprobs asked
  TokenEventToProto(plain, *tokenizer, &d);
  EXPECT_EQ(d.token_id(), 2);
  EXPECT_EQ(d.text(), "");
  EXPECT_FALSE(d.has_logprob());
  EXPECT_EQ(d.top_logprobs_size(), 0);
}

// --- GenerateRequestFromProto / CreateSessionRequestFromProto --------------------------------

struct EncoderFixture {
  std::unique_ptr<Tokenizer> tokenizer = testing::MakeWordTokenizer(16);
  PromptEncoder encoder{*tokenizer, ChatTemplate::FromName("plain", *tokenizer)};
};

v1::ChatMessages TwoMessages() {
  v1::ChatMessages m;
  v1::ChatMessage* sys = m.add_messages();
  sys->set_role("system");
  sys->set_content("Be brief.");
  v1::ChatMessage* user = m.add_messages();
  user->set_role("user");
  user->set_content("Hi");
  return m;
}

// The plain template applied directly: the reference for what the conversions feed.
std::vector<int32_t> PlainChat(const Tokenizer& tok, const v1::ChatMessages& m, bool add_bos,
                               bool generation) {
  auto tmpl = ChatTemplate::FromName("plain", tok);
  EXPECT_TRUE(tmpl.ok()) << tmpl.status();
  ChatTemplateOptions options;
  options.add_bos = add_bos;
  options.add_generation_prompt = generation;
  auto ids = tmpl->Apply(MessagesFromProto(m), options);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>();
}

TEST(ServerProtoConversionTest, GenerateRequestCarriesIdsSamplingPolicyAndSession) {
  EncoderFixture f;
  v1::GenerateRequest proto;
  proto.set_request_id("ignored-here");
  proto.mutable_prompt_ids()->add_ids(5);
  proto.mutable_prompt_ids()->add_ids(9);
  proto.mutable_sampling()->set_max_tokens(7);
  proto.mutable_sampling()->set_top_logprobs(3);
  proto.mutable_kv_policy()->set_method(v1::KV_METHOD_SNAPKV);
  proto.mutable_kv_policy()->set_budget(32);
  proto.set_session_id("sess-1");
  proto.set_session_mode(v1::SESSION_MODE_APPEND);
  auto r = GenerateRequestFromProto(proto, f.encoder, PyramidDefault());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt, (std::vector<int32_t>{5, 9}));
  EXPECT_EQ(r->sampling.max_tokens, 7);
  EXPECT_EQ(r->top_logprobs, 3);
  ASSERT_TRUE(r->kv_policy.has_value());
  EXPECT_EQ(r->kv_policy->method, KvMethod::kSnapKv);
  EXPECT_EQ(r->kv_policy->budget, 32);
  EXPECT_EQ(r->session_id, "sess-1");
  EXPECT_EQ(r->session_mode, SessionMode::kAppend);
  // Left for the service: the call's id, owner and deadline.
  EXPECT_EQ(r->request_id, "");
  EXPECT_EQ(r->owner, "");
  EXPECT_EQ(r->deadline, absl::InfiniteFuture());
}

TEST(ServerProtoConversionTest, GenerateMessagesOpenTheAssistantTurnAndSessionsSkipBos) {
  EncoderFixture f;
  v1::GenerateRequest proto;
  *proto.mutable_messages() = TwoMessages();
  auto fresh = GenerateRequestFromProto(proto, f.encoder, PyramidDefault());
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->prompt, PlainChat(*f.tokenizer, proto.messages(), true, true));
  EXPECT_FALSE(fresh->kv_policy.has_value());
  proto.set_session_id("sess-1");  // a continuation: no BOS
  auto cont = GenerateRequestFromProto(proto, f.encoder, PyramidDefault());
  ASSERT_TRUE(cont.ok()) << cont.status();
  EXPECT_EQ(cont->prompt, PlainChat(*f.tokenizer, proto.messages(), false, true));
  EXPECT_NE(cont->prompt, fresh->prompt);
}

TEST(ServerProtoConversionTest, BadGenerateRequestsAreInvalidArgument) {
  EncoderFixture f;
  struct Case {
    void (*set)(v1::GenerateRequest&);
    const char* message;
  };
  const Case cases[] = {
      {[](v1::GenerateRequest&) {}, "one of prompt, prompt_ids or messages is required"},
      // chat_template is checked before the input, which is empty here as well.
      {[](v1::GenerateRequest& r) {
         r.mutable_prompt_ids();
         r.set_chat_template("chatml");
       },
       "chat_template applies to messages only"},
      {[](v1::GenerateRequest& r) { r.mutable_prompt_ids()->add_ids(16); }, "outside the vocab"},
      {[](v1::GenerateRequest& r) {
         r.mutable_prompt_ids()->add_ids(3);
         r.mutable_sampling()->set_top_logprobs(21);
       },
       "top_logprobs"},
      {[](v1::GenerateRequest& r) {
         r.mutable_prompt_ids()->add_ids(3);
         r.mutable_kv_policy()->set_budget(-1);
       },
       "kv_policy.budget"},
      {[](v1::GenerateRequest& r) {
         r.mutable_prompt_ids()->add_ids(3);
         r.set_session_mode(v1::SESSION_MODE_APPEND);
       },
       "APPEND needs a session_id"},
      {[](v1::GenerateRequest& r) {
         r.mutable_prompt_ids()->add_ids(3);
         r.set_session_id("s");
         r.set_session_mode(static_cast<v1::SessionMode>(7));
       },
       "session_mode: unknown value"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest proto;
    c.set(proto);
    auto r = GenerateRequestFromProto(proto, f.encoder, PyramidDefault());
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_NE(r.status().message().find(c.message), absl::string_view::npos) << r.status();
  }
}

// Found by tests/fuzz/grpc_request_fuzzer: llama2 renders a system message only in front of a
// user message, so a continuation (no BOS) of system messages alone was accepted as an empty
// prompt; it is refused like an empty text prompt now.
TEST(ServerProtoConversionTest, MessagesThatRenderToNothingAreInvalidArgument) {
  EncoderFixture f;
  v1::GenerateRequest proto;
  v1::ChatMessage* sys = proto.mutable_messages()->add_messages();
  sys->set_role("system");
  sys->set_content("Be brief.");
  proto.set_chat_template("llama2");
  proto.set_session_id("sess-1");
  auto r = GenerateRequestFromProto(proto, f.encoder, PyramidDefault());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("empty prompt"), absl::string_view::npos) << r.status();
  proto.clear_session_id();  // with BOS the prompt is not empty
  auto fresh = GenerateRequestFromProto(proto, f.encoder, PyramidDefault());
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->prompt, std::vector<int32_t>{f.tokenizer->bos_id()});
}

TEST(ServerProtoConversionTest, CreateSessionRequestContextPolicyAndTtl) {
  EncoderFixture f;
  v1::CreateSessionRequest proto;
  *proto.mutable_messages() = TwoMessages();
  proto.set_ttl_seconds(90);
  proto.mutable_kv_policy()->set_method(v1::KV_METHOD_FULL);
  auto r = CreateSessionRequestFromProto(proto, f.encoder, PyramidDefault());
  ASSERT_TRUE(r.ok()) << r.status();
  // A session context is the conversation so far: BOS, no assistant opening.
  EXPECT_EQ(r->context, PlainChat(*f.tokenizer, proto.messages(), true, false));
  EXPECT_EQ(r->ttl, absl::Seconds(90));
  ASSERT_TRUE(r->kv_policy.has_value());
  EXPECT_EQ(r->kv_policy->method, KvMethod::kFull);
  EXPECT_EQ(r->owner, "");

  proto.set_ttl_seconds(-1);
  auto negative = CreateSessionRequestFromProto(proto, f.encoder, PyramidDefault());
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().message(), "ttl_seconds must be >= 0");

  v1::CreateSessionRequest ids;
  ids.mutable_prompt_ids()->add_ids(4);
  ids.set_chat_template("llama3");
  auto templ = CreateSessionRequestFromProto(ids, f.encoder, PyramidDefault());
  ASSERT_FALSE(templ.ok());
  EXPECT_EQ(templ.status().message(), "chat_template applies to messages only");
}

}  // namespace
}  // namespace funnel
