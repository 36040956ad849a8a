// The gateway over HTTP (cpp-httplib client) in front of in-process fake Inference services on
// 127.0.0.1: JSON and SSE responses, status mapping with Retry-After, auth and key forwarding,
// body limits, routing (least loaded, session owner, retry after UNAVAILABLE), cancellation of
// the upstream generation when a streaming client goes away, n > 1 fan-out, metrics and health.
#include "server/gateway/gateway_server.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "server/auth.h"
#include "server/gateway/backend_pool.h"
#include "server/gateway/gateway_metrics.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

// The prompt (or the last message's content) selects the behaviour.
class FakeBackend final : public v1::Inference::Service {
 public:
  FakeBackend(std::string replica, std::string model)
      : replica_(std::move(replica)), model_(std::move(model)) {}

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    Record(*context, request->request_id());
    generate_calls_.fetch_add(1);
    const std::string input = request->has_messages() && request->messages().messages_size() > 0
                                  ? request->messages().messages(0).content()
                                  : request->prompt();
    const grpc::StatusCode fail_with = fail_with_.load();
    if (input == "busy" || fail_with != grpc::StatusCode::OK) {
      const grpc::StatusCode code =
          fail_with != grpc::StatusCode::OK ? fail_with : grpc::StatusCode::RESOURCE_EXHAUSTED;
      return grpc::Status(code, "queue is full");
    }
    if (input == "bad") return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prompt too long");
    if (input == "late") return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline");
    v1::GenerateResponse msg;
    msg.set_request_id(request->request_id());
    if (input == "slow") return Slow(context, writer, msg);
    const int n = request->sampling().has_max_tokens() ? request->sampling().max_tokens() : 16;
    for (int i = 0; i < n; ++i) {
      v1::TokenDelta* d = msg.mutable_delta();
      d->set_token_id(100 + i);
      d->set_text(input == "seed" ? absl::StrCat("seed=", request->sampling().seed())
                                  : absl::StrCat("t", i, " "));
      d->mutable_logprob()->set_text(d->text());
      d->mutable_logprob()->set_logprob(-0.5f);
      writer->Write(msg);
      if (input == "midfail" && i == 1) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "preempted");
      }
    }
    v1::GenerateFinal* f = msg.mutable_final();
    f->set_finish_reason(v1::FINISH_REASON_LENGTH);
    f->set_text("!");
    f->mutable_usage()->set_prompt_tokens(3);
    f->mutable_usage()->set_session_tokens_reused(request->session_id().empty() ? 0 : 7);
    f->mutable_usage()->set_completion_tokens(n);
    writer->Write(msg);
    return grpc::Status::OK;
  }

  grpc::Status CreateSession(grpc::ServerContext* context, const v1::CreateSessionRequest*,
                             v1::Session* response) override {
    Record(*context, "");
    response->set_session_id(SessionId());
    response->set_tokens(11);
    response->set_kv_bytes(4096);
    return grpc::Status::OK;
  }

  grpc::Status GetSession(grpc::ServerContext* context, const v1::GetSessionRequest* request,
                          v1::Session* response) override {
    Record(*context, "");
    if (request->session_id() != SessionId()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no session " + request->session_id());
    }
    response->set_session_id(SessionId());
    response->set_tokens(11);
    return grpc::Status::OK;
  }

  grpc::Status DeleteSession(grpc::ServerContext* context, const v1::DeleteSessionRequest* request,
                             v1::DeleteSessionResponse*) override {
    Record(*context, "");
    if (request->session_id() != SessionId()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no session " + request->session_id());
    }
    return grpc::Status::OK;
  }

  grpc::Status ListSessions(grpc::ServerContext* context, const v1::ListSessionsRequest*,
                            v1::ListSessionsResponse* response) override {
    Record(*context, "");
    response->add_sessions()->set_session_id(SessionId());
    return grpc::Status::OK;
  }

  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    Record(*context, "");
    response->add_models()->set_id(model_);
    return grpc::Status::OK;
  }

  grpc::Status GetServerInfo(grpc::ServerContext*, const v1::GetServerInfoRequest*,
                             v1::ServerInfo* response) override {
    response->set_replica_id(replica_);
    response->mutable_model()->set_id(model_);
    return grpc::Status::OK;
  }

  std::string SessionId() const { return "sess-" + replica_ + "-00000000000000aa"; }
  std::string last_authorization() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_authorization_;
  }
  std::vector<std::string> request_ids() {
    std::lock_guard<std::mutex> lock(mu_);
    return request_ids_;
  }
  int generate_calls() const { return generate_calls_.load(); }
  bool saw_cancel() const { return saw_cancel_.load(); }
  void FailEveryGenerate(grpc::StatusCode code) { fail_with_ = code; }

 private:
  grpc::Status Slow(grpc::ServerContext* context, grpc::ServerWriter<v1::GenerateResponse>* writer,
                    v1::GenerateResponse& msg) {
    for (int i = 0; i < 4000 && !context->IsCancelled(); ++i) {
      msg.mutable_delta()->set_token_id(i);
      msg.mutable_delta()->set_text("x");
      if (!writer->Write(msg)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    saw_cancel_.store(context->IsCancelled());
    return grpc::Status::CANCELLED;
  }

  void Record(const grpc::ServerContext& context, const std::string& request_id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = context.client_metadata().find("authorization");
    last_authorization_ = it == context.client_metadata().end()
                              ? std::string()
                              : std::string(it->second.data(), it->second.size());
    if (!request_id.empty()) request_ids_.push_back(request_id);
  }

  const std::string replica_;
  const std::string model_;
  std::atomic<grpc::StatusCode> fail_with_{grpc::StatusCode::OK};
  std::atomic<int> generate_calls_{0};
  std::atomic<bool> saw_cancel_{false};
  std::mutex mu_;
  std::string last_authorization_;
  std::vector<std::string> request_ids_;
};

struct RunningBackend {
  std::unique_ptr<FakeBackend> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

RunningBackend StartBackend(const std::string& replica, const std::string& model) {
  RunningBackend b;
  b.service = std::make_unique<FakeBackend>(replica, model);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &b.port);
  builder.RegisterService(b.service.get());
  b.server = builder.BuildAndStart();
  return b;
}

// One gateway in front of `replicas` fake backends (model "m"), all probed up.
class GatewayTest : public ::testing::Test {
 protected:
  void Start(int replicas, std::vector<std::string> keys = {}, int64_t max_body = 1 << 20) {
    std::vector<std::string> addresses;
    for (int i = 0; i < replicas; ++i) {
      backends_.push_back(StartBackend(absl::StrCat("r", i), "m"));
      addresses.push_back(absl::StrCat("127.0.0.1:", backends_.back().port));
    }
    if (!keys.empty()) auth_ = *ApiKeyAuth::FromKeys(keys);
    BackendPool::Options o;
    o.probe_interval = absl::Hours(1);  // the test probes by hand
    o.max_backoff = absl::Hours(1);
    pool_ = std::make_unique<BackendPool>(addresses, o);
    pool_->ProbeDue(absl::Now());
    metrics_ = std::make_unique<GatewayMetrics>([this] { return pool_->Snapshot(); });
    GatewayServerOptions options;
    options.max_body_bytes = max_body;
    options.http_threads = 8;
    auto server = GatewayServer::Start(options, pool_.get(), &auth_, metrics_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    gateway_ = std::move(*server);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", gateway_->port());
    client_->set_read_timeout(30, 0);
  }

  void TearDown() override {
    client_.reset();
    if (gateway_) gateway_->Stop();
    for (auto& b : backends_) b.server->Shutdown();
  }

  httplib::Result Post(const std::string& path, const Json& body, httplib::Headers headers = {}) {
    return client_->Post(path.c_str(), headers, body.dump(), "application/json");
  }

  static Json Body(const httplib::Result& r) { return Json::parse(r->body); }

  // The JSON payloads of an SSE body, [DONE] as the string "[DONE]"; fails on bad framing.
  static std::vector<Json> Events(const std::string& body) {
    std::vector<Json> events;
    EXPECT_TRUE(absl::EndsWith(body, "\n\n")) << body;
    for (absl::string_view block : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
      EXPECT_TRUE(absl::StartsWith(block, "data: ")) << block;
      const std::string payload(block.substr(6));
      events.push_back(payload == "[DONE]" ? Json("[DONE]") : Json::parse(payload));
    }
    return events;
  }

  Json Chat(const std::string& content, Json extra = Json::object()) {
    Json body = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", content}}}}};
    body.update(extra);
    return body;
  }

  std::vector<RunningBackend> backends_;
  ApiKeyAuth auth_;
  std::unique_ptr<BackendPool> pool_;
  std::unique_ptr<GatewayMetrics> metrics_;
  std::unique_ptr<GatewayServer> gateway_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(GatewayTest, ChatCompletionJson) {
  Start(1);
  auto r = Post("/v1/chat/completions", Chat("hello", {{"max_tokens", 3}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Json j = Body(r);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "t0 t1 t2 !");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  const std::string id = r->get_header_value("X-Request-Id");
  EXPECT_TRUE(absl::StartsWith(id, "chatcmpl-")) << id;
  EXPECT_EQ(j["id"], id);
  // The upstream request carries the response id (log correlation).
  EXPECT_EQ(backends_[0].service->request_ids().back(), id + "-0");
}

TEST_F(GatewayTest, StreamingSseFraming) {
  Start(1);
  auto r = Post(
      "/v1/chat/completions",
      Chat("hello",
           {{"max_tokens", 2}, {"stream", true}, {"stream_options", {{"include_usage", true}}}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const std::vector<Json> events = Events(r->body);
  // role, t0, t1, "!" text, finish, usage, [DONE]
  ASSERT_EQ(events.size(), 7u) << r->body;
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(events[1]["choices"][0]["delta"]["content"], "t0 ");
  EXPECT_EQ(events[2]["choices"][0]["delta"]["content"], "t1 ");
  EXPECT_EQ(events[3]["choices"][0]["delta"]["content"], "!");
  EXPECT_EQ(events[4]["choices"][0]["finish_reason"], "length");
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(events[static_cast<size_t>(i)]["object"], "chat.completion.chunk");
    EXPECT_TRUE(events[static_cast<size_t>(i)]["usage"].is_null());
  }
  EXPECT_TRUE(events[5]["choices"].empty());
  EXPECT_EQ(events[5]["usage"]["completion_tokens"], 2);
  EXPECT_EQ(events[6], "[DONE]");
}

TEST_F(GatewayTest, CompletionsStreamWithLogprobs) {
  Start(1);
  auto r = Post(
      "/v1/completions",
      {{"model", "m"}, {"prompt", "hello"}, {"max_tokens", 2}, {"stream", true}, {"logprobs", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::vector<Json> events = Events(r->body);
  ASSERT_EQ(events.size(), 5u) << r->body;  // t0, t1, "!", finish, [DONE]
  EXPECT_EQ(events[0]["object"], "text_completion");
  EXPECT_EQ(events[0]["choices"][0]["text"], "t0 ");
  EXPECT_EQ(events[1]["choices"][0]["logprobs"]["tokens"], Json::array({"t1 "}));
  EXPECT_EQ(events[1]["choices"][0]["logprobs"]["text_offset"], Json::array({3}));
  EXPECT_FALSE(events[0].contains("usage"));
  EXPECT_EQ(events[3]["choices"][0]["finish_reason"], "length");
}

TEST_F(GatewayTest, FanOutGivesIndexedChoicesWithConsecutiveSeeds) {
  Start(1);
  auto r = Post("/v1/chat/completions", Chat("seed", {{"max_tokens", 1}, {"n", 3}, {"seed", 5}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Json j = Body(r);
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][static_cast<size_t>(i)]["index"], i);
    EXPECT_EQ(j["choices"][static_cast<size_t>(i)]["message"]["content"],
              absl::StrCat("seed=", 5 + i, "!"));
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);      // the prompt once
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);  // every choice
  EXPECT_EQ(backends_[0].service->generate_calls(), 3);
}

TEST_F(GatewayTest, UpstreamErrorsMapToHttpStatuses) {
  Start(1);
  auto busy = Post("/v1/chat/completions", Chat("busy"));
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 429);
  EXPECT_EQ(busy->get_header_value("Retry-After"), "1");
  EXPECT_EQ(Body(busy)["error"]["message"], "queue is full");
  EXPECT_EQ(Body(busy)["error"]["type"], "rate_limit_error");
  // Streaming requests that fail before their first token get the same status.
  auto busy_stream = Post("/v1/chat/completions", Chat("busy", {{"stream", true}}));
  ASSERT_TRUE(busy_stream);
  EXPECT_EQ(busy_stream->status, 429);
  EXPECT_EQ(Body(busy_stream)["error"]["code"], "rate_limit_exceeded");
  auto bad = Post("/v1/completions", {{"model", "m"}, {"prompt", "bad"}});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(Body(bad)["error"]["message"], "prompt too long");
  auto late = Post("/v1/completions", {{"model", "m"}, {"prompt", "late"}});
  ASSERT_TRUE(late);
  EXPECT_EQ(late->status, 504);
  auto model = Post("/v1/completions", {{"model", "other"}, {"prompt", "hello"}});
  ASSERT_TRUE(model);
  EXPECT_EQ(model->status, 404);
  EXPECT_EQ(Body(model)["error"]["code"], "model_not_found");
}

TEST_F(GatewayTest, MidStreamErrorIsAnErrorEventThenDone) {
  Start(1);
  auto r = Post("/v1/chat/completions", Chat("midfail", {{"max_tokens", 5}, {"stream", true}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const std::vector<Json> events = Events(r->body);
  ASSERT_EQ(events.size(), 5u) << r->body;  // role, t0, t1, error, [DONE]
  EXPECT_EQ(events[3]["error"]["message"], "preempted");
  EXPECT_EQ(events[4], "[DONE]");
}

TEST_F(GatewayTest, BadInputIs400AndTheGatewayKeepsServing) {
  Start(1, {}, /*max_body=*/4096);
  const std::string bodies[] = {"{", "[1,2]", "{\"model\": \"m\", \"prompt\": \"\xff\"}",
                                "{\"model\": \"m\", \"prompt\": 5}", std::string(200, '[')};
  for (const std::string& body : bodies) {
    auto r = client_->Post("/v1/completions", body, "application/json");
    ASSERT_TRUE(r) << body;
    EXPECT_EQ(r->status, 400) << body;
    EXPECT_TRUE(Body(r)["error"]["message"].is_string()) << r->body;
  }
  auto big = client_->Post("/v1/completions", std::string(8000, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  EXPECT_EQ(Body(big)["error"]["code"], "request_too_large");
  auto nowhere = client_->Get("/v1/nowhere");
  ASSERT_TRUE(nowhere);
  EXPECT_EQ(nowhere->status, 404);
  EXPECT_TRUE(Body(nowhere)["error"]["message"].is_string());
  auto ok = Post("/v1/completions", {{"model", "m"}, {"prompt", "hello"}, {"max_tokens", 1}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST_F(GatewayTest, KeysAreCheckedAndForwarded) {
  Start(1, {"k-good"});
  auto none = Post("/v1/chat/completions", Chat("hello"));
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(Body(none)["error"]["code"], "invalid_api_key");
  auto wrong = Post("/v1/chat/completions", Chat("hello"), {{"Authorization", "Bearer k-bad"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  EXPECT_EQ(backends_[0].service->generate_calls(), 0);
  auto good = Post("/v1/chat/completions", Chat("hello", {{"max_tokens", 1}}),
                   {{"Authorization", "Bearer k-good"}});
  ASSERT_TRUE(good);
  EXPECT_EQ(good->status, 200) << good->body;
  EXPECT_EQ(backends_[0].service->last_authorization(), "Bearer k-good");
  // Health and metrics stay open.
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(GatewayTest, OpenGatewayForwardsAnyBearerKey) {
  Start(1);
  auto r = Post("/v1/completions", {{"model", "m"}, {"prompt", "hello"}, {"max_tokens", 1}},
                {{"Authorization", "bearer  sk-123 "}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(backends_[0].service->last_authorization(), "Bearer sk-123");
  auto malformed = Post("/v1/completions", {{"model", "m"}, {"prompt", "hello"}},
                        {{"Authorization", "Basic abc"}});
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->status, 401);
}

TEST_F(GatewayTest, ClientDisconnectCancelsTheUpstreamGeneration) {
  Start(1);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = Json({{"model", "m"}, {"prompt", "slow"}, {"stream", true}}).dump();
  req.set_header("Content-Type", "application/json");
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  client_->send(req, res, error);  // returns once the receiver refuses more (connection closed)
  EXPECT_EQ(chunks, 3);
  // Bounded wait for the fake to observe the cancellation (it stops at 4000 tokens otherwise).
  FakeBackend& fake = *backends_[0].service;
  for (int i = 0; i < 10000 && !fake.saw_cancel(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(fake.saw_cancel());
  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  for (int i = 0; i < 10000 && !absl::StrContains(metrics->body, "stream_disconnects_total 1");
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    metrics = client_->Get("/metrics");
  }
  EXPECT_TRUE(absl::StrContains(metrics->body, "funnel_gateway:stream_disconnects_total 1"));
}

TEST_F(GatewayTest, PlainRequestsSpreadAndSessionsGoToTheirOwner) {
  Start(2);
  for (int i = 0; i < 4; ++i) {
    auto r = Post("/v1/completions", {{"model", "m"}, {"prompt", "hello"}, {"max_tokens", 1}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
  }
  EXPECT_EQ(backends_[0].service->generate_calls(), 2);
  EXPECT_EQ(backends_[1].service->generate_calls(), 2);
  const std::string session = backends_[1].service->SessionId();
  for (int i = 0; i < 3; ++i) {
    auto r =
        Post("/v1/completions",
             {{"model", "m"}, {"prompt", "hello"}, {"max_tokens", 1}, {"session_id", session}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(Body(r)["usage"]["prompt_tokens_details"]["cached_tokens"], 7);
    EXPECT_EQ(Body(r)["usage"]["prompt_tokens"], 10);
  }
  EXPECT_EQ(backends_[1].service->generate_calls(), 5);
  auto lost =
      Post("/v1/completions",
           {{"model", "m"}, {"prompt", "hello"}, {"session_id", "sess-r9-00000000000000aa"}});
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->status, 404);
}

TEST_F(GatewayTest, UnavailableBackendIsMarkedDownAndTheRequestRetried) {
  Start(2);
  backends_[0].service->FailEveryGenerate(grpc::StatusCode::UNAVAILABLE);
  for (int i = 0; i < 3; ++i) {
    auto r = Post("/v1/completions", {{"model", "m"}, {"prompt", "hello"}, {"max_tokens", 1}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  EXPECT_EQ(backends_[0].service->generate_calls(), 1);  // then down: no more traffic
  EXPECT_EQ(backends_[1].service->generate_calls(), 3);
  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_TRUE(absl::StrContains(
      metrics->body,
      absl::StrCat("funnel_gateway:backend_up{backend=\"127.0.0.1:", backends_[0].port, "\"} 0")));
  EXPECT_TRUE(absl::StrContains(metrics->body, "funnel_gateway:upstream_retries_total 1"));
  // A session on the down replica is unavailable (503), not lost.
  auto session = Post(
      "/v1/completions",
      {{"model", "m"}, {"prompt", "hello"}, {"session_id", backends_[0].service->SessionId()}});
  ASSERT_TRUE(session);
  EXPECT_EQ(session->status, 503);
  EXPECT_EQ(session->get_header_value("Retry-After"), "1");
}

TEST_F(GatewayTest, EveryBackendDownIs503AndHealthSaysSo) {
  Start(1);
  backends_[0].service->FailEveryGenerate(grpc::StatusCode::UNAVAILABLE);
  auto r = Post("/v1/completions", {{"model", "m"}, {"prompt", "hello"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(Body(r)["error"]["message"], "queue is full");  // the backend's own reason
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_EQ(Body(health)["backends_up"], 0);
}

TEST_F(GatewayTest, SessionResourceRoutes) {
  Start(2);
  auto created = Post("/v1/sessions", {{"model", "m"}, {"prompt", "A long document"}});
  ASSERT_TRUE(created);
  ASSERT_EQ(created->status, 200) << created->body;
  const std::string id = Body(created)["id"];
  EXPECT_EQ(Body(created)["object"], "session");
  EXPECT_EQ(Body(created)["tokens"], 11);
  EXPECT_EQ(Body(created)["kv_bytes"], 4096);
  auto got = client_->Get(("/v1/sessions/" + id).c_str());
  ASSERT_TRUE(got);
  EXPECT_EQ(got->status, 200) << got->body;
  EXPECT_EQ(Body(got)["id"], id);
  auto listed = client_->Get("/v1/sessions");
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->status, 200);
  EXPECT_EQ(Body(listed)["object"], "list");
  ASSERT_EQ(Body(listed)["data"].size(), 2u);  // one session on each replica
  EXPECT_EQ(Body(listed)["data"][0]["model"], "m");
  auto deleted = client_->Delete(("/v1/sessions/" + id).c_str());
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->status, 200);
  EXPECT_EQ(Body(deleted)["deleted"], true);
  // The owner is known, so another replica's id is not found there: 404.
  const std::string other = id.find("-r0-") != std::string::npos ? "sess-r1-0000000000000001"
                                                                 : "sess-r0-0000000000000001";
  auto missing = client_->Get(("/v1/sessions/" + other).c_str());
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(Body(missing)["error"]["code"], "session_not_found");
  auto bad = Post("/v1/sessions", {{"model", "m"}});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

TEST_F(GatewayTest, ModelsHealthAndMetrics) {
  Start(2);
  auto models = client_->Get("/v1/models");
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200);
  const Json m = Body(models);
  ASSERT_EQ(m["data"].size(), 1u);  // both replicas serve "m": listed once
  EXPECT_EQ(m["data"][0]["id"], "m");
  EXPECT_EQ(m["data"][0]["object"], "model");
  auto one = client_->Get("/v1/models/m");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  auto none = client_->Get("/v1/models/zz");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 404);
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(Body(health)["backends_up"], 2);
  EXPECT_EQ(Body(health)["backends"][1]["replica_id"], "r1");
  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_TRUE(absl::StrContains(
      metrics->body, "funnel_gateway:requests_total{route=\"/v1/models\",status=\"200\"} 1"))
      << metrics->body;
  EXPECT_TRUE(absl::StrContains(
      metrics->body, "funnel_gateway:requests_total{route=\"/v1/models/{id}\",status=\"404\"} 1"));
  EXPECT_TRUE(absl::StrContains(metrics->body, "funnel_gateway:requests_in_flight 0"));
  EXPECT_TRUE(absl::StrContains(
      metrics->body, "funnel_gateway:request_duration_seconds_count{route=\"/v1/models\"} 1"));
}

}  // namespace
}  // namespace funnel
