// FunnelClient and the server-facing CLI commands against an in-process fake Inference service:
// streaming, status mapping, API key metadata, deadlines, cancellation, sessions, JSON shapes.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/funnel_client.h"
#include "nlohmann/json.hpp"
#include "tests/testing/golden.h"
#include "tests/unit/cli/client_test_util.h"

namespace funnel {
namespace {

using ::funnel::testing::CommandResult;
using ::funnel::testing::RunFunnelBinary;

// Prompt text selects the behaviour; prompt ids are echoed back as max_tokens deltas.
class FakeInference final : public v1::Inference::Service {
 public:
  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    Record(context);
    const std::string id = request->request_id().empty() ? "req-1" : request->request_id();
    v1::GenerateResponse msg;
    msg.set_request_id(id);
    if (request->prompt() == "error") {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full");
    }
    if (request->prompt() == "nofinal") {
      msg.mutable_delta()->set_token_id(7);
      writer->Write(msg);
      return grpc::Status::OK;
    }
    if (request->prompt() == "slow") {
      for (int i = 0; i < 500 && !context->IsCancelled(); ++i) {
        msg.mutable_delta()->set_token_id(i);
        msg.mutable_delta()->set_text("x");
        writer->Write(msg);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (context->IsCancelled()) saw_cancel_ = true;
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    std::vector<int32_t> ids(request->prompt_ids().ids().begin(),
                             request->prompt_ids().ids().end());
    if (ids.empty()) ids = {1, 2, 3};
    const int n = request->sampling().has_max_tokens() ? request->sampling().max_tokens() : 16;
    for (int i = 0; i < n; ++i) {
      v1::TokenDelta* d = msg.mutable_delta();
      d->set_token_id(100 + i);
      d->set_text(absl::StrCat("t", i, " "));
      writer->Write(msg);
    }
    v1::GenerateFinal* f = msg.mutable_final();
    f->set_finish_reason(v1::FINISH_REASON_LENGTH);
    f->set_text("!");
    f->mutable_prompt_ids()->Assign(ids.begin(), ids.end());
    v1::Usage* u = f->mutable_usage();
    u->set_prompt_tokens(static_cast<int64_t>(ids.size()));
    u->set_completion_tokens(n);
    for (int l = 0; l < 5; ++l) u->add_kv_entries_per_layer(static_cast<int64_t>(ids.size()));
    u->mutable_timings()->set_prefill_ms(2.0);
    u->mutable_timings()->set_decode_ms(10.0);
    writer->Write(msg);
    return grpc::Status::OK;
  }

  grpc::Status Cancel(grpc::ServerContext* context, const v1::CancelRequest* request,
                      v1::CancelResponse*) override {
    Record(context);
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown request " + request->request_id());
  }

  grpc::Status CreateSession(grpc::ServerContext* context, const v1::CreateSessionRequest* request,
                             v1::Session* response) override {
    Record(context);
    response->set_session_id("s-1");
    response->set_tokens(request->prompt_ids().ids_size());
    for (int l = 0; l < 5; ++l) response->add_per_layer_tokens(request->prompt_ids().ids_size());
    response->set_kv_bytes(4096);
    *response->mutable_kv_policy() = request->kv_policy();
    last_ttl_ = request->ttl_seconds();
    return grpc::Status::OK;
  }

  grpc::Status GetSession(grpc::ServerContext* context, const v1::GetSessionRequest* request,
                          v1::Session* response) override {
    Record(context);
    if (request->session_id() != "s-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no session " + request->session_id());
    }
    response->set_session_id("s-1");
    response->set_tokens(9);
    return grpc::Status::OK;
  }

  grpc::Status ListSessions(grpc::ServerContext* context, const v1::ListSessionsRequest*,
                            v1::ListSessionsResponse* response) override {
    Record(context);
    response->add_sessions()->set_session_id("s-1");
    response->add_sessions()->set_session_id("s-2");
    return grpc::Status::OK;
  }

  grpc::Status DeleteSession(grpc::ServerContext* context, const v1::DeleteSessionRequest* request,
                             v1::DeleteSessionResponse*) override {
    Record(context);
    if (request->session_id() != "s-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no session " + request->session_id());
    }
    return grpc::Status::OK;
  }

  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    Record(context);
    *response->add_models() = Model();
    return grpc::Status::OK;
  }

  grpc::Status GetServerInfo(grpc::ServerContext* context, const v1::GetServerInfoRequest*,
                             v1::ServerInfo* response) override {
    Record(context);
    for (int i = 0; i < info_delay_ms_ && !context->IsCancelled(); i += 10) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    *response->mutable_model() = Model();
    response->mutable_default_kv_policy()->set_method(v1::KV_METHOD_FULL);
    response->set_block_size(16);
    response->set_pool_blocks(100);
    response->set_pool_bytes(100 * 1024);
    return grpc::Status::OK;
  }

  std::string last_authorization() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_authorization_;
  }
  std::atomic<bool> saw_cancel_{false};
  std::atomic<int> info_delay_ms_{0};
  std::atomic<int64_t> last_ttl_{-1};

 private:
  static v1::Model Model() {
    v1::Model m;
    m.set_id("fake");
    m.set_context_length(512);
    m.set_vocab_size(512);
    m.set_num_layers(5);
    return m;
  }
  void Record(grpc::ServerContext* context) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = context->client_metadata().find("authorization");
    last_authorization_ = it == context->client_metadata().end()
                              ? ""
                              : std::string(it->second.data(), it->second.size());
  }

  std::mutex mu_;
  std::string last_authorization_;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  std::string Address() const { return absl::StrCat("127.0.0.1:", port_); }
  std::unique_ptr<FunnelClient> Client(ClientOptions options = {}) {
    options.target = Address();
    auto c = FunnelClient::Create(options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  static v1::GenerateRequest IdsRequest(std::vector<int32_t> ids, int max_tokens) {
    v1::GenerateRequest r;
    r.mutable_prompt_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
    r.mutable_sampling()->set_max_tokens(max_tokens);
    return r;
  }
  static v1::GenerateRequest TextRequest(const std::string& text) {
    v1::GenerateRequest r;
    r.set_prompt(text);
    return r;
  }

  FakeInference service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST(FromGrpcStatus, CodesMapOneToOne) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  for (int code = 1; code <= 16; ++code) {
    absl::Status s = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(code), "m"));
    EXPECT_EQ(static_cast<int>(s.code()), code);
    EXPECT_EQ(s.message(), "m");
  }
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "")).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(FunnelClientCreate, RejectsBadOptions) {
  EXPECT_EQ(FunnelClient::Create({}).status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions o;
  o.target = "127.0.0.1:1";
  o.api_key = "bad key\n";
  EXPECT_EQ(FunnelClient::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, StreamsDeltasThenFinal) {
  auto client = Client();
  std::vector<int32_t> seen;
  GenerateOptions options;
  options.on_delta = [&](const v1::TokenDelta& d) {
    seen.push_back(d.token_id());
    return true;
  };
  absl::StatusOr<GenerateResult> r = client->Generate(IdsRequest({5, 6, 7}, 4), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->request_id, "req-1");
  EXPECT_EQ(r->output_ids, (std::vector<int32_t>{100, 101, 102, 103}));
  EXPECT_EQ(seen, r->output_ids);
  EXPECT_EQ(r->text, "t0 t1 t2 t3 !");
  EXPECT_EQ(r->final.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(FinishReasonName(r->final.finish_reason()), "length");
  EXPECT_EQ(r->final.prompt_ids_size(), 3);
  EXPECT_GT(r->ttft_ms, 0.0);
  EXPECT_GE(r->total_ms, r->ttft_ms);
}

TEST_F(ClientTest, SendsApiKeyAsBearerMetadata) {
  ClientOptions o;
  o.api_key = "sk-test-123";
  ASSERT_TRUE(Client(o)->GetServerInfo().ok());
  EXPECT_EQ(service_.last_authorization(), "Bearer sk-test-123");
  ASSERT_TRUE(Client(o)->Generate(IdsRequest({1}, 1)).ok());
  EXPECT_EQ(service_.last_authorization(), "Bearer sk-test-123");
  ASSERT_TRUE(Client()->ListSessions().ok());
  EXPECT_EQ(service_.last_authorization(), "");
}

TEST_F(ClientTest, ServerErrorsKeepTheirCode) {
  auto client = Client();
  absl::StatusOr<GenerateResult> r = client->Generate(TextRequest("error"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(r.status().message(), "queue full");
  EXPECT_EQ(client->GetSession("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client->DeleteSession("nope").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client->Cancel("r-9").code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, StreamWithoutFinalIsInternal) {
  absl::StatusOr<GenerateResult> r = Client()->Generate(TextRequest("nofinal"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
}

TEST_F(ClientTest, UnaryCallsHaveADeadline) {
  service_.info_delay_ms_ = 3000;
  ClientOptions o;
  o.unary_timeout = absl::Milliseconds(100);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(Client(o)->GetServerInfo().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(2000));
}

TEST_F(ClientTest, GenerateDeadlineEndsTheStream) {
  GenerateOptions options;
  options.timeout = absl::Milliseconds(150);
  absl::StatusOr<GenerateResult> r = Client()->Generate(TextRequest("slow"), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ClientTest, CallbackReturningFalseCancelsTheRpc) {
  int n = 0;
  GenerateOptions options;
  options.on_delta = [&](const v1::TokenDelta&) { return ++n < 3; };
  absl::StatusOr<GenerateResult> r = Client()->Generate(TextRequest("slow"), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(n, 3);
  for (int i = 0; i < 200 && !service_.saw_cancel_; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(service_.saw_cancel_) << "the server never saw the cancellation";
}

TEST_F(ClientTest, CancellerStopsAStreamFromAnotherThread) {
  auto client = Client();
  GenerateCanceller canceller;
  std::atomic<int> deltas{0};
  GenerateOptions options;
  options.canceller = &canceller;
  options.on_delta = [&](const v1::TokenDelta&) {
    ++deltas;
    return true;
  };
  absl::StatusOr<GenerateResult> r;
  std::thread t([&] { r = client->Generate(TextRequest("slow"), options); });
  while (deltas < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  canceller.Cancel();
  t.join();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(deltas.load(), 400);
  // Once cancelled, it stays cancelled: the next call fails without an RPC.
  EXPECT_EQ(client->Generate(IdsRequest({1}, 1), options).status().code(),
            absl::StatusCode::kCancelled);
}

TEST_F(ClientTest, SessionCalls) {
  auto client = Client();
  v1::CreateSessionRequest create;
  create.mutable_prompt_ids()->mutable_ids()->Add(3);
  create.mutable_prompt_ids()->mutable_ids()->Add(4);
  absl::StatusOr<v1::Session> s = client->CreateSession(create);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->session_id(), "s-1");
  EXPECT_EQ(s->tokens(), 2);
  ASSERT_TRUE(client->GetSession("s-1").ok());
  absl::StatusOr<std::vector<v1::Session>> list = client->ListSessions();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);
  EXPECT_TRUE(client->DeleteSession("s-1").ok());
  absl::StatusOr<std::vector<v1::Model>> models = client->ListModels();
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ(models->front().vocab_size(), 512);
}

TEST_F(ClientTest, UnreachableServerIsUnavailable) {
  ClientOptions o;
  o.target = "127.0.0.1:1";
  auto client = FunnelClient::Create(o);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->GetServerInfo().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*client)->Generate(IdsRequest({1}, 1)).status().code(),
            absl::StatusCode::kUnavailable);
}

// Every key of `expected` (recursively through objects) is in `actual` with the same JSON type.
void ExpectSameShape(const nlohmann::json& expected, const nlohmann::json& actual,
                     const std::string& path = "") {
  ASSERT_EQ(expected.type(), actual.type()) << path;
  if (!expected.is_object()) return;
  std::set<std::string> ek, ak;
  for (auto it = expected.begin(); it != expected.end(); ++it) ek.insert(it.key());
  for (auto it = actual.begin(); it != actual.end(); ++it) ak.insert(it.key());
  EXPECT_EQ(ek, ak) << path;
  for (const std::string& k : ek) {
    if (actual.contains(k)) ExpectSameShape(expected[k], actual[k], path + "/" + k);
  }
}

TEST_F(ClientTest, GenerateJsonHasTheShapeOfRunJson) {
  CommandResult run = RunFunnelBinary({"run", "--model", ::funnel::testing::Stories260KPath(),
                                       "--prompt-ids", "1,403,407", "--max-tokens", "3", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  CommandResult gen =
      RunFunnelBinary({"generate", "--server", Address(), "--prompt-ids", "1,403,407",
                       "--max-tokens", "3", "--json", "--api-key", "k1"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ(service_.last_authorization(), "Bearer k1");
  nlohmann::json r = nlohmann::json::parse(run.out);
  nlohmann::json g = nlohmann::json::parse(gen.out);  // stdout holds only the JSON
  ExpectSameShape(r, g);
  EXPECT_EQ(g["prompt_ids"], nlohmann::json({1, 403, 407}));
  EXPECT_EQ(g["output_ids"], nlohmann::json({100, 101, 102}));
  EXPECT_EQ(g["text"], "t0 t1 t2 !");
  EXPECT_EQ(g["finish_reason"], "length");
  EXPECT_EQ(g["kv"]["method"], "full");
  EXPECT_EQ(g["kv"]["per_layer_tokens"], nlohmann::json({3, 3, 3, 3, 3}));
  // 5 layers x one 16-token block of 1024 bytes.
  EXPECT_EQ(g["kv"]["kv_bytes"], 5 * 1024);
  EXPECT_EQ(g["kv"]["full_kv_bytes"], 3 * 5 * 64);
  EXPECT_DOUBLE_EQ(g["timings"]["decode_tok_s"].get<double>(), 2 * 1000.0 / 10.0);
}

TEST_F(ClientTest, GenerateStreamsTextWithoutJson) {
  CommandResult gen = RunFunnelBinary(
      {"generate", "--server", Address(), "--prompt-ids", "4", "--max-tokens", "2"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ(gen.out, "t0 t1 !\n");
}

TEST_F(ClientTest, GenerateReportsServerErrors) {
  CommandResult gen = RunFunnelBinary({"generate", "--server", Address(), "--prompt", "error"});
  EXPECT_EQ(gen.exit_code, 1);
  EXPECT_NE(gen.err.find("RESOURCE_EXHAUSTED: queue full"), std::string::npos) << gen.err;
  EXPECT_EQ(gen.out, "");
  CommandResult usage = RunFunnelBinary({"generate", "--server", Address()});
  EXPECT_EQ(usage.exit_code, 2);
  CommandResult append =
      RunFunnelBinary({"generate", "--server", Address(), "--prompt", "x", "--append"});
  EXPECT_EQ(append.exit_code, 2) << append.err;
}

TEST_F(ClientTest, ApiKeyFileIsRead) {
  const std::string path = ::testing::TempDir() + "/funnel_client_key";
  {
    std::ofstream f(path);
    f << "sk-from-file\n";
  }
  CommandResult r =
      RunFunnelBinary({"session", "list", "--server", Address(), "--api-key-file", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(service_.last_authorization(), "Bearer sk-from-file");
  CommandResult both = RunFunnelBinary(
      {"session", "list", "--server", Address(), "--api-key-file", path, "--api-key", "x"});
  EXPECT_EQ(both.exit_code, 2);
}

TEST_F(ClientTest, SessionCommands) {
  CommandResult create = RunFunnelBinary({"session", "create", "--server", Address(),
                                          "--prompt-ids", "1,2,3,4", "--ttl", "60", "--json"});
  ASSERT_EQ(create.exit_code, 0) << create.err;
  nlohmann::json j = nlohmann::json::parse(create.out);
  EXPECT_EQ(j, nlohmann::json({{"session_id", "s-1"},
                               {"tokens", 4},
                               {"per_layer_tokens", {4, 4, 4, 4, 4}},
                               {"kv_bytes", 4096}}));
  EXPECT_EQ(service_.last_ttl_, 60);
  CommandResult plain =
      RunFunnelBinary({"session", "create", "--server", Address(), "--prompt-ids", "1"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out, "s-1\n");

  CommandResult get = RunFunnelBinary({"session", "get", "--server", Address(), "--id", "s-1"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(nlohmann::json::parse(get.out)["tokens"], 9);

  CommandResult list = RunFunnelBinary({"session", "list", "--server", Address(), "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(nlohmann::json::parse(list.out)["sessions"].size(), 2u);

  CommandResult del = RunFunnelBinary({"session", "delete", "--server", Address(), "--id", "s-1"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  CommandResult missing =
      RunFunnelBinary({"session", "delete", "--server", Address(), "--id", "s-9"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("NOT_FOUND"), std::string::npos) << missing.err;
}

TEST_F(ClientTest, BenchPrintsFigures) {
  CommandResult r =
      RunFunnelBinary({"bench", "--server", Address(), "--concurrency", "3", "--requests", "7",
                       "--prompt-tokens", "5", "--max-tokens", "4", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["completed"], 7);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["output_tokens"], 28);
  EXPECT_EQ(j["short_responses"], 0);
  EXPECT_GT(j["requests_per_s"].get<double>(), 0.0);
  EXPECT_GT(j["output_tokens_per_s"].get<double>(), 0.0);
  for (const char* k : {"ttft_ms", "tpot_ms", "latency_ms"}) {
    for (const char* p : {"p50", "p90", "p99"}) EXPECT_TRUE(j[k][p].is_number()) << k << p;
  }
  // Not a terminal: no progress bar on stderr.
  EXPECT_EQ(r.err.find('#'), std::string::npos);

  CommandResult text = RunFunnelBinary({"bench", "--server", Address(), "--requests", "2",
                                        "--prompt-tokens", "5", "--max-tokens", "2"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("requests/s"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("ttft"), std::string::npos);

  CommandResult too_long = RunFunnelBinary(
      {"bench", "--server", Address(), "--prompt-tokens", "500", "--max-tokens", "100"});
  EXPECT_EQ(too_long.exit_code, 2) << too_long.err;
}

}  // namespace
}  // namespace funnel
