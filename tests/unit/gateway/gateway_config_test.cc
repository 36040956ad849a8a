// funnel-gateway flag parsing: defaults, repeated and comma-separated backends, sizes, the TLS
// flags (HTTPS listener and TLS to the backends) and errors that name their flag.
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

TEST(GatewayConfig, TlsIsOffByDefault) {
  auto c = ParseGatewayFlags({"--backend", "a:1"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->https.enabled());
  EXPECT_TRUE(c->https.key_file.empty());
  EXPECT_TRUE(c->https.client_ca_file.empty());
  EXPECT_FALSE(c->backend_tls.enabled);
}

TEST(GatewayConfig, HttpsFlags) {
  auto c = ParseGatewayFlags({"--backend", "a:1", "--tls-cert", "s.pem", "--tls-key=s.key"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->https.enabled());
  EXPECT_EQ(c->https.cert_file, "s.pem");
  EXPECT_EQ(c->https.key_file, "s.key");
  EXPECT_EQ(c->https.client_ca_file, "");
  EXPECT_FALSE(c->backend_tls.enabled);  // independent of the listener

  c = ParseGatewayFlags({"--backend", "a:1", "--tls-cert", "s.pem", "--tls-key", "s.key",
                         "--tls-client-ca", "c.pem"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->https.client_ca_file, "c.pem");
}

TEST(GatewayConfig, BackendTlsSwitchAloneUsesSystemRoots) {
  // A switch takes no value: the next argument is a flag again.
  auto c = ParseGatewayFlags({"--backend-tls", "--backend", "a:1"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->backend_tls.enabled);
  EXPECT_EQ(c->backend_tls.ca_file, "");
  EXPECT_EQ(c->backend_tls.cert_file, "");
  EXPECT_EQ(c->backend_tls.server_name, "");
  EXPECT_EQ(c->backends, std::vector<std::string>({"a:1"}));
  EXPECT_FALSE(c->https.enabled());
}

TEST(GatewayConfig, EveryBackendTlsFlagTurnsItOn) {
  const std::vector<std::string> each[] = {
      {"--backend-tls-ca", "ca.pem"},
      {"--backend-tls-cert", "c.pem", "--backend-tls-key", "c.key"},
      {"--backend-tls-server-name", "backend.internal"},
  };
  for (const auto& flags : each) {
    std::vector<std::string> args = {"--backend", "a:1"};
    args.insert(args.end(), flags.begin(), flags.end());
    auto c = ParseGatewayFlags(args);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->backend_tls.enabled) << flags[0];
  }
  auto c = ParseGatewayFlags({"--backend", "a:1", "--backend-tls", "--backend-tls-ca", "ca.pem",
                              "--backend-tls-cert", "c.pem", "--backend-tls-key", "c.key",
                              "--backend-tls-server-name", "backend.internal"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->backend_tls.ca_file, "ca.pem");
  EXPECT_EQ(c->backend_tls.cert_file, "c.pem");
  EXPECT_EQ(c->backend_tls.key_file, "c.key");
  EXPECT_EQ(c->backend_tls.server_name, "backend.internal");
  EXPECT_FALSE(c->https.enabled());
}

TEST(GatewayConfig, BadTlsCombinationsNameTheFlag) {
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--tls-cert", "s.pem"}, "--tls-key"},
      {{"--tls-key", "s.key"}, "--tls-cert"},
      {{"--tls-client-ca", "c.pem"}, "--tls-client-ca"},
      {{"--tls-client-ca", "c.pem", "--tls-key", "s.key"}, "--tls-cert"},
      {{"--tls-cert=", "--tls-key", "s.key"}, "--tls-cert"},
      {{"--tls-cert", "s.pem", "--tls-key="}, "--tls-key"},
      {{"--tls-cert", "s.pem", "--tls-key", "s.key", "--tls-client-ca="}, "--tls-client-ca"},
      {{"--tls-cert", "a.pem", "--tls-cert", "b.pem", "--tls-key", "s.key"}, "--tls-cert"},
      {{"--tls-cert"}, "--tls-cert"},
      {{"--backend-tls-cert", "c.pem"}, "--backend-tls-key"},
      {{"--backend-tls-key", "c.key"}, "--backend-tls-cert"},
      {{"--backend-tls-ca="}, "--backend-tls-ca"},
      {{"--backend-tls-server-name="}, "--backend-tls-server-name"},
      {{"--backend-tls=true"}, "--backend-tls"},
      {{"--backend-tls", "--backend-tls"}, "--backend-tls"},
  };
  for (const auto& [flags, flag] : cases) {
    std::vector<std::string> args = {"--backend", "a:1"};
    args.insert(args.end(), flags.begin(), flags.end());
    auto c = ParseGatewayFlags(args);
    ASSERT_FALSE(c.ok()) << flag;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(flag), std::string::npos) << c.status();
  }
}

TEST(GatewayConfig, UsageListsEveryTlsFlag) {
  for (const char* flag :
       {"--tls-cert", "--tls-key", "--tls-client-ca", "--backend-tls ", "--backend-tls-ca",
        "--backend-tls-cert", "--backend-tls-key", "--backend-tls-server-name"}) {
    EXPECT_NE(std::string(kGatewayUsage).find(flag), std::string::npos) << flag;
  }
}

}  // namespace
}  // namespace funnel
