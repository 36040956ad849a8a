// The gateway's TLS with certificates made in memory (test_certificates.h): loading and checking
// the PEM files its flags name, HTTPS and mutual TLS on its listener (cpp-httplib clients), and
// TLS, mutual TLS and the server-name override on its gRPC channels (a TLS gRPC server on
// 127.0.0.1, probed through the backend pool).
#include "server/gateway/gateway_tls.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "server/auth.h"
#include "server/gateway/backend_pool.h"
#include "server/gateway/gateway_metrics.h"
#include "server/gateway/gateway_server.h"
#include "tests/unit/gateway/test_certificates.h"

namespace funnel {
namespace {

using testing::MakeTestCa;
using testing::MakeTestCertificate;
using testing::TestCertificate;

constexpr char kLocalSan[] = "IP:127.0.0.1,DNS:localhost";

// PEM files in a fresh directory: ca, other-ca (unrelated), server (127.0.0.1, signed by ca),
// client (signed by ca), stranger (a client signed by other-ca), named (only
// DNS:backend.internal), and some broken ones.
class TlsFiles {
 public:
  TlsFiles() {
    std::string pattern = ::testing::TempDir() + "funnel-gw-tls-XXXXXX";
    dir_ = mkdtemp(pattern.data()) != nullptr ? pattern : std::string();
    ca_ = MakeTestCa("funnel-test-ca");
    const TestCertificate other_ca = MakeTestCa("funnel-test-other-ca");
    Write("ca.pem", ca_.cert_pem);
    Write("other-ca.pem", other_ca.cert_pem);
    WritePair("server", MakeTestCertificate(ca_, "server", kLocalSan));
    WritePair("client", MakeTestCertificate(ca_, "client", ""));
    WritePair("stranger", MakeTestCertificate(other_ca, "stranger", ""));
    WritePair("named", MakeTestCertificate(ca_, "named", "DNS:backend.internal"));
    Write("server-encrypted.key", testing::EncryptTestKey(Read("server.key"), "secret"));
    Write("garbage.pem",
          "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
          "-----END CERTIFICATE-----\n");
    Write("text.pem", "hello\n");
  }
  ~TlsFiles() {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  bool ok() const { return !dir_.empty(); }
  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }
  const std::string& Read(const std::string& name) const { return texts_.at(name); }

 private:
  void Write(const std::string& name, const std::string& text) {
    ASSERT_TRUE(testing::WriteTestFile(Path(name), text)) << Path(name);
    texts_[name] = text;
  }
  void WritePair(const std::string& name, const TestCertificate& c) {
    Write(name + ".pem", c.cert_pem);
    Write(name + ".key", c.key_pem);
  }

  std::string dir_;
  TestCertificate ca_;
  std::map<std::string, std::string> texts_;
};

// ---------------------------------------------------------------------------------------------
// Loading the files

class GatewayTlsFilesTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(files_.ok()); }

  HttpsFiles Https(const std::string& cert, const std::string& key, const std::string& ca = "") {
    return {files_.Path(cert), files_.Path(key), ca.empty() ? "" : files_.Path(ca)};
  }

  TlsFiles files_;
};

TEST_F(GatewayTlsFilesTest, NoHttpsFilesMeansPlainHttp) {
  auto c = LoadHttpsCredentials(HttpsFiles());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->has_value());
  auto server = MakeHttpServer(std::nullopt);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(dynamic_cast<httplib::SSLServer*>(server->get()), nullptr);
}

TEST_F(GatewayTlsFilesTest, HttpsCredentialsHoldTheFiles) {
  auto c = LoadHttpsCredentials(Https("server.pem", "server.key", "ca.pem"));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->cert_chain_pem, files_.Read("server.pem"));
  EXPECT_EQ((*c)->key_pem, files_.Read("server.key"));
  EXPECT_EQ((*c)->client_ca_pem, files_.Read("ca.pem"));
  auto server = MakeHttpServer(*c);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_NE(dynamic_cast<httplib::SSLServer*>(server->get()), nullptr);
}

// A chain file with the leaf then its CA (an intermediate's place) is accepted.
TEST_F(GatewayTlsFilesTest, ChainFilesAreAccepted) {
  ASSERT_TRUE(testing::WriteTestFile(files_.Path("chain.pem"),
                                     files_.Read("server.pem") + files_.Read("ca.pem")));
  auto c = LoadHttpsCredentials(Https("chain.pem", "server.key"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(MakeHttpServer(*c).ok());
}

TEST_F(GatewayTlsFilesTest, BadHttpsFilesNameTheFlagAndTheFile) {
  struct Case {
    HttpsFiles files;
    std::string flag;
    std::string file;
    std::string says;
  };
  const Case cases[] = {
      {Https("missing.pem", "server.key"), "--tls-cert", "missing.pem", "cannot open"},
      {Https("server.key", "server.key"), "--tls-cert", "server.key", "no PEM certificate"},
      {Https("text.pem", "server.key"), "--tls-cert", "text.pem", "no PEM certificate"},
      {Https("garbage.pem", "server.key"), "--tls-cert", "garbage.pem", "malformed"},
      {Https("server.pem", "missing.key"), "--tls-key", "missing.key", "cannot open"},
      {Https("server.pem", "server.pem"), "--tls-key", "server.pem", "no usable PEM private key"},
      {Https("server.pem", "client.key"), "--tls-key", "client.key", "not the private key"},
      {Https("server.pem", "server-encrypted.key"), "--tls-key", "server-encrypted.key",
       "encrypted keys are not supported"},
      {Https("server.pem", "server.key", "text.pem"), "--tls-client-ca", "text.pem",
       "no PEM certificate"},
      {Https("server.pem", "server.key", "missing.pem"), "--tls-client-ca", "missing.pem",
       "cannot open"},
  };
  for (const Case& c : cases) {
    auto loaded = LoadHttpsCredentials(c.files);
    ASSERT_FALSE(loaded.ok()) << c.flag << " " << c.file;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(loaded.status().message());
    EXPECT_NE(message.find(c.flag + " " + files_.Path(c.file)), std::string::npos) << message;
    EXPECT_NE(message.find(c.says), std::string::npos) << message;
  }
}

TEST_F(GatewayTlsFilesTest, DirectoriesAreNotPemFiles) {
  auto loaded = LoadHttpsCredentials({files_.Path(""), files_.Path("server.key"), ""});
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("--tls-cert"), absl::string_view::npos);
}

TEST_F(GatewayTlsFilesTest, BackendTls) {
  auto off = LoadBackendTls(BackendTlsFiles());
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->has_value());

  BackendTlsFiles system_roots;
  system_roots.enabled = true;
  auto defaults = LoadBackendTls(system_roots);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  ASSERT_TRUE(defaults->has_value());
  EXPECT_EQ((*defaults)->root_certs_pem, "");
  EXPECT_EQ((*defaults)->client_cert_pem, "");
  EXPECT_EQ((*defaults)->server_name_override, "");

  BackendTlsFiles full{true, files_.Path("ca.pem"), files_.Path("client.pem"),
                       files_.Path("client.key"), "backend.internal"};
  auto tls = LoadBackendTls(full);
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_EQ((*tls)->root_certs_pem, files_.Read("ca.pem"));
  EXPECT_EQ((*tls)->client_cert_pem, files_.Read("client.pem"));
  EXPECT_EQ((*tls)->client_key_pem, files_.Read("client.key"));
  EXPECT_EQ((*tls)->server_name_override, "backend.internal");
}

TEST_F(GatewayTlsFilesTest, BadBackendTlsFilesNameTheFlag) {
  const std::pair<BackendTlsFiles, std::string> cases[] = {
      {{true, files_.Path("text.pem"), "", "", ""}, "--backend-tls-ca"},
      {{true, files_.Path("missing.pem"), "", "", ""}, "--backend-tls-ca"},
      {{true, "", files_.Path("client.key"), files_.Path("client.key"), ""}, "--backend-tls-cert"},
      {{true, "", files_.Path("client.pem"), files_.Path("server.key"), ""}, "--backend-tls-key"},
      {{true, "", files_.Path("client.pem"), files_.Path("missing.key"), ""}, "--backend-tls-key"},
  };
  for (const auto& [files, flag] : cases) {
    auto tls = LoadBackendTls(files);
    ASSERT_FALSE(tls.ok()) << flag;
    EXPECT_EQ(tls.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(tls.status().message().find(flag), absl::string_view::npos) << tls.status();
  }
}

// ---------------------------------------------------------------------------------------------
// The HTTPS listener

// A gateway over HTTPS whose one backend is probed up by a scripted probe (no gRPC needed).
class HttpsGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(files_.ok()); }

  void Start(const std::string& client_ca) {
    auto credentials = LoadHttpsCredentials({files_.Path("server.pem"), files_.Path("server.key"),
                                             client_ca.empty() ? "" : files_.Path(client_ca)});
    ASSERT_TRUE(credentials.ok()) << credentials.status();
    BackendPool::Options o;
    o.probe_interval = absl::Hours(1);
    pool_ = std::make_unique<BackendPool>(std::vector<std::string>{"127.0.0.1:1"}, o,
                                          [](size_t) -> absl::StatusOr<v1::ServerInfo> {
                                            v1::ServerInfo info;
                                            info.set_replica_id("r0");
                                            info.mutable_model()->set_id("m");
                                            return info;
                                          });
    pool_->ProbeDue(absl::Now());
    metrics_ = std::make_unique<GatewayMetrics>([this] { return pool_->Snapshot(); });
    GatewayServerOptions options;
    options.http_threads = 4;
    options.https = std::move(*credentials);
    auto server = GatewayServer::Start(options, pool_.get(), &auth_, metrics_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    gateway_ = std::move(*server);
  }

  void TearDown() override {
    if (gateway_) gateway_->Stop();
  }

  // A client trusting `ca` (a file name), presenting `identity` ("client", ...; "" for none).
  std::unique_ptr<httplib::SSLClient> Client(const std::string& ca, const std::string& identity) {
    std::unique_ptr<httplib::SSLClient> client;
    if (identity.empty()) {
      client = std::make_unique<httplib::SSLClient>("127.0.0.1", gateway_->port());
    } else {
      client = std::make_unique<httplib::SSLClient>("127.0.0.1", gateway_->port(),
                                                    files_.Path(identity + ".pem"),
                                                    files_.Path(identity + ".key"));
    }
    client->set_ca_cert_path(files_.Path(ca).c_str());
    client->enable_server_certificate_verification(true);
    client->set_connection_timeout(10, 0);
    client->set_read_timeout(10, 0);
    return client;
  }

  TlsFiles files_;
  ApiKeyAuth auth_;
  std::unique_ptr<BackendPool> pool_;
  std::unique_ptr<GatewayMetrics> metrics_;
  std::unique_ptr<GatewayServer> gateway_;
};

TEST_F(HttpsGatewayTest, ServesClientsThatTrustItsCa) {
  Start("");
  auto client = Client("ca.pem", "");
  auto health = client->Get("/health");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(nlohmann::json::parse(health->body)["backends_up"], 1);
  auto metrics = client->Get("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("funnel_gateway:requests_total"), std::string::npos);
  // Routes answer as over HTTP: a bad body is an OpenAI 400.
  auto bad = client->Post("/v1/chat/completions", "{", "application/json");
  ASSERT_TRUE(bad) << httplib::to_string(bad.error());
  EXPECT_EQ(bad->status, 400);
  EXPECT_TRUE(nlohmann::json::parse(bad->body).contains("error"));
}

TEST_F(HttpsGatewayTest, RefusesPlainHttpAndClientsThatDoNotTrustIt) {
  Start("");
  httplib::Client plain("127.0.0.1", gateway_->port());
  plain.set_read_timeout(10, 0);
  auto p = plain.Get("/health");
  EXPECT_FALSE(p && p->status == 200);

  auto stranger = Client("other-ca.pem", "");
  auto s = stranger->Get("/health");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), httplib::Error::SSLServerVerification);

  // The listener still serves after the failed handshakes.
  auto ok = Client("ca.pem", "")->Get("/health");
  ASSERT_TRUE(ok) << httplib::to_string(ok.error());
  EXPECT_EQ(ok->status, 200);
}

TEST_F(HttpsGatewayTest, MutualTlsNeedsACertificateFromTheClientCa) {
  Start("ca.pem");
  auto anonymous = Client("ca.pem", "")->Get("/health");
  EXPECT_FALSE(anonymous && anonymous->status == 200);
  auto stranger = Client("ca.pem", "stranger")->Get("/health");
  EXPECT_FALSE(stranger && stranger->status == 200);
  auto client = Client("ca.pem", "client")->Get("/health");
  ASSERT_TRUE(client) << httplib::to_string(client.error());
  EXPECT_EQ(client->status, 200);
}

// ---------------------------------------------------------------------------------------------
// TLS to the backends

class InfoService final : public v1::Inference::Service {
  grpc::Status GetServerInfo(grpc::ServerContext*, const v1::GetServerInfoRequest*,
                             v1::ServerInfo* response) override {
    response->set_replica_id("r7");
    response->mutable_model()->set_id("m");
    return grpc::Status::OK;
  }
};

class BackendTlsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(files_.ok()); }

  // A TLS gRPC server presenting `identity`; with `client_ca`, mutual TLS.
  void StartBackend(const std::string& identity, const std::string& client_ca) {
    grpc::SslServerCredentialsOptions options(
        client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_key_cert_pairs.push_back(
        {files_.Read(identity + ".key"), files_.Read(identity + ".pem")});
    if (!client_ca.empty()) options.pem_root_certs = files_.Read(client_ca);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(options), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // Probes the backend once through a pool with `tls`; its snapshot after.
  BackendSnapshot Probe(const std::optional<TlsOptions>& tls) {
    BackendPool::Options o;
    o.probe_interval = absl::Hours(1);
    o.max_backoff = absl::Hours(1);
    o.probe_timeout = absl::Seconds(10);
    o.tls = tls;
    BackendPool pool({absl::StrCat("127.0.0.1:", port_)}, o);
    pool.ProbeDue(absl::Now());
    return pool.Snapshot().at(0);
  }

  TlsOptions Tls(const std::string& ca, const std::string& identity, const std::string& name) {
    TlsOptions tls;
    tls.root_certs_pem = files_.Read(ca);
    if (!identity.empty()) {
      tls.client_cert_pem = files_.Read(identity + ".pem");
      tls.client_key_pem = files_.Read(identity + ".key");
    }
    tls.server_name_override = name;
    return tls;
  }

  TlsFiles files_;
  InfoService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(BackendTlsTest, ChannelsTrustTheGivenCaOnly) {
  StartBackend("server", "");
  const BackendSnapshot up = Probe(Tls("ca.pem", "", ""));
  EXPECT_TRUE(up.up);
  EXPECT_EQ(up.replica_id, "r7");
  EXPECT_FALSE(Probe(Tls("other-ca.pem", "", "")).up);
  EXPECT_FALSE(Probe(std::nullopt).up);  // plaintext to a TLS server
}

TEST_F(BackendTlsTest, MutualTlsAndServerNameOverride) {
  StartBackend("named", "ca.pem");  // certificate for backend.internal only
  EXPECT_TRUE(Probe(Tls("ca.pem", "client", "backend.internal")).up);
  EXPECT_FALSE(Probe(Tls("ca.pem", "client", "")).up);                    // 127.0.0.1: wrong name
  EXPECT_FALSE(Probe(Tls("ca.pem", "", "backend.internal")).up);          // no client certificate
  EXPECT_FALSE(Probe(Tls("ca.pem", "stranger", "backend.internal")).up);  // from another CA
}

}  // namespace
}  // namespace funnel
