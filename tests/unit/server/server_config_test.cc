// funnel-server flag parsing: defaults, every flag's effect, and a clear INVALID_ARGUMENT naming
// the flag for each kind of bad value.
#include "server/server_config.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"

namespace funnel {
namespace {

using Args = std::vector<std::string>;

Args WithModel(Args extra) {
  Args args = {"--model", "m.gguf"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST(ServerConfigTest, DefaultsWithOnlyTheModel) {
  auto c = ParseServerFlags({"--model", "m.gguf"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_path, "m.gguf");
  EXPECT_EQ(c->host, "127.0.0.1");
  EXPECT_EQ(c->port, 50051);
  EXPECT_EQ(c->admin_port, 8081);
  EXPECT_EQ(c->port_file, "");
  EXPECT_EQ(c->admin_port_file, "");
  const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  EXPECT_EQ(c->runner.num_threads, std::min<int64_t>(cores, 256));
  EXPECT_EQ(c->runner.block_size, 16);
  EXPECT_EQ(c->runner.kv_cache_bytes, int64_t{1} << 30);
  EXPECT_EQ(c->runner.device_weights, DeviceDtype::kF32);
  EXPECT_EQ(c->runner.kv_dtype, DeviceDtype::kF32);
  EXPECT_EQ(c->engine.default_kv_policy.method, KvMethod::kFull);
  EXPECT_EQ(c->engine.default_kv_policy.budget, 0);
  EXPECT_EQ(c->engine.default_kv_policy.ratio, 0.0);
  EXPECT_EQ(c->engine.default_kv_policy.window, 8);
  EXPECT_EQ(c->engine.default_kv_policy.kernel, 7);
  EXPECT_EQ(c->engine.default_kv_policy.beta, 20.0);
  EXPECT_EQ(c->engine.default_kv_policy.pooling, KvPooling::kMax);
  EXPECT_EQ(c->engine.default_kv_policy.rounding, BudgetRounding::kExact);
  EXPECT_EQ(c->engine.max_num_seqs, 64);
  EXPECT_EQ(c->engine.max_queue, 256);
  EXPECT_EQ(c->engine.max_prompt_tokens, 0);
  EXPECT_EQ(c->engine.max_tokens_per_step, 2048);
  EXPECT_EQ(c->engine.max_sessions, 1024);
  EXPECT_EQ(c->engine.session_ttl, absl::Hours(1));
  EXPECT_EQ(c->engine.replica_id, "r0");
  EXPECT_EQ(c->api_key_file, "");
  EXPECT_EQ(c->served_model_name, "");
  EXPECT_EQ(c->chat_template, "");
  EXPECT_EQ(c->shutdown_grace, absl::Seconds(10));
  EXPECT_EQ(c->log_level, "info");
  EXPECT_FALSE(c->help);
}

TEST(ServerConfigTest, EveryFlagIsApplied) {
  auto c = ParseServerFlags({"--model=/x/y.gguf",
                             "--host",
                             "0.0.0.0",
                             "--port",
                             "0",
                             "--port-file",
                             "/tmp/p",
                             "--admin-port=-1",
                             "--threads",
                             "3",
                             "--kv-method",
                             "pyramidkv",
                             "--kv-budget",
                             "128",
                             "--kv-window",
                             "16",
                             "--kv-pooling",
                             "avg",
                             "--kv-kernel",
                             "5",
                             "--kv-beta",
                             "10.5",
                             "--kv-rounding",
                             "official",
                             "--kv-cache-bytes",
                             "512M",
                             "--block-size",
                             "32",
                             "--max-num-seqs",
                             "8",
                             "--max-queue",
                             "9",
                             "--max-prompt-tokens",
                             "1000",
                             "--max-tokens-per-step",
                             "256",
                             "--max-sessions",
                             "0",
                             "--session-ttl",
                             "90.5",
                             "--session-dir",
                             "/var/lib/funnel/sessions",
                             "--tls-cert",
                             "/tls/c.pem",
                             "--tls-key",
                             "/tls/k.pem",
                             "--tls-client-ca",
                             "/tls/ca.pem",
                             "--api-key-file",
                             "/keys",
                             "--replica-id",
                             "pod-3.a_b",
                             "--served-model-name",
                             "tiny",
                             "--chat-template",
                             "chatml",
                             "--shutdown-grace",
                             "0",
                             "--log-level",
                             "debug"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_path, "/x/y.gguf");
  EXPECT_EQ(c->host, "0.0.0.0");
  EXPECT_EQ(c->port, 0);
  EXPECT_EQ(c->port_file, "/tmp/p");
  EXPECT_EQ(c->admin_port, -1);
  EXPECT_EQ(c->runner.num_threads, 3);
  const KvPolicy& p = c->engine.default_kv_policy;
  EXPECT_EQ(p.method, KvMethod::kPyramidKv);
  EXPECT_EQ(p.budget, 128);
  EXPECT_EQ(p.window, 16);
  EXPECT_EQ(p.pooling, KvPooling::kAvg);
  EXPECT_EQ(p.kernel, 5);
  EXPECT_EQ(p.beta, 10.5);
  EXPECT_EQ(p.rounding, BudgetRounding::kOfficial);
  EXPECT_EQ(c->runner.kv_cache_bytes, int64_t{512} << 20);
  EXPECT_EQ(c->runner.block_size, 32);
  EXPECT_EQ(c->engine.max_num_seqs, 8);
  EXPECT_EQ(c->engine.max_queue, 9);
  EXPECT_EQ(c->engine.max_prompt_tokens, 1000);
  EXPECT_EQ(c->engine.max_tokens_per_step, 256);
  EXPECT_EQ(c->engine.max_sessions, 0);
  EXPECT_EQ(c->engine.session_ttl, absl::Milliseconds(90500));
  EXPECT_EQ(c->api_key_file, "/keys");
  EXPECT_EQ(c->engine.replica_id, "pod-3.a_b");
  EXPECT_EQ(c->engine.session_dir, "/var/lib/funnel/sessions");
  EXPECT_EQ(c->tls_cert_file, "/tls/c.pem");
  EXPECT_EQ(c->tls_key_file, "/tls/k.pem");
  EXPECT_EQ(c->tls_client_ca_file, "/tls/ca.pem");
  EXPECT_EQ(c->served_model_name, "tiny");
  EXPECT_EQ(c->chat_template, "chatml");
  EXPECT_EQ(c->shutdown_grace, absl::ZeroDuration());
  EXPECT_EQ(c->log_level, "debug");
}

// Parsing needs no GPU: availability is checked when the runner is made.
TEST(ServerConfigTest, CudaWith16BitWeightsAndKv) {
  auto c = ParseServerFlags(
      WithModel({"--device", "cuda", "--weights-dtype", "bf16", "--kv-dtype", "f16"}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->device, Device::kCuda);
  EXPECT_EQ(c->runner.device_weights, DeviceDtype::kBf16);
  EXPECT_EQ(c->runner.kv_dtype, DeviceDtype::kF16);
  auto f32 = ParseServerFlags(WithModel({"--weights-dtype", "f32", "--kv-dtype", "f32"}));
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_EQ(f32->runner.device_weights, DeviceDtype::kF32);
  EXPECT_EQ(f32->runner.kv_dtype, DeviceDtype::kF32);
}

TEST(ServerConfigTest, SixteenBitTypesNeedCuda) {
  for (const char* flag : {"--weights-dtype", "--kv-dtype"}) {
    auto c = ParseServerFlags(WithModel({flag, "bf16"}));
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << flag;
    EXPECT_NE(c.status().message().find("--device cuda"), std::string::npos) << c.status();
    auto bad = ParseServerFlags(WithModel({"--device", "cuda", flag, "fp8"}));
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << flag;
  }
}

TEST(ServerConfigTest, RatioInsteadOfBudget) {
  auto c = ParseServerFlags(WithModel({"--kv-method", "snapkv", "--kv-ratio", "0.25"}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->engine.default_kv_policy.method, KvMethod::kSnapKv);
  EXPECT_EQ(c->engine.default_kv_policy.budget, 0);
  EXPECT_EQ(c->engine.default_kv_policy.ratio, 0.25);
}

TEST(ServerConfigTest, HelpNeedsNoModel) {
  for (const char* flag : {"--help", "-h"}) {
    auto c = ParseServerFlags({flag});
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->help);
  }
  const std::string usage = kServerUsage;
  for (const char* flag : {"--model",
                           "--host",
                           "--port",
                           "--port-file",
                           "--admin-port",
                           "--admin-port-file",
                           "--threads",
                           "--kv-method",
                           "--kv-budget",
                           "--kv-ratio",
                           "--kv-window",
                           "--kv-pooling",
                           "--kv-kernel",
                           "--kv-beta",
                           "--kv-rounding",
                           "--kv-cache-bytes",
                           "--block-size",
                           "--max-num-seqs",
                           "--max-queue",
                           "--max-prompt-tokens",
                           "--max-tokens-per-step",
                           "--max-sessions",
                           "--session-ttl",
                           "--session-dir",
                           "--tls-cert",
                           "--tls-key",
                           "--tls-client-ca",
                           "--api-key-file",
                           "--replica-id",
                           "--served-model-name",
                           "--chat-template",
                           "--shutdown-grace",
                           "--log-level"}) {
    EXPECT_NE(usage.find(std::string(flag) + " "), std::string::npos) << flag;
  }
}

struct BadCase {
  Args args;
  std::string message;  // a substring the error must contain (names the flag)
};

class ServerConfigBadFlagTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ServerConfigBadFlagTest, IsInvalidArgumentNamingTheProblem) {
  const BadCase& bad = GetParam();
  auto c = ParseServerFlags(bad.args);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_NE(std::string(c.status().message()).find(bad.message), std::string::npos)
      << "message: " << c.status().message() << "\nexpected to contain: " << bad.message;
}

INSTANTIATE_TEST_SUITE_P(
    ServerConfig, ServerConfigBadFlagTest,
    ::testing::Values(
        // Structure.
        BadCase{{}, "--model is required"}, BadCase{{"--model="}, "--model is required"},
        BadCase{{"--model"}, "--model needs a value"},
        BadCase{WithModel({"--bogus", "1"}), "unknown flag --bogus"},
        BadCase{WithModel({"--bogus=1"}), "unknown flag --bogus"},
        BadCase{WithModel({"stray"}), "unexpected argument 'stray'"},
        BadCase{WithModel({"-p", "1"}), "unexpected argument '-p'"},
        BadCase{WithModel({"--port", "1", "--port=2"}), "--port given twice"},
        BadCase{WithModel({"--threads"}), "--threads needs a value"},
        // Listen addresses.
        BadCase{WithModel({"--host="}), "--host is empty"},
        BadCase{WithModel({"--port", "70000"}), "--port must be in [0, 65535], got 70000"},
        BadCase{WithModel({"--port", "-1"}), "--port must be in [0, 65535]"},
        BadCase{WithModel({"--port", "80a"}), "--port: '80a' is not an integer"},
        BadCase{WithModel({"--admin-port", "-2"}), "--admin-port must be in [-1, 65535]"},
        BadCase{WithModel({"--port", "9000", "--admin-port", "9000"}),
                "--admin-port must differ from --port"},
        BadCase{WithModel({"--admin-port", "-1", "--admin-port-file", "/tmp/a"}),
                "--admin-port-file needs the admin port"},
        // Runner.
        BadCase{WithModel({"--threads", "many"}), "--threads: 'many' is not an integer"},
        BadCase{WithModel({"--threads", "0"}), "--threads must be in [1, 256], got 0"},
        BadCase{WithModel({"--threads", "257"}), "--threads must be in [1, 256], got 257"},
        BadCase{WithModel({"--block-size", "0"}), "--block-size must be in [1, 1024]"},
        BadCase{WithModel({"--block-size", "2048"}), "--block-size must be in [1, 1024]"},
        BadCase{WithModel({"--kv-cache-bytes", "lots"}), "--kv-cache-bytes: 'lots'"},
        BadCase{WithModel({"--kv-cache-bytes", "0"}), "--kv-cache-bytes: '0'"},
        BadCase{WithModel({"--kv-cache-bytes", "-1G"}), "--kv-cache-bytes: '-1G'"},
        BadCase{WithModel({"--kv-cache-bytes", "1.5G"}), "--kv-cache-bytes: '1.5G'"},
        BadCase{WithModel({"--kv-cache-bytes", "99999999999T"}), "too large"},
        BadCase{WithModel({"--weights-dtype", "fp8"}),
                "--weights-dtype: unknown device type 'fp8'"},
        BadCase{WithModel({"--weights-dtype", "bf16"}), "--weights-dtype bf16 needs --device cuda"},
        // KV policy.
        BadCase{WithModel({"--kv-method", "magic"}), "--kv-method: unknown kv method 'magic'"},
        BadCase{WithModel({"--kv-method", "pyramidkv"}), "--kv-*: "},
        BadCase{WithModel({"--kv-method", "full", "--kv-budget", "64"}), "--kv-*: "},
        BadCase{WithModel({"--kv-method", "snapkv", "--kv-budget", "64", "--kv-ratio", "0.5"}),
                "--kv-*: "},
        BadCase{WithModel({"--kv-budget", "0"}), "--kv-budget must be in [1, "},
        BadCase{WithModel({"--kv-budget", "x"}), "--kv-budget: 'x' is not an integer"},
        BadCase{WithModel({"--kv-ratio", "1.5"}), "--kv-ratio must be in ["},
        BadCase{WithModel({"--kv-ratio", "0"}), "--kv-ratio must be in ["},
        BadCase{WithModel({"--kv-ratio", "nan"}), "--kv-ratio: 'nan' is not a number"},
        BadCase{WithModel({"--kv-ratio", "inf"}), "--kv-ratio: 'inf' is not a number"},
        BadCase{WithModel({"--kv-window", "0"}), "--kv-window must be in [1, "},
        BadCase{WithModel({"--kv-pooling", "median"}),
                "--kv-pooling: kv pooling must be max or avg"},
        BadCase{WithModel({"--kv-kernel", "0"}), "--kv-kernel must be in [1, 1023]"},
        BadCase{WithModel({"--kv-method", "snapkv", "--kv-budget", "64", "--kv-kernel", "4"}),
                "--kv-*: kv pooling kernel must be odd, got 4"},
        BadCase{WithModel({"--kv-beta", "0.5"}), "--kv-beta must be in [1, "},
        BadCase{WithModel({"--kv-rounding", "floor"}),
                "--kv-rounding: kv rounding must be exact or official"},
        // Engine.
        BadCase{WithModel({"--max-num-seqs", "0"}), "--max-num-seqs must be in [1, 65536]"},
        BadCase{WithModel({"--max-queue", "0"}), "--max-queue must be in [1, 1048576]"},
        BadCase{WithModel({"--max-prompt-tokens", "-1"}), "--max-prompt-tokens must be in [0, "},
        BadCase{WithModel({"--max-tokens-per-step", "0"}), "--max-tokens-per-step must be in [1, "},
        BadCase{WithModel({"--max-sessions", "-1"}), "--max-sessions must be in [0, "},
        BadCase{WithModel({"--session-ttl", "0"}), "--session-ttl must be in ["},
        BadCase{WithModel({"--session-ttl", "soon"}), "--session-ttl: 'soon' is not a number"},
        BadCase{WithModel({"--replica-id", "a b"}), "--replica-id: "},
        BadCase{WithModel({"--replica-id="}), "--replica-id: "},
        BadCase{WithModel({"--replica-id", std::string(65, 'r')}), "--replica-id: "},
        // Misc.
        BadCase{WithModel({"--served-model-name="}), "--served-model-name is empty"},
        BadCase{WithModel({"--chat-template", "vicuna"}),
                "--chat-template: unknown chat template 'vicuna'"},
        BadCase{WithModel({"--shutdown-grace", "-1"}), "--shutdown-grace must be in [0, 3600]"},
        BadCase{WithModel({"--shutdown-grace", "4000"}), "--shutdown-grace must be in [0, 3600]"},
        BadCase{WithModel({"--log-level", "loud"}), "--log-level: unknown level 'loud'"},
        BadCase{WithModel({"--session-dir="}), "--session-dir is empty"},
        BadCase{WithModel({"--tls-cert", "c.pem"}), "--tls-cert and --tls-key go together"},
        BadCase{WithModel({"--tls-key", "k.pem"}), "--tls-cert and --tls-key go together"},
        BadCase{WithModel({"--tls-client-ca", "ca.pem"}), "--tls-client-ca needs --tls-cert"}));

TEST(ServerByteSizeTest, PlainAndBinaryMultiples) {
  EXPECT_EQ(*ParseByteSize("1"), 1);
  EXPECT_EQ(*ParseByteSize("1073741824"), int64_t{1} << 30);
  EXPECT_EQ(*ParseByteSize("64k"), 64 * 1024);
  EXPECT_EQ(*ParseByteSize("64K"), 64 * 1024);
  EXPECT_EQ(*ParseByteSize("512M"), int64_t{512} * 1024 * 1024);
  EXPECT_EQ(*ParseByteSize("2G"), int64_t{2} * 1024 * 1024 * 1024);
  EXPECT_EQ(*ParseByteSize("3t"), int64_t{3} * 1024 * 1024 * 1024 * 1024);
  EXPECT_EQ(*ParseByteSize("8388607T"), int64_t{8388607} << 40);  // largest that fits
}

TEST(ServerByteSizeTest, RejectsWhatIsNotAPositiveSize) {
  for (const char* bad :
       {"", "G", "0", "0K", "-5", "1.5M", "12Q", "1GB", "8388608T", "99999999999999999999"}) {
    auto n = ParseByteSize(bad);
    ASSERT_FALSE(n.ok()) << bad << " -> " << *n;
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace funnel
