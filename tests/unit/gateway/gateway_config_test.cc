// funnel-gateway flag parsing: defaults, repeated and comma-separated backends, sizes and
// errors that name their flag.
#include "server/gateway/gateway_config.h"

#include <gtest/gtest.h>

namespace funnel {
namespace {

TEST(GatewayConfig, DefaultsAndBackends) {
  auto c = ParseGatewayFlags({"--backend", "a:1", "--backend=b:2,c:3"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->backends, std::vector<std::string>({"a:1", "b:2", "c:3"}));
  EXPECT_EQ(c->host, "127.0.0.1");
  EXPECT_EQ(c->port, 8080);
  EXPECT_EQ(c->max_body_bytes, 8 << 20);
  EXPECT_EQ(c->request_timeout, absl::InfiniteDuration());
  EXPECT_TRUE(c->api_key_file.empty());
}

TEST(GatewayConfig, EveryFlag) {
  auto c = ParseGatewayFlags({"--backend",
                              "a:1",
                              "--host",
                              "0.0.0.0",
                              "--port",
                              "0",
                              "--port-file",
                              "/tmp/p",
                              "--api-key-file",
                              "/tmp/k",
                              "--max-body-bytes",
                              "64K",
                              "--threads",
                              "4",
                              "--max-choices",
                              "2",
                              "--request-timeout",
                              "1.5",
                              "--probe-interval",
                              "0.5",
                              "--max-probe-backoff",
                              "3",
                              "--log-level",
                              "warn"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->host, "0.0.0.0");
  EXPECT_EQ(c->port, 0);
  EXPECT_EQ(c->port_file, "/tmp/p");
  EXPECT_EQ(c->api_key_file, "/tmp/k");
  EXPECT_EQ(c->max_body_bytes, 64 << 10);
  EXPECT_EQ(c->http_threads, 4);
  EXPECT_EQ(c->max_choices, 2);
  EXPECT_EQ(c->request_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(c->probe_interval, absl::Milliseconds(500));
  EXPECT_EQ(c->max_probe_backoff, absl::Seconds(3));
  EXPECT_EQ(c->log_level, "warn");
}

TEST(GatewayConfig, HelpNeedsNothingElse) {
  auto c = ParseGatewayFlags({"--help"});
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->help);
}

TEST(GatewayConfig, ErrorsNameTheFlag) {
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{}, "--backend"},
      {{"--backend", "a:1", "--backend", "a:1"}, "--backend"},
      {{"--backend", ""}, "--backend"},
      {{"--backend", "a:1", "--port", "70000"}, "--port"},
      {{"--backend", "a:1", "--port", "x"}, "--port"},
      {{"--backend", "a:1", "--port", "1", "--port", "2"}, "--port"},
      {{"--backend", "a:1", "--max-body-bytes", "0"}, "--max-body-bytes"},
      {{"--backend", "a:1", "--max-body-bytes", "12Q"}, "--max-body-bytes"},
      {{"--backend", "a:1", "--threads", "0"}, "--threads"},
      {{"--backend", "a:1", "--log-level", "loud"}, "--log-level"},
      {{"--backend", "a:1", "--nope", "1"}, "--nope"},
      {{"--backend", "a:1", "--api-key-file="}, "--api-key-file"},
      {{"--backend"}, "--backend"},
      {{"stray"}, "stray"},
  };
  for (const auto& [args, flag] : cases) {
    auto c = ParseGatewayFlags(args);
    ASSERT_FALSE(c.ok()) << flag;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(flag), std::string::npos) << c.status();
  }
}

}  // namespace
}  // namespace funnel
