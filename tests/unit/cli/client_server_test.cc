// The client and the server-facing CLI commands against a real funnel-server process on
// 127.0.0.1 serving stories260K: concurrent greedy streams equal single-sequence `funnel run`,
// `funnel generate --json` equals `funnel run --json`, session commands, bench end to end.
// Skipped when the funnel-server binary has not been built.
#include <gtest/gtest.h>

#include <barrier>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/funnel_client.h"
#include "nlohmann/json.hpp"
#include "tests/testing/golden.h"
#include "tests/unit/cli/client_test_util.h"

namespace funnel {
namespace {

namespace fs = std::filesystem;
using ::funnel::testing::ChildProcess;
using ::funnel::testing::CommandResult;
using ::funnel::testing::RunFunnelBinary;

// Story text of varying length: with a KV budget of 24 most of these prompts get compressed.
const char* const kSentences[] = {
    "Once upon a time, there was a little girl named Lily.",
    "She loved to play outside in the park with her friends.",
    "One day, a big dog came running and barked at the ducks.",
    "Tom was sad because his red ball was stuck in the tree.",
    "The sun was shining and the birds were singing happy songs.",
    "Mom said they could bake a cake if they cleaned their room first.",
};

std::string Prompt(int i) {
  std::string p;
  const int n = 1 + i % 5;
  for (int k = 0; k < n; ++k) {
    if (!p.empty()) p += " ";
    p += kSentences[(i + k) % 6];
  }
  return p;
}

struct Policy {
  std::string name;
  std::vector<std::string> flags;  // as given to `funnel run` / `funnel generate`
  std::optional<v1::KvPolicy> proto;
};

std::vector<Policy> Policies() {
  v1::KvPolicy full;
  full.set_method(v1::KV_METHOD_FULL);
  v1::KvPolicy pyramid;
  pyramid.set_method(v1::KV_METHOD_PYRAMIDKV);
  pyramid.set_budget(24);
  return {{"full", {"--kv-method", "full"}, full},
          {"pyramidkv", {"--kv-method", "pyramidkv", "--kv-budget", "24"}, pyramid}};
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string binary = ::funnel::testing::BinaryDir() + "/funnel-server";
    if (!fs::exists(binary)) {
      skip_reason_ = new std::string("funnel-server is not built (" + binary + ")");
      return;
    }
    const fs::path dir =
        fs::temp_directory_path() / ("funnel_client_server_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string port_file = (dir / "port").string();
    log_path_ = new std::string((dir / "server.log").string());
    server_ = new ChildProcess();
    const bool started =
        server_->Start({binary, "--model", ::funnel::testing::Stories260KPath(), "--port", "0",
                        "--port-file", port_file, "--admin-port", "-1", "--max-num-seqs", "64"},
                       *log_path_);
    ASSERT_TRUE(started) << "cannot start " << binary;
    std::string port;
    for (int i = 0; i < 600 && port.empty(); ++i) {  // up to 60 s
      ASSERT_TRUE(server_->running()) << "funnel-server exited; log: " << ServerLog();
      std::ifstream in(port_file);
      std::getline(in, port);
      if (port.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_FALSE(port.empty()) << "no port file after 60 s; log: " << ServerLog();
    address_ = new std::string("127.0.0.1:" + port);
  }

  static void TearDownTestSuite() {
    delete server_;  // SIGTERM, then wait
    server_ = nullptr;
  }

  void SetUp() override {
    if (skip_reason_ != nullptr) GTEST_SKIP() << *skip_reason_;
    ASSERT_NE(address_, nullptr);
  }

  static std::string ServerLog() {
    if (log_path_ == nullptr) return "";
    std::ifstream in(*log_path_);
    std::string s((std::istreambuf_iterator<char>(in)), {});
    return s.size() > 4000 ? s.substr(s.size() - 4000) : s;
  }

  static std::unique_ptr<FunnelClient> Client() {
    ClientOptions o;
    o.target = *address_;
    o.own_connection = true;
    o.generate_timeout = absl::Seconds(120);
    auto c = FunnelClient::Create(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return std::move(*c);
  }

  static nlohmann::json RunJson(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"run", "--model", ::funnel::testing::Stories260KPath(),
                                     "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = RunFunnelBinary(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
  }

  static CommandResult Funnel(std::vector<std::string> args) {
    // After the command word, and after the subcommand for `session`.
    const size_t at = args[0] == "session" ? 2 : 1;
    args.insert(args.begin() + static_cast<std::ptrdiff_t>(at), {"--server", *address_});
    return RunFunnelBinary(args);
  }

  static inline ChildProcess* server_ = nullptr;
  static inline std::string* address_ = nullptr;
  static inline std::string* log_path_ = nullptr;
  static inline std::string* skip_reason_ = nullptr;
};

// 32 streams at once (16 prompts x {full, pyramidkv}), batched by the server, each equal to the
// single-sequence in-process run of the same prompt and policy.
TEST_F(ServerTest, ConcurrentGreedyStreamsEqualFunnelRun) {
  constexpr int kPrompts = 16;
  constexpr int kMaxTokens = 40;
  const std::vector<Policy> policies = Policies();
  struct Case {
    std::string prompt;
    const Policy* policy;
    nlohmann::json expected;
    absl::StatusOr<GenerateResult> got = absl::UnknownError("not run");
  };
  std::vector<Case> cases;
  for (int i = 0; i < kPrompts; ++i) {
    for (const Policy& p : policies) {
      std::vector<std::string> args = {"--prompt", Prompt(i), "--max-tokens",
                                       std::to_string(kMaxTokens)};
      args.insert(args.end(), p.flags.begin(), p.flags.end());
      cases.push_back({Prompt(i), &p, RunJson(args)});
    }
  }
  ASSERT_EQ(cases.size(), 32u);
  int compressed = 0;
  for (const Case& c : cases) {
    ASSERT_FALSE(c.expected.is_null());
    if (c.expected["kv"]["kv_bytes"] != c.expected["kv"]["full_kv_bytes"]) ++compressed;
  }
  EXPECT_GE(compressed, 8) << "too few prompts exceed the budget to exercise compression";

  std::barrier start(static_cast<std::ptrdiff_t>(cases.size()));
  std::vector<std::thread> threads;
  for (Case& c : cases) {
    threads.emplace_back([&c, &start] {
      std::unique_ptr<FunnelClient> client = Client();
      v1::GenerateRequest r;
      r.set_prompt(c.prompt);
      r.mutable_sampling()->set_temperature(0.0f);
      r.mutable_sampling()->set_max_tokens(kMaxTokens);
      if (c.policy->proto) *r.mutable_kv_policy() = *c.policy->proto;
      start.arrive_and_wait();
      c.got = client->Generate(r);
    });
  }
  for (std::thread& t : threads) t.join();

  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.policy->name, ": ", c.prompt));
    ASSERT_TRUE(c.got.ok()) << c.got.status();
    const v1::GenerateFinal& f = c.got->final;
    EXPECT_EQ(nlohmann::json(std::vector<int32_t>(f.prompt_ids().begin(), f.prompt_ids().end())),
              c.expected["prompt_ids"]);
    EXPECT_EQ(nlohmann::json(c.got->output_ids), c.expected["output_ids"]);
    EXPECT_EQ(c.got->text, c.expected["text"].get<std::string>());
    EXPECT_EQ(FinishReasonName(f.finish_reason()), c.expected["finish_reason"]);
    EXPECT_EQ(nlohmann::json(std::vector<int64_t>(f.usage().kv_entries_per_layer().begin(),
                                                  f.usage().kv_entries_per_layer().end())),
              c.expected["kv"]["per_layer_tokens"]);
  }
}

TEST_F(ServerTest, GenerateJsonEqualsRunJson) {
  for (const Policy& p : Policies()) {
    for (const std::vector<std::string>& input :
         {std::vector<std::string>{"--prompt", Prompt(3)},
          std::vector<std::string>{"--prompt-ids", "1,403,407,261,378"}}) {
      std::vector<std::string> common = input;
      common.insert(common.end(), {"--max-tokens", "30"});
      common.insert(common.end(), p.flags.begin(), p.flags.end());
      SCOPED_TRACE(absl::StrCat(p.name, " ", input[0]));
      nlohmann::json run = RunJson(common);
      std::vector<std::string> gen_args = {"generate"};
      gen_args.insert(gen_args.end(), common.begin(), common.end());
      gen_args.push_back("--json");
      CommandResult gen = Funnel(gen_args);
      ASSERT_EQ(gen.exit_code, 0) << gen.err;
      nlohmann::json g = nlohmann::json::parse(gen.out);
      for (const char* k : {"prompt_ids", "output_ids", "text", "finish_reason"}) {
        EXPECT_EQ(g[k], run[k]) << k;
      }
      // Same block size (16) and fp32 CPU cache on both sides: the whole kv block matches.
      EXPECT_EQ(g["kv"], run["kv"]);
      for (const char* k : {"prefill_ms", "decode_ms", "prefill_tok_s", "decode_tok_s"}) {
        EXPECT_TRUE(g["timings"][k].is_number()) << k;
      }
      // Durations of a 30-token run on a tiny model: milliseconds, not epoch offsets.
      for (const char* k : {"prefill_ms", "decode_ms"}) {
        EXPECT_GE(g["timings"][k].get<double>(), 0.0) << k;
        EXPECT_LT(g["timings"][k].get<double>(), 60000.0) << k;
      }
    }
  }
  // Streamed text mode prints the same text followed by a newline.
  nlohmann::json run = RunJson({"--prompt", Prompt(1), "--max-tokens", "20"});
  CommandResult text =
      Funnel({"generate", "--prompt", Prompt(1), "--max-tokens", "20", "--kv-method", "full"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, run["text"].get<std::string>() + "\n");
}

TEST_F(ServerTest, SessionCommands) {
  CommandResult create = Funnel({"session", "create", "--prompt", Prompt(4), "--kv-method",
                                 "pyramidkv", "--kv-budget", "24", "--ttl", "300", "--json"});
  ASSERT_EQ(create.exit_code, 0) << create.err;
  nlohmann::json s = nlohmann::json::parse(create.out);
  const std::string id = s["session_id"].get<std::string>();
  ASSERT_FALSE(id.empty());
  EXPECT_GT(s["tokens"].get<int64_t>(), 24);
  ASSERT_FALSE(s["per_layer_tokens"].empty());
  for (const auto& t : s["per_layer_tokens"])
    EXPECT_LT(t.get<int64_t>(), s["tokens"].get<int64_t>());
  EXPECT_GT(s["kv_bytes"].get<int64_t>(), 0);

  CommandResult get = Funnel({"session", "get", "--id", id});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  nlohmann::json g = nlohmann::json::parse(get.out);
  EXPECT_EQ(g["session_id"], id);
  EXPECT_EQ(g["tokens"], s["tokens"]);
  EXPECT_EQ(g["per_layer_tokens"], s["per_layer_tokens"]);

  CommandResult list = Funnel({"session", "list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  bool listed = false;
  const nlohmann::json sessions = nlohmann::json::parse(list.out)["sessions"];
  for (const auto& e : sessions) listed = listed || e["session_id"] == id;
  EXPECT_TRUE(listed) << list.out;
  CommandResult plain_list = Funnel({"session", "list"});
  ASSERT_EQ(plain_list.exit_code, 0) << plain_list.err;
  EXPECT_NE(plain_list.out.find(id), std::string::npos);

  // Two questions against the session (fork mode leaves it unchanged).
  for (int i = 0; i < 2; ++i) {
    CommandResult q =
        Funnel({"generate", "--session", id, "--prompt", " Then", "--max-tokens", "10", "--json"});
    ASSERT_EQ(q.exit_code, 0) << q.err;
    nlohmann::json j = nlohmann::json::parse(q.out);
    EXPECT_EQ(j["output_ids"].size(), 10u);
  }
  CommandResult after = Funnel({"session", "get", "--id", id});
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(nlohmann::json::parse(after.out)["tokens"], s["tokens"]);

  CommandResult del = Funnel({"session", "delete", "--id", id});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  CommandResult gone = Funnel({"session", "get", "--id", id});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.err.find("NOT_FOUND"), std::string::npos) << gone.err;
}

TEST_F(ServerTest, BenchRunsEndToEnd) {
  CommandResult r =
      Funnel({"bench", "--concurrency", "4", "--requests", "12", "--prompt-tokens", "40",
              "--max-tokens", "8", "--kv-method", "pyramidkv", "--kv-budget", "24", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["completed"], 12) << r.out;
  EXPECT_EQ(j["output_tokens"], 12 * 8);
  EXPECT_EQ(j["short_responses"], 0);
  EXPECT_GT(j["output_tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(j["ttft_ms"]["p50"].get<double>(), 0.0);
  EXPECT_GT(j["tpot_ms"]["p99"].get<double>(), 0.0);

  CommandResult shared =
      Funnel({"bench", "--concurrency", "3", "--requests", "6", "--prompt-tokens", "64",
              "--max-tokens", "4", "--session-share", "--question-tokens", "5", "--kv-method",
              "pyramidkv", "--kv-budget", "24"});
  ASSERT_EQ(shared.exit_code, 0) << shared.err;
  EXPECT_NE(shared.out.find("completed 6, failed 0"), std::string::npos) << shared.out;
  EXPECT_NE(shared.out.find("requests/s"), std::string::npos) << shared.out;
  // The bench deletes its session.
  CommandResult list = Funnel({"session", "list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(nlohmann::json::parse(list.out)["sessions"].empty()) << list.out;
}

}  // namespace
}  // namespace funnel
