// Sessions on the fake runner: creation, forks, append mode, owner scoping, TTL, deletion.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "runtime/engine/engine.h"
#include "runtime/exec/fake_model_runner.h"
#include "spdlog/spdlog.h"
#include "tests/unit/engine/engine_test_util.h"

namespace funnel {
namespace {

using ::funnel::testing::Collect;
using ::funnel::testing::Collected;
using ::funnel::testing::MakeRequest;
using ::funnel::testing::WaitFor;

std::vector<int32_t> Ids(int n, int seed = 0) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(3 + (i * 7 + seed * 13) % 60);
  return p;
}

CreateSessionRequest SessionRequest(std::vector<int32_t> context, std::string owner,
                                    absl::Duration ttl = absl::ZeroDuration()) {
  CreateSessionRequest r;
  r.context = std::move(context);
  r.owner = std::move(owner);
  r.ttl = ttl;
  return r;
}

GenerateRequest SessionGenerate(const std::string& session_id, std::string owner,
                                std::vector<int32_t> suffix, int32_t max_tokens,
                                SessionMode mode = SessionMode::kFork) {
  GenerateRequest r = MakeRequest(std::move(suffix), max_tokens);
  r.session_id = session_id;
  r.owner = std::move(owner);
  r.session_mode = mode;
  return r;
}

class EngineSessionTest : public ::funnel::testing::FakeEngineTest {
 protected:
  SessionInfo Create(std::vector<int32_t> context, const std::string& owner,
                     absl::Duration ttl = absl::ZeroDuration()) {
    auto s = engine_->CreateSession(SessionRequest(std::move(context), owner, ttl));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : SessionInfo{};
  }

  Collected Run(GenerateRequest r) {
    auto s = engine_->Submit(std::move(r));
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return {};
    return Collect(**s);
  }
};

TEST_F(EngineSessionTest, CreateDescribesTheSession) {
  StartEngine();
  SessionInfo s = Create(Ids(20), "alice");
  EXPECT_EQ(s.session_id.rfind("sess-r0-", 0), 0u) << s.session_id;
  EXPECT_EQ(s.session_id.size(), std::string("sess-r0-").size() + 16);
  EXPECT_EQ(s.owner, "alice");
  EXPECT_EQ(s.tokens, 20);
  EXPECT_EQ(s.per_layer_tokens, std::vector<int64_t>(4, 20));
  EXPECT_EQ(s.kv_bytes, 4 * 5 * runner_->block_bytes());
  EXPECT_GT(s.expires, s.created);
  EXPECT_EQ(engine_->Stats().num_sessions, 1);
  EXPECT_EQ(engine_->Stats().blocks_used, 20);
}

TEST_F(EngineSessionTest, CompressedSessionKeepsItsBudget) {
  StartEngine();
  CreateSessionRequest r = SessionRequest(Ids(40), "alice");
  r.kv_policy = KvPolicy{.method = KvMethod::kPyramidKv, .budget = 16, .window = 4};
  auto s = engine_->CreateSession(r);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->tokens, 40);
  int64_t stored = 0;
  for (int64_t n : s->per_layer_tokens) stored += n;
  EXPECT_EQ(stored, 4 * 16);
  EXPECT_GT(s->per_layer_tokens.front(), s->per_layer_tokens.back());
  EXPECT_EQ(s->kv_policy.method, KvMethod::kPyramidKv);
  EXPECT_LT(engine_->Stats().compression_ratio, 0.5);
  // A question continues at the session's logical length.
  const std::vector<int32_t> q = Ids(3, 5);
  Collected c = Run(SessionGenerate(s->session_id, "alice", q, 4));
  ASSERT_TRUE(c.final.status.ok()) << c.final.status;
  EXPECT_EQ(c.tokens, Chain(q.back(), 42, 4));
}

TEST_F(EngineSessionTest, ForksShareTheSessionAndLeaveItUnchanged) {
  StartEngine();
  SessionInfo s = Create(Ids(18), "alice");  // 18 entries: a partial last block per layer
  const int32_t session_blocks = runner_->pool().num_used();
  const std::vector<int32_t> q = Ids(3, 1);
  Collected c = Run(SessionGenerate(s.session_id, "alice", q, 5));
  ASSERT_TRUE(c.final.status.ok()) << c.final.status;
  EXPECT_EQ(c.tokens, Chain(q.back(), 18 + 3 - 1, 5));
  EXPECT_EQ(c.final.usage.session_tokens_reused, 18);
  EXPECT_EQ(c.final.usage.prompt_tokens, 3);
  EXPECT_EQ(c.final.usage.kv_entries_per_layer, std::vector<int64_t>(4, 21));
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().blocks_used == session_blocks; }));
  auto again = engine_->GetSession(s.session_id, "alice");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tokens, 18);
  // The same question again gives the same answer; many run concurrently.
  runner_->set_step_delay(absl::Milliseconds(1));
  std::vector<std::shared_ptr<OutputStream>> streams;
  for (int i = 0; i < 6; ++i)
    streams.push_back(*engine_->Submit(SessionGenerate(s.session_id, "alice", q, 5)));
  for (auto& st : streams) {
    Collected ci = Collect(*st);
    ASSERT_TRUE(ci.final.status.ok());
    EXPECT_EQ(ci.tokens, c.tokens);
  }
}

TEST_F(EngineSessionTest, OwnerScoping) {
  StartEngine();
  SessionInfo s = Create(Ids(10), "alice");
  EXPECT_EQ(engine_->GetSession(s.session_id, "bob").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->ListSessions("bob")->size(), 0u);
  ASSERT_EQ(engine_->ListSessions("alice")->size(), 1u);
  EXPECT_EQ((*engine_->ListSessions("alice"))[0].session_id, s.session_id);
  EXPECT_EQ(engine_->Submit(SessionGenerate(s.session_id, "bob", Ids(2), 2)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->DeleteSession(s.session_id, "bob").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(engine_->GetSession(s.session_id, "alice").ok());
  EXPECT_TRUE(engine_->DeleteSession(s.session_id, "alice").ok());
  EXPECT_EQ(engine_->GetSession(s.session_id, "alice").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->DeleteSession(s.session_id, "alice").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->Stats().num_sessions, 0);
  EXPECT_EQ(engine_->Stats().blocks_used, 0);
}

TEST_F(EngineSessionTest, AppendExtendsTheSessionWithTheTurn) {
  StartEngine();
  SessionInfo s = Create(Ids(10), "alice");
  const std::vector<int32_t> q1 = Ids(2, 1);
  Collected c1 = Run(SessionGenerate(s.session_id, "alice", q1, 3, SessionMode::kAppend));
  ASSERT_TRUE(c1.final.status.ok()) << c1.final.status;
  EXPECT_EQ(c1.tokens, Chain(q1.back(), 11, 3));
  auto after = engine_->GetSession(s.session_id, "alice");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->tokens, 10 + 2 + 3);  // the last generated token was fed too
  EXPECT_EQ(after->per_layer_tokens, std::vector<int64_t>(4, 15));
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().blocks_used == 16; }));  // 4 blocks x 4 layers
  // The next turn continues after the appended one.
  const std::vector<int32_t> q2 = Ids(2, 2);
  Collected c2 = Run(SessionGenerate(s.session_id, "alice", q2, 4));
  ASSERT_TRUE(c2.final.status.ok());
  EXPECT_EQ(c2.tokens, Chain(q2.back(), 16, 4));
  EXPECT_EQ(c2.final.usage.session_tokens_reused, 15);
}

TEST_F(EngineSessionTest, OneAppendAtATime) {
  StartEngine();
  SessionInfo s = Create(Ids(10), "alice");
  runner_->set_step_delay(absl::Milliseconds(2));
  auto first =
      engine_->Submit(SessionGenerate(s.session_id, "alice", Ids(2, 1), 200, SessionMode::kAppend));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(WaitFor([&] {
    return !engine_->GetSession(s.session_id, "alice")->per_layer_tokens.empty() &&
           engine_->GetSession(s.session_id, "alice")->active_requests == 1;
  }));
  auto second =
      engine_->Submit(SessionGenerate(s.session_id, "alice", Ids(2, 2), 3, SessionMode::kAppend));
  if (second.ok()) {
    EXPECT_EQ(Collect(**second).final.status.code(), absl::StatusCode::kFailedPrecondition);
  } else {
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  }
  // Forks are still fine while the append runs.
  Collected fork = Run(SessionGenerate(s.session_id, "alice", Ids(2, 3), 3));
  EXPECT_TRUE(fork.final.status.ok());
  EXPECT_TRUE(Collect(**first).final.status.ok());
  EXPECT_EQ(engine_->GetSession(s.session_id, "alice")->tokens, 10 + 2 + 200);
  // Once it is done, another append is accepted.
  Collected next = Run(SessionGenerate(s.session_id, "alice", Ids(2, 4), 2, SessionMode::kAppend));
  EXPECT_TRUE(next.final.status.ok()) << next.final.status;
  EXPECT_EQ(engine_->GetSession(s.session_id, "alice")->tokens, 212 + 2 + 2);
}

TEST_F(EngineSessionTest, RacingAppendsAreRefused) {
  StartEngine();
  SessionInfo s = Create(Ids(10), "alice");
  // Hold the engine inside a step so that both appends reach it in the same inbox drain.
  runner_->Pause();
  auto blocker = engine_->Submit(MakeRequest(Ids(4, 9), 2));
  ASSERT_TRUE(WaitFor([&] { return engine_->Stats().num_waiting == 0; }));
  absl::SleepFor(absl::Milliseconds(5));
  auto a =
      engine_->Submit(SessionGenerate(s.session_id, "alice", Ids(2, 1), 2, SessionMode::kAppend));
  auto b =
      engine_->Submit(SessionGenerate(s.session_id, "alice", Ids(2, 2), 2, SessionMode::kAppend));
  ASSERT_TRUE(a.ok() && b.ok());  // both pass Submit: the engine has not seen either yet
  runner_->Resume();
  EXPECT_TRUE(Collect(**a).final.status.ok());
  EXPECT_EQ(Collect(**b).final.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Collect(**blocker).final.status.ok());
  EXPECT_EQ(engine_->GetSession(s.session_id, "alice")->tokens, 14);
}

TEST_F(EngineSessionTest, TtlExpiryFreesBlocks) {
  StartEngine();
  SessionInfo s = Create(Ids(12), "alice", absl::Milliseconds(300));
  EXPECT_EQ(engine_->Stats().blocks_used, 12);
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().num_sessions == 0; }, absl::Seconds(3)));
  EXPECT_EQ(engine_->Stats().blocks_used, 0);
  EXPECT_EQ(engine_->GetSession(s.session_id, "alice").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->Submit(SessionGenerate(s.session_id, "alice", Ids(2), 2)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(EngineSessionTest, SessionInUseOutlivesItsTtl) {
  StartEngine();
  SessionInfo s = Create(Ids(12), "alice", absl::Milliseconds(150));
  runner_->set_step_delay(absl::Milliseconds(2));
  auto r = engine_->Submit(SessionGenerate(s.session_id, "alice", Ids(2), 150));
  ASSERT_TRUE(r.ok());
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(engine_->Stats().num_sessions, 1);  // in use
  EXPECT_TRUE(engine_->GetSession(s.session_id, "alice").ok());
  EXPECT_TRUE(Collect(**r).final.status.ok());
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().num_sessions == 0; }, absl::Seconds(3)));
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().blocks_used == 0; }));
}

TEST_F(EngineSessionTest, DeletingASessionWithRunningForksIsSafe) {
  StartEngine();
  SessionInfo s = Create(Ids(14), "alice");
  runner_->set_step_delay(absl::Milliseconds(2));
  const std::vector<int32_t> q = Ids(3, 2);
  auto r = engine_->Submit(SessionGenerate(s.session_id, "alice", q, 30));
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Next(absl::Seconds(5)).has_value());
  ASSERT_TRUE(engine_->DeleteSession(s.session_id, "alice").ok());
  Collected c = Collect(**r);
  ASSERT_TRUE(c.final.status.ok()) << c.final.status;
  EXPECT_EQ(c.tokens.size() + 1, 30u);  // one token was read above
  EXPECT_TRUE(WaitFor([&] { return engine_->Stats().blocks_used == 0; }));
}

TEST_F(EngineSessionTest, SessionLimitsAndValidation) {
  FakeRunnerOptions ro;
  ro.context_length = 64;
  EngineConfig ec;
  ec.max_sessions = 1;
  StartEngine(ro, ec);
  EXPECT_EQ(engine_->CreateSession(SessionRequest({}, "a")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->CreateSession(SessionRequest(Ids(64), "a")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->CreateSession(SessionRequest(Ids(8), "a", absl::Seconds(-1))).status().code(),
            absl::StatusCode::kInvalidArgument);
  SessionInfo s = Create(Ids(60), "a");
  EXPECT_EQ(engine_->CreateSession(SessionRequest(Ids(8), "a")).status().code(),
            absl::StatusCode::kResourceExhausted);
  // Session + suffix over the context.
  EXPECT_EQ(engine_->Submit(SessionGenerate(s.session_id, "a", Ids(5), 2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Generation stops at the context: 60 + 3 = 63, one more token fills it.
  Collected c = Run(SessionGenerate(s.session_id, "a", Ids(3), 10));
  EXPECT_TRUE(c.final.status.ok());
  EXPECT_EQ(c.tokens.size(), 2u);
  EXPECT_EQ(c.final.finish_reason, "length");
}

TEST_F(EngineSessionTest, SessionsThatHoldTheCacheDoNotBlockTheQueue) {
  FakeRunnerOptions ro;
  ro.num_blocks = 40;
  StartEngine(ro);
  Create(Ids(32), "a");  // 8 blocks x 4 layers = 32 of 40
  // Needs 16 blocks: fits the pool, but never while the session lives and nothing runs.
  auto r = engine_->Submit(MakeRequest(Ids(8), 8));
  ASSERT_TRUE(r.ok());
  Collected c = Collect(**r);
  EXPECT_EQ(c.final.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(c.final.status.message().find("sessions"), std::string::npos);
  Collected small = Run(MakeRequest(Ids(4), 4));  // 8 blocks: fits next to the session
  EXPECT_TRUE(small.final.status.ok());
}

// ---- Durable sessions ------------------------------------------------------------------------

class DurableSessionTest : public EngineSessionTest {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("funnel_durable_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_",
                        getpid());
    std::filesystem::remove_all(dir_);
    ec_.session_dir = dir_.string();
    ec_.model_fingerprint = "fake-model";
  }
  void TearDown() override {
    EngineSessionTest::TearDown();
    std::filesystem::remove_all(dir_);
  }
  void Restart(FakeRunnerOptions ro = {}) {
    engine_.reset();
    StartEngine(ro, ec_);
  }
  int CountFiles() const {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_))
      n += e.path().extension() == ".session";
    return n;
  }
  bool FileExists(const std::string& id) const {
    return std::filesystem::exists(dir_ / absl::StrCat(id, ".session"));
  }

  std::filesystem::path dir_;
  EngineConfig ec_;
};

TEST_F(DurableSessionTest, SessionsSurviveARestart) {
  StartEngine({}, ec_);
  CreateSessionRequest cr = SessionRequest(Ids(40), "alice");
  cr.kv_policy = KvPolicy{.method = KvMethod::kPyramidKv, .budget = 12, .window = 4};
  auto created = engine_->CreateSession(cr);
  ASSERT_TRUE(created.ok()) << created.status();
  const SessionInfo plain = Create(Ids(20, 1), "bob");
  // An append extends bob's session by the turn: 20 + 3 prompt + 5 completion tokens.
  ASSERT_TRUE(Run(SessionGenerate(plain.session_id, "bob", Ids(3, 2), 5, SessionMode::kAppend))
                  .final.status.ok());
  const Collected before = Run(SessionGenerate(created->session_id, "alice", Ids(4, 3), 6));
  ASSERT_TRUE(before.final.status.ok());
  const int64_t bob_bytes = engine_->GetSession(plain.session_id, "bob")->kv_bytes;
  Restart();
  EXPECT_EQ(CountFiles(), 2);
  EXPECT_EQ(engine_->Stats().num_sessions, 2);
  EXPECT_EQ(engine_->Stats().blocks_used * runner_->block_bytes(), created->kv_bytes + bob_bytes);
  auto a = engine_->GetSession(created->session_id, "alice");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->tokens, 40);
  EXPECT_EQ(a->per_layer_tokens, created->per_layer_tokens);
  EXPECT_EQ(a->kv_policy.method, KvMethod::kPyramidKv);
  EXPECT_EQ(a->created, absl::FromUnixMillis(absl::ToUnixMillis(created->created)));
  auto b = engine_->GetSession(plain.session_id, "bob");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->tokens, 28);
  EXPECT_EQ(engine_->GetSession(created->session_id, "bob").status().code(),
            absl::StatusCode::kNotFound);
  const Collected after = Run(SessionGenerate(created->session_id, "alice", Ids(4, 3), 6));
  ASSERT_TRUE(after.final.status.ok());
  EXPECT_EQ(after.tokens, before.tokens);
  EXPECT_EQ(after.final.usage.session_tokens_reused, 40);
  // New sessions do not collide with restored ids; deleting removes the file.
  const SessionInfo third = Create(Ids(10, 4), "alice");
  EXPECT_TRUE(WaitFor([&] {
    engine_->Stats();
    return FileExists(third.session_id);
  }));
  ASSERT_TRUE(engine_->DeleteSession(created->session_id, "alice").ok());
  EXPECT_TRUE(WaitFor([&] { return !FileExists(created->session_id); }));
}

TEST_F(DurableSessionTest, ExpiryRemovesFilesAndExpiredFilesAreNotRestored) {
  StartEngine({}, ec_);
  const SessionInfo quick = Create(Ids(12), "alice", absl::Milliseconds(80));
  const SessionInfo slow = Create(Ids(12, 1), "alice", absl::Milliseconds(400));
  EXPECT_TRUE(WaitFor([&] { return FileExists(quick.session_id) && FileExists(slow.session_id); }));
  EXPECT_TRUE(WaitFor([&] { return !FileExists(quick.session_id); }, absl::Seconds(5)));
  engine_.reset();  // slow's file stays on disk past its expiry
  absl::SleepFor(absl::Milliseconds(450));
  ASSERT_TRUE(FileExists(slow.session_id));
  Restart();
  EXPECT_EQ(engine_->Stats().num_sessions, 0);
  EXPECT_TRUE(WaitFor([&] { return !FileExists(slow.session_id); }));
}

TEST_F(DurableSessionTest, UnusableFilesAreSkippedWithoutFailing) {
  StartEngine({}, ec_);
  const SessionInfo big = Create(Ids(120), "alice");     // 4 layers * 30 blocks
  const SessionInfo small = Create(Ids(8, 1), "alice");  // 4 layers * 2 blocks
  engine_.reset();
  {
    std::ofstream(dir_ / "sess-r0-garbage.session") << "not a session";
    std::ofstream(dir_ / "notes.txt") << "ignored";
    // A truncated copy of a real file under another id.
    std::ifstream in(dir_ / absl::StrCat(small.session_id, ".session"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(dir_ / "sess-r0-truncated.session", std::ios::binary)
        << bytes.substr(0, bytes.size() / 2);
  }
  FakeRunnerOptions tiny;
  tiny.num_blocks = 60;  // big's 120 blocks no longer fit; small's 8 do
  Restart(tiny);
  EXPECT_EQ(engine_->Stats().num_sessions, 1);
  EXPECT_TRUE(engine_->GetSession(small.session_id, "alice").ok());
  EXPECT_EQ(engine_->GetSession(big.session_id, "alice").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(FileExists(big.session_id)) << "a session that does not fit now is kept on disk";
  // Another model's files are foreign.
  ec_.model_fingerprint = "another-model";
  Restart();
  EXPECT_EQ(engine_->Stats().num_sessions, 0);
}

}  // namespace
}  // namespace funnel
