// funnel-server: flags → ServerConfig → model, tokenizer, runner (CPU or CUDA), engine → gRPC
// service
// (+ health, reflection) and the admin HTTP port → wait for SIGTERM/SIGINT → drain → exit 0.
//
// Exit status: 0 after a clean shutdown, 1 when the model or a port cannot be set up, 2 for bad
// flags (including an unusable --api-key-file, and --device cuda without a usable GPU).
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "runtime/engine/engine.h"
#include "runtime/exec/model_runner_factory.h"
#include "runtime/model/model_weights.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"
#include "runtime/util/status_macros.h"
#include "server/admin_http.h"
#include "server/auth.h"
#include "server/inference_service.h"
#include "server/prompt_encoder.h"
#include "server/server_config.h"
#include "server/server_metrics.h"
#include "server/unparsable_request_interceptor.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

constexpr char kVersion[] = "0.1.0";
constexpr int kMaxMessageBytes = 64 << 20;

// The loaded model and everything built on it; members are destroyed in reverse order.
struct Model {
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<Engine> engine;
};

// What durable session files record of the weights: the file's name and size.
std::string ModelFingerprint(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return absl::StrCat(std::filesystem::path(path).filename().string(), ":", ec ? 0 : size);
}

absl::StatusOr<Model> LoadModel(const ServerConfig& config) {
  Model m;
  auto weights = ModelWeights::Open(config.model_path);
  if (!weights.ok()) return weights.status();
  m.weights = std::move(*weights);
  auto tokenizer = Tokenizer::FromGguf(m.weights->gguf());
  if (!tokenizer.ok()) return tokenizer.status();
  m.tokenizer = std::move(*tokenizer);
  auto runner = CreateModelRunner(config.device, *m.weights, config.runner);
  if (!runner.ok()) return runner.status();
  m.runner = std::move(*runner);
  EngineConfig engine_config = config.engine;
  engine_config.model_fingerprint = ModelFingerprint(config.model_path);
  auto engine = Engine::Create(engine_config, m.runner.get(), m.tokenizer.get());
  if (!engine.ok()) return engine.status();
  m.engine = std::move(*engine);
  return m;
}

absl::StatusOr<ChatTemplate> ServerTemplate(const ServerConfig& config, const Model& model) {
  if (!config.chat_template.empty()) {
    return ChatTemplate::FromName(config.chat_template, *model.tokenizer);
  }
  return ChatTemplate::FromGguf(model.weights->gguf(), *model.tokenizer);
}

ServedModelInfo MakeInfo(const ServerConfig& config, const Model& model,
                         const PromptEncoder& encoder) {
  const ModelConfig& mc = model.weights->config();
  ServedModelInfo info;
  info.served_name = config.served_model_name.empty() ? mc.name : config.served_model_name;
  info.context_length = mc.context_length;
  info.vocab_size = mc.vocab_size;
  info.num_layers = mc.num_layers;
  info.block_size = model.runner->block_size();
  info.block_bytes = model.runner->block_bytes();
  info.pool_blocks = model.runner->pool().num_blocks();
  info.default_kv_policy = config.engine.default_kv_policy;
  info.replica_id = config.engine.replica_id;
  info.max_num_seqs = config.engine.max_num_seqs;
  info.max_prompt_tokens =
      config.engine.max_prompt_tokens > 0 ? config.engine.max_prompt_tokens : mc.context_length;
  info.version = kVersion;
  info.chat_template = encoder.server_template_name();
  return info;
}

std::string HostPort(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos && host.front() != '[';
  return v6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

// Writes "PORT\n" atomically (temp file + rename), so a reader never sees a partial file.
absl::Status WritePortFile(const std::string& path, int port) {
  if (path.empty()) return absl::OkStatus();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.good()) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  if (!in || s.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read a PEM file at ", path));
  }
  return s.str();
}

// Plaintext, TLS (--tls-cert/--tls-key) or mutual TLS (plus --tls-client-ca).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcCredentials(const ServerConfig& c) {
  if (c.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      c.tls_client_ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(c.tls_cert_file, "--tls-cert"));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem(c.tls_key_file, "--tls-key"));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!c.tls_client_ca_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(c.tls_client_ca_file, "--tls-client-ca"));
  }
  return grpc::SslServerCredentials(options);
}

std::unique_ptr<grpc::Server> StartGrpc(const ServerConfig& config,
                                        std::shared_ptr<grpc::ServerCredentials> credentials,
                                        InferenceService* service, int* bound_port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(HostPort(config.host, config.port), std::move(credentials), bound_port);
  builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  // Generate and the quick unary methods run on the callback API (no gRPC thread per call; the
  // engine's queue bounds streams). The sync pool serves CreateSession, DeleteSession and
  // reflection, each holding a thread while it runs: cap it like the engine's own capacity;
  // beyond that gRPC answers RESOURCE_EXHAUSTED.
  grpc::ResourceQuota quota("funnel-server");
  quota.SetMaxThreads(config.engine.max_num_seqs + config.engine.max_queue + 64);
  builder.SetResourceQuota(quota);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<UnparsableRequestInterceptorFactory>());
  builder.experimental().SetInterceptorCreators(std::move(creators));
  return builder.BuildAndStart();
}

void SetHealth(grpc::Server& server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // the server as a whole ("")
  health->SetServingStatus(v1::Inference::service_full_name(), serving);
}

// Blocks until SIGTERM or SIGINT; meanwhile turns readiness off if the engine dies.
int WaitForSignal(const sigset_t& signals, Engine& engine, grpc::Server& server,
                  std::atomic<bool>& ready) {
  const timespec tick{0, 200 * 1000 * 1000};
  while (true) {
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) return sig;
    if (ready.load() && !engine.healthy()) {
      spdlog::error("engine is dead: readiness off, health NOT_SERVING");
      ready.store(false);
      SetHealth(server, false);
    }
  }
}

absl::StatusOr<ApiKeyAuth> LoadAuth(const ServerConfig& config) {
  if (config.api_key_file.empty()) return ApiKeyAuth();
  return ApiKeyAuth::FromFile(config.api_key_file);
}

// Starts the admin listener; none with --admin-port -1.
absl::StatusOr<std::unique_ptr<AdminHttpServer>> StartAdmin(const ServerConfig& config,
                                                            AdminHandlers handlers) {
  if (config.admin_port < 0) return std::unique_ptr<AdminHttpServer>();
  return AdminHttpServer::Start(config.host, config.admin_port, std::move(handlers));
}

// Announces the bound ports (stderr, port files) once the server is ready.
absl::Status Announce(const ServerConfig& config, int grpc_port, const AdminHttpServer* admin) {
  if (absl::Status s = WritePortFile(config.port_file, grpc_port); !s.ok()) return s;
  if (admin != nullptr) {
    if (absl::Status s = WritePortFile(config.admin_port_file, admin->port()); !s.ok()) return s;
  }
  std::fprintf(stderr, "listening on %s\n", HostPort(config.host, grpc_port).c_str());
  if (admin != nullptr) {
    std::fprintf(stderr, "admin listening on %s\n", HostPort(config.host, admin->port()).c_str());
  }
  return absl::OkStatus();
}

// Stops admitting, lets in-flight requests finish within the grace period, stops listening.
void Drain(const ServerConfig& config, InferenceService& service, Engine& engine,
           grpc::Server& server, AdminHttpServer* admin, std::atomic<bool>& ready) {
  ready.store(false);
  SetHealth(server, false);
  service.StartDraining();
  engine.Shutdown(config.shutdown_grace);  // running requests finish or are cancelled
  spdlog::debug("engine stopped");
  // Every request has ended by now; the deadline only bounds waiting for clients to close their
  // connections after GOAWAY (idle channels may keep them open).
  server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  spdlog::debug("gRPC stopped");
  if (admin != nullptr) admin->Stop();
}

int Serve(const ServerConfig& config, const sigset_t& signals) {
  auto auth = LoadAuth(config);
  if (!auth.ok()) {
    std::fprintf(stderr, "funnel-server: %s\n", std::string(auth.status().message()).c_str());
    return 2;
  }
  auto credentials = GrpcCredentials(config);
  if (!credentials.ok()) {
    std::fprintf(stderr, "funnel-server: %s\n",
                 std::string(credentials.status().message()).c_str());
    return 2;
  }
  auto model = LoadModel(config);
  if (!model.ok()) {
    spdlog::critical("cannot load {}: {}", config.model_path, model.status().ToString());
    return 1;
  }
  Engine& engine = *model->engine;
  auto tmpl = ServerTemplate(config, *model);
  if (!tmpl.ok()) spdlog::warn("chat requests must name a template: {}", tmpl.status().ToString());
  PromptEncoder encoder(*model->tokenizer, std::move(tmpl));
  ServerMetrics metrics([&engine] { return engine.Stats(); });
  const ServedModelInfo info = MakeInfo(config, *model, encoder);
  InferenceService service(&engine, &encoder, &*auth, &metrics, info);

  int port = 0;
  std::unique_ptr<grpc::Server> server = StartGrpc(config, *credentials, &service, &port);
  if (server == nullptr || port == 0) {
    spdlog::critical("cannot listen on {}", HostPort(config.host, config.port));
    return 1;
  }
  std::atomic<bool> ready{false};
  auto admin = StartAdmin(config, {.ready = [&] { return ready.load() && engine.healthy(); },
                                   .metrics = [&metrics] { return metrics.Render(); }});
  if (!admin.ok()) {
    spdlog::critical("{}", admin.status().ToString());
    return 1;
  }
  SetHealth(*server, true);
  ready.store(true);
  if (absl::Status s = Announce(config, port, admin->get()); !s.ok()) {
    spdlog::critical("{}", s.ToString());
    return 1;
  }
  spdlog::info("serving {} ({}) on {} with {} threads, {} KV blocks of {} tokens, default kv {}",
               info.served_name, model->weights->config().Summary(), DeviceName(config.device),
               config.runner.num_threads, info.pool_blocks, info.block_size,
               KvMethodName(config.engine.default_kv_policy.method));

  const int sig = WaitForSignal(signals, engine, *server, ready);
  spdlog::info("received {}: draining for up to {}", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               absl::FormatDuration(config.shutdown_grace));
  Drain(config, service, engine, *server, admin->get(), ready);
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace funnel

int main(int argc, char** argv) {
  // Block the shutdown signals in every thread (threads inherit the mask); the main thread takes
  // them with sigtimedwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  spdlog::set_default_logger(spdlog::stderr_color_mt("funnel-server"));
  std::vector<std::string> args(argv + 1, argv + argc);
  auto config = funnel::ParseServerFlags(args);
  if (!config.ok()) {
    std::fprintf(stderr, "funnel-server: %s\n(see funnel-server --help)\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
  if (config->help) {
    std::fputs(funnel::kServerUsage, stdout);
    return 0;
  }
  if (absl::Status s = funnel::CheckDeviceAvailable(config->device); !s.ok()) {
    std::fprintf(stderr, "funnel-server: --device %s: %s\n(see funnel-server --help)\n",
                 funnel::DeviceName(config->device), std::string(s.message()).c_str());
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(config->log_level));
  return funnel::Serve(*config, signals);
}
