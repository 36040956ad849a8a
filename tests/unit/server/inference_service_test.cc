// The Inference service in process: an Engine over the fake model runner, served by a real
// grpc::Server on 127.0.0.1 (ephemeral port) and the admin HTTP listener, driven by the generated
// C++ client. Covers streaming on the callback API (order, backpressure, concurrency), client
// cancellation and deadlines reaching the engine, the Cancel RPC, draining, auth, and the
// engine-dead path (UNAVAILABLE, later requests refused before the engine, /ready false).
#include "server/inference_service.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "runtime/exec/fake_model_runner.h"
#include "server/admin_http.h"
#include "server/unparsable_request_interceptor.h"
#include "spdlog/spdlog.h"
#include "tests/unit/server/server_test_util.h"

namespace funnel {
namespace {

using ::funnel::testing::WaitUntil;

constexpr int32_t kVocab = 64;
// A request that runs for seconds on the fake runner slowed to kSlowStep per step: long enough
// that a request stopped by the server ends with far fewer than kLongTokens tokens.
constexpr int kLongTokens = 400;  // < the fake model's context (512)
constexpr absl::Duration kSlowStep = absl::Milliseconds(10);

// The fake runner's documented next token: (7 * token + 3 * position + 5) mod (vocab - 3) + 3,
// where position is the position of `token`.
std::vector<int32_t> ExpectedTokens(const std::vector<int32_t>& prompt, int n) {
  std::vector<int32_t> out;
  int64_t last = prompt.back();
  int64_t position = static_cast<int64_t>(prompt.size()) - 1;
  for (int i = 0; i < n; ++i) {
    last = (7 * last + 3 * position + 5) % (kVocab - 3) + 3;
    ++position;
    out.push_back(static_cast<int32_t>(last));
  }
  return out;
}

v1::GenerateRequest GreedyIds(const std::vector<int32_t>& ids, int max_tokens,
                              const std::string& request_id = "") {
  v1::GenerateRequest r;
  r.set_request_id(request_id);
  r.mutable_prompt_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_ignore_eos(true);
  return r;
}

// What one Generate call returned.
struct Streamed {
  std::vector<int32_t> tokens;
  std::vector<std::string> request_ids;  // of every message
  std::optional<v1::GenerateFinal> final;
  std::string x_request_id;  // initial metadata
  grpc::Status status;
};

class ServerInferenceServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::warn); }

  // Starts engine, service, gRPC server and admin HTTP. `keys` empty: open access.
  void Start(std::vector<std::string> keys = {}, EngineConfig engine_config = {}) {
    FakeRunnerOptions ro;
    ro.vocab_size = kVocab;
    ro.num_blocks = 4096;
    runner_ = std::make_unique<FakeModelRunner>(ro);
    tokenizer_ = ::funnel::testing::MakeWordTokenizer(kVocab);
    ASSERT_NE(tokenizer_, nullptr);
    engine_config.replica_id = "t0";
    auto engine = Engine::Create(engine_config, runner_.get(), tokenizer_.get());
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    encoder_ =
        std::make_unique<PromptEncoder>(*tokenizer_, ChatTemplate::FromName("plain", *tokenizer_));
    if (keys.empty()) {
      auth_ = std::make_unique<ApiKeyAuth>();
    } else {
      auto auth = ApiKeyAuth::FromKeys(keys);
      ASSERT_TRUE(auth.ok()) << auth.status();
      auth_ = std::make_unique<ApiKeyAuth>(*std::move(auth));
    }
    metrics_ = std::make_unique<ServerMetrics>([this] { return engine_->Stats(); });
    ServedModelInfo info;
    info.served_name = "fake";
    info.context_length = runner_->config().context_length;
    info.vocab_size = kVocab;
    info.num_layers = runner_->config().num_layers;
    info.block_size = runner_->block_size();
    info.block_bytes = runner_->block_bytes();
    info.pool_blocks = runner_->pool().num_blocks();
    info.replica_id = "t0";
    service_ = std::make_unique<InferenceService>(engine_.get(), encoder_.get(), auth_.get(),
                                                  metrics_.get(), info);
    StartGrpc();
    auto admin = AdminHttpServer::Start("127.0.0.1", 0,
                                        {.ready = [this] { return engine_->healthy(); },
                                         .metrics = [this] { return metrics_->Render(); }});
    ASSERT_TRUE(admin.ok()) << admin.status();
    admin_ = std::move(*admin);
  }

  void StartGrpc() {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(std::make_unique<UnparsableRequestInterceptorFactory>());
    builder.experimental().SetInterceptorCreators(std::move(creators));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Inference::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    admin_.reset();
    service_.reset();
    if (engine_ != nullptr) engine_->Shutdown(absl::ZeroDuration());
    engine_.reset();
    if (runner_ != nullptr) {
      EXPECT_EQ(runner_->pool().num_used(), 0) << "blocks leaked";
    }
  }

  // Runs a Generate to its end.
  Streamed Run(const v1::GenerateRequest& request, const std::string& key = "",
               std::optional<absl::Duration> timeout = std::nullopt) {
    grpc::ClientContext context;
    if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoMilliseconds(timeout.value_or(absl::Seconds(60))));
    Streamed out;
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse msg;
    bool metadata_read = false;
    while (reader->Read(&msg)) {
      if (!metadata_read) {
        out.x_request_id = InitialMetadata(context, "x-request-id");
        metadata_read = true;
      }
      out.request_ids.push_back(msg.request_id());
      if (msg.has_delta()) out.tokens.push_back(msg.delta().token_id());
      if (msg.has_final()) out.final = msg.final();
    }
    out.status = reader->Finish();
    return out;
  }

  static std::string InitialMetadata(const grpc::ClientContext& context, const std::string& key) {
    const auto& md = context.GetServerInitialMetadata();
    auto it = md.find(key);
    return it == md.end() ? "" : std::string(it->second.data(), it->second.size());
  }

  // GET on the admin port: (status, body); status -1 when nothing answered.
  std::pair<int, std::string> HttpGet(const std::string& path) {
    httplib::Client client("127.0.0.1", admin_->port());
    httplib::Result res = client.Get(path);
    if (!res) return {-1, ""};
    return {res->status, res->body};
  }

  double Rejections(const std::string& reason) {
    const std::string prefix = "funnel:request_rejections_total{reason=\"" + reason + "\"} ";
    const std::string text = metrics_->Render();
    const size_t at = text.find(prefix);
    if (at == std::string::npos) return 0;
    return std::stod(text.substr(at + prefix.size()));
  }

  // No request queued or running and no KV block in use (Stats is safe from any thread).
  bool EngineIdle() {
    const EngineStats s = engine_->Stats();
    return s.num_running == 0 && s.num_waiting == 0 && s.blocks_used == 0;
  }

  std::unique_ptr<FakeModelRunner> runner_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<PromptEncoder> encoder_;
  std::unique_ptr<ApiKeyAuth> auth_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<AdminHttpServer> admin_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

TEST_F(ServerInferenceServiceTest, StreamsTheEngineTokensThenTheFinalMessage) {
  Start();
  const std::vector<int32_t> prompt = {1, 5, 9};
  const Streamed s = Run(GreedyIds(prompt, 6, "mine-1"));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.tokens, ExpectedTokens(prompt, 6));
  ASSERT_TRUE(s.final.has_value());
  EXPECT_EQ(s.final->finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(s.final->usage().prompt_tokens(), 3);
  EXPECT_EQ(s.final->usage().completion_tokens(), 6);
  EXPECT_EQ(std::vector<int32_t>(s.final->prompt_ids().begin(), s.final->prompt_ids().end()),
            prompt);
  EXPECT_EQ(s.x_request_id, "mine-1");
  EXPECT_EQ(s.request_ids, std::vector<std::string>(7, "mine-1"));
  EXPECT_TRUE(WaitUntil([&] { return EngineIdle(); }));
}

TEST_F(ServerInferenceServiceTest, AssignedIdsComeFromTheReplica) {
  Start();
  const Streamed s = Run(GreedyIds({1, 4}, 2));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.x_request_id.rfind("req-t0-", 0), 0u) << s.x_request_id;
  EXPECT_EQ(s.request_ids, std::vector<std::string>(3, s.x_request_id));
}

TEST_F(ServerInferenceServiceTest, LongStreamKeepsOrderUnderBackpressure) {
  Start();
  // The engine produces far faster than one write at a time drains: tokens queue, in order.
  const std::vector<int32_t> prompt = {1, 7};
  const Streamed s = Run(GreedyIds(prompt, 400));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.tokens, ExpectedTokens(prompt, 400));
  ASSERT_TRUE(s.final.has_value());
  EXPECT_EQ(s.final->usage().completion_tokens(), 400);
}

TEST_F(ServerInferenceServiceTest, ConcurrentStreamsEachGetTheirOwnTokens) {
  Start();
  constexpr int kStreams = 16;
  std::vector<Streamed> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = Run(GreedyIds({1, 3 + i, 10 + i}, 20 + i)); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
    EXPECT_EQ(results[i].tokens, ExpectedTokens({1, 3 + i, 10 + i}, 20 + i)) << i;
  }
  EXPECT_TRUE(WaitUntil([&] { return EngineIdle(); }));
}

TEST_F(ServerInferenceServiceTest, ClientCancelDropsTheEngineRequest) {
  Start();
  runner_->set_step_delay(kSlowStep);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, GreedyIds({1, 5}, kLongTokens));
  v1::GenerateResponse msg;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&msg));
  EXPECT_GT(engine_->Stats().blocks_used, 0);
  context.TryCancel();
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // Nothing else happens on the client side: the server's OnCancel must stop the request.
  EXPECT_TRUE(WaitUntil([&] { return EngineIdle(); }));
  EXPECT_LT(engine_->Stats().generation_tokens_total, kLongTokens / 2);
}

TEST_F(ServerInferenceServiceTest, DeadlineEndsTheStreamAndTheEngineRequest) {
  Start();
  runner_->set_step_delay(kSlowStep);
  const Streamed s = Run(GreedyIds({1, 5}, kLongTokens), "", absl::Milliseconds(300));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_FALSE(s.final.has_value());
  EXPECT_TRUE(WaitUntil([&] { return EngineIdle(); }));
  EXPECT_LT(engine_->Stats().generation_tokens_total, kLongTokens / 2);
}

TEST_F(ServerInferenceServiceTest, CancelRpcEndsTheStreamWithCancelled) {
  Start();
  runner_->set_step_delay(kSlowStep);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, GreedyIds({1, 5}, kLongTokens, "to-cancel"));
  v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  {
    grpc::ClientContext cancel_context;
    v1::CancelRequest req;
    req.set_request_id("to-cancel");
    v1::CancelResponse resp;
    const grpc::Status st = stub_->Cancel(&cancel_context, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
  }
  while (reader->Read(&msg)) {
    EXPECT_FALSE(msg.has_final());
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The id is released before the status reaches the client.
  grpc::ClientContext again_context;
  v1::CancelRequest req;
  req.set_request_id("to-cancel");
  v1::CancelResponse resp;
  EXPECT_EQ(stub_->Cancel(&again_context, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(WaitUntil([&] { return EngineIdle(); }));
}

TEST_F(ServerInferenceServiceTest, DuplicateRunningIdIsAlreadyExists) {
  Start();
  runner_->set_step_delay(kSlowStep);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, GreedyIds({1, 5}, kLongTokens, "same"));
  v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  const Streamed second = Run(GreedyIds({1, 5}, 2, "same"));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  context.TryCancel();
  while (reader->Read(&msg)) {
  }
  reader->Finish();
  EXPECT_TRUE(WaitUntil([&] { return EngineIdle(); }));
}

TEST_F(ServerInferenceServiceTest, BadRequestsAreInvalidArgumentAndCounted) {
  Start();
  std::vector<v1::GenerateRequest> bad(4);
  bad[1].set_prompt("x");
  bad[1].mutable_sampling()->set_temperature(-1);
  bad[2].mutable_prompt_ids()->add_ids(kVocab);  // outside the vocabulary
  bad[3].set_prompt("x");
  bad[3].set_request_id("has space");
  for (const v1::GenerateRequest& r : bad) {
    EXPECT_EQ(Run(r).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << r.ShortDebugString();
  }
  EXPECT_EQ(Rejections("invalid_argument"), 4);
  EXPECT_EQ(runner_->num_steps(), 0);  // none reached the engine
  const Streamed ok = Run(GreedyIds({1, 4}, 2));
  EXPECT_TRUE(ok.status.ok());
}

TEST_F(ServerInferenceServiceTest, UnaryMethodsOnTheCallbackApi) {
  Start();
  grpc::ClientContext c1;
  v1::ServerInfo info;
  ASSERT_TRUE(stub_->GetServerInfo(&c1, v1::GetServerInfoRequest(), &info).ok());
  EXPECT_EQ(info.model().id(), "fake");
  EXPECT_EQ(info.replica_id(), "t0");
  EXPECT_EQ(info.pool_blocks(), 4096);
  EXPECT_EQ(info.pool_bytes(), 4096 * runner_->block_bytes());
  grpc::ClientContext c2;
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&c2, v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).vocab_size(), kVocab);
  grpc::ClientContext c3;
  v1::ListSessionsResponse sessions;
  ASSERT_TRUE(stub_->ListSessions(&c3, v1::ListSessionsRequest(), &sessions).ok());
  EXPECT_EQ(sessions.sessions_size(), 0);
  grpc::ClientContext c4;
  v1::GetSessionRequest get;
  get.set_session_id("sess-t0-0000000000000000");
  v1::Session session;
  EXPECT_EQ(stub_->GetSession(&c4, get, &session).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext c5;
  v1::CancelRequest cancel;
  cancel.set_request_id("never-was");
  v1::CancelResponse cancelled;
  EXPECT_EQ(stub_->Cancel(&c5, cancel, &cancelled).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerInferenceServiceTest, SessionsOverTheSyncMethodsAndForkOverGenerate) {
  Start();
  v1::CreateSessionRequest create;
  const std::vector<int32_t> context = {1, 8, 13, 21, 34};
  create.mutable_prompt_ids()->mutable_ids()->Assign(context.begin(), context.end());
  grpc::ClientContext c1;
  v1::Session session;
  ASSERT_TRUE(stub_->CreateSession(&c1, create, &session).ok());
  EXPECT_EQ(session.tokens(), 5);
  EXPECT_EQ(session.session_id().rfind("sess-t0-", 0), 0u) << session.session_id();
  v1::GenerateRequest ask = GreedyIds({40, 41}, 5);
  ask.set_session_id(session.session_id());
  const Streamed s = Run(ask);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.tokens, ExpectedTokens({1, 8, 13, 21, 34, 40, 41}, 5));
  EXPECT_EQ(s.final->usage().session_tokens_reused(), 5);
  grpc::ClientContext c2;
  v1::DeleteSessionRequest del;
  del.set_session_id(session.session_id());
  v1::DeleteSessionResponse deleted;
  EXPECT_TRUE(stub_->DeleteSession(&c2, del, &deleted).ok());
  EXPECT_TRUE(WaitUntil([&] { return EngineIdle(); }));
}

TEST_F(ServerInferenceServiceTest, KeysAreCheckedOnEveryMethod) {
  Start({"good-key", "other-key"});
  EXPECT_EQ(Run(GreedyIds({1, 4}, 2)).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Run(GreedyIds({1, 4}, 2), "bad-key").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Run(GreedyIds({1, 4}, 2), "good-key").status.ok());
  grpc::ClientContext c1;
  v1::ServerInfo info;
  EXPECT_EQ(stub_->GetServerInfo(&c1, v1::GetServerInfoRequest(), &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Rejections("unauthenticated"), 2);
  // Another key cannot cancel a running request: it does not exist for that key.
  runner_->set_step_delay(kSlowStep);
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer good-key");
  auto reader = stub_->Generate(&context, GreedyIds({1, 5}, kLongTokens, "owned"));
  v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  grpc::ClientContext c2;
  c2.AddMetadata("authorization", "Bearer other-key");
  v1::CancelRequest cancel;
  cancel.set_request_id("owned");
  v1::CancelResponse resp;
  EXPECT_EQ(stub_->Cancel(&c2, cancel, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext c3;
  c3.AddMetadata("authorization", "Bearer good-key");
  EXPECT_TRUE(stub_->Cancel(&c3, cancel, &resp).ok());
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitUntil([&] { return EngineIdle(); }));
}

TEST_F(ServerInferenceServiceTest, DrainingRefusesNewWorkAndLetsRunningStreamsFinish) {
  Start();
  runner_->set_step_delay(absl::Milliseconds(1));
  const std::vector<int32_t> prompt = {1, 6};
  Streamed running;
  std::atomic<bool> started{false};
  std::thread client([&] {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, GreedyIds(prompt, 200));
    v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
      started.store(true);
      if (msg.has_delta()) running.tokens.push_back(msg.delta().token_id());
      if (msg.has_final()) running.final = msg.final();
    }
    running.status = reader->Finish();
  });
  ASSERT_TRUE(WaitUntil([&] { return started.load(); }));
  // What funnel-server does on SIGTERM (main.cc Drain).
  service_->StartDraining();
  EXPECT_EQ(Run(GreedyIds({1, 4}, 2)).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::ClientContext c1;
  v1::CreateSessionRequest create;
  create.mutable_prompt_ids()->add_ids(1);
  v1::Session session;
  EXPECT_EQ(stub_->CreateSession(&c1, create, &session).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  engine_->Shutdown(absl::Seconds(60));  // returns once the running request has finished
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  client.join();
  ASSERT_TRUE(running.status.ok()) << running.status.error_message();
  EXPECT_EQ(running.tokens, ExpectedTokens(prompt, 200));
  ASSERT_TRUE(running.final.has_value());
  EXPECT_EQ(running.final->usage().completion_tokens(), 200);
}

TEST_F(ServerInferenceServiceTest, ServerShutdownCancelsStreamsAndFreesTheirBlocks) {
  Start();
  runner_->set_step_delay(kSlowStep);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, GreedyIds({1, 5}, kLongTokens));
  v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  while (reader->Read(&msg)) {
  }
  EXPECT_FALSE(reader->Finish().ok());
  EXPECT_TRUE(WaitUntil([&] { return EngineIdle(); }));
  EXPECT_LT(engine_->Stats().generation_tokens_total, kLongTokens / 2);
}

TEST_F(ServerInferenceServiceTest, EngineDeathIsUnavailableAndTurnsReadinessOff) {
  Start();
  EXPECT_EQ(HttpGet("/ready").first, 200);
  EXPECT_TRUE(Run(GreedyIds({1, 4}, 2)).status.ok());
  const int64_t steps_before = runner_->num_steps();

  runner_->FailNextStep(absl::InternalError("device lost"));
  const Streamed dying = Run(GreedyIds({1, 5}, 8));
  EXPECT_EQ(dying.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << dying.status.error_message();
  EXPECT_FALSE(dying.final.has_value());
  EXPECT_FALSE(engine_->healthy());

  // Later requests are refused before they reach the engine thread: no step runs for them.
  const double unavailable_before = Rejections("unavailable");
  EXPECT_EQ(unavailable_before, 0);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Run(GreedyIds({1, 6}, 4)).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  EXPECT_EQ(Rejections("unavailable"), unavailable_before + 3);
  EXPECT_EQ(runner_->num_steps(), steps_before);  // the failed step is not counted either
  grpc::ClientContext c1;
  v1::CreateSessionRequest create;
  create.mutable_prompt_ids()->add_ids(1);
  v1::Session session;
  EXPECT_EQ(stub_->CreateSession(&c1, create, &session).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Rejections("unavailable"), unavailable_before + 4);

  // The admin port: the process is alive, but not ready.
  EXPECT_EQ(HttpGet("/health").first, 200);
  const auto ready = HttpGet("/ready");
  EXPECT_EQ(ready.first, 503);
  EXPECT_EQ(ready.second, "not ready\n");
  const auto metrics = HttpGet("/metrics");
  EXPECT_EQ(metrics.first, 200);
  EXPECT_NE(metrics.second.find("funnel:request_rejections_total{reason=\"unavailable\"} 4\n"),
            std::string::npos)
      << metrics.second;
}

}  // namespace
}  // namespace funnel
