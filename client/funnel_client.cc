#include "client/funnel_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"

namespace funnel {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Metadata values must be printable ASCII (RFC 7230 field values without obs-text).
absl::Status CheckApiKey(const std::string& key) {
  for (char c : key) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "the API key must be printable ASCII without spaces (check the key file for a stray "
          "character)");
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ChannelCredentials> MakeCredentials(const ClientOptions& options) {
  if (!options.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.tls->root_certs_pem;
  ssl.pem_private_key = options.tls->client_key_pem;
  ssl.pem_cert_chain = options.tls->client_cert_pem;
  return grpc::SslCredentials(ssl);
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const int code = static_cast<int>(status.error_code());
  // gRPC's codes are the canonical codes absl uses (0-16); anything else is UNKNOWN.
  const absl::StatusCode mapped =
      code >= 1 && code <= 16 ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown;
  return absl::Status(mapped, status.error_message());
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    default:
      return "";
  }
}

void GenerateCanceller::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

bool GenerateCanceller::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

void GenerateCanceller::Attach(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  context_ = context;
  // A context cancelled before its call starts cancels the call as soon as it starts.
  if (cancelled_) context_->TryCancel();
}

void GenerateCanceller::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  context_ = nullptr;
}

absl::StatusOr<std::unique_ptr<FunnelClient>> FunnelClient::Create(const ClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("no server address given");
  if (absl::Status st = CheckApiKey(options.api_key); !st.ok()) return st;
  if (options.unary_timeout <= absl::ZeroDuration() ||
      options.generate_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts must be positive");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // long prompt_ids in final messages
  if (options.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (options.tls && !options.tls->server_name_override.empty()) {
    args.SetSslTargetNameOverride(options.tls->server_name_override);
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.target, MakeCredentials(options), args);
  return std::make_unique<FunnelClient>(std::move(channel), options);
}

FunnelClient::FunnelClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::Inference::NewStub(channel_)) {}

FunnelClient::~FunnelClient() = default;

void FunnelClient::Prepare(grpc::ClientContext& context, absl::Duration timeout) const {
  if (!options_.api_key.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.api_key));
  }
  if (timeout != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
  context.set_wait_for_ready(options_.wait_for_ready);
}

template <typename Response, typename Call>
absl::StatusOr<Response> FunnelClient::Unary(Call&& call) {
  grpc::ClientContext context;
  Prepare(context, options_.unary_timeout);
  Response response;
  grpc::Status status = call(stub_.get(), &context, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<GenerateResult> FunnelClient::Generate(const v1::GenerateRequest& request,
                                                      const GenerateOptions& options) {
  GenerateCanceller* canceller = options.canceller;
  if (canceller != nullptr && canceller->cancelled()) {
    return absl::CancelledError("generation cancelled before it started");
  }
  grpc::ClientContext context;
  Prepare(context, options.timeout.value_or(options_.generate_timeout));
  if (canceller != nullptr) canceller->Attach(&context);
  absl::Cleanup detach = [canceller] {
    if (canceller != nullptr) canceller->Detach();
  };

  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub_->Generate(&context, request);
  GenerateResult result;
  bool got_final = false;
  bool stopped = false;
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    if (result.request_id.empty()) result.request_id = message.request_id();
    if (message.has_delta()) {
      const v1::TokenDelta& delta = message.delta();
      if (result.output_ids.empty()) result.ttft_ms = MsSince(t0);
      result.output_ids.push_back(delta.token_id());
      result.text += delta.text();
      if (options.on_delta && !options.on_delta(delta)) {
        stopped = true;
        context.TryCancel();
        break;
      }
    } else if (message.has_final()) {
      result.final = std::move(*message.mutable_final());
      got_final = true;
    }
  }
  if (stopped) {
    while (reader->Read(&message)) {
    }
  }
  grpc::Status status = reader->Finish();
  result.total_ms = MsSince(t0);
  if (stopped) return absl::CancelledError("generation stopped by the caller");
  if (!status.ok()) return FromGrpcStatus(status);
  if (!got_final) return absl::InternalError("the stream ended without a final message");
  result.text += result.final.text();
  return result;
}

absl::Status FunnelClient::Cancel(const std::string& request_id) {
  v1::CancelRequest request;
  request.set_request_id(request_id);
  return Unary<v1::CancelResponse>(
             [&](v1::Inference::Stub* stub, grpc::ClientContext* context,
                 v1::CancelResponse* response) { return stub->Cancel(context, request, response); })
      .status();
}

absl::StatusOr<v1::Session> FunnelClient::CreateSession(const v1::CreateSessionRequest& request) {
  return Unary<v1::Session>(
      [&](v1::Inference::Stub* stub, grpc::ClientContext* context, v1::Session* response) {
        return stub->CreateSession(context, request, response);
      });
}

absl::StatusOr<v1::Session> FunnelClient::GetSession(const std::string& session_id) {
  v1::GetSessionRequest request;
  request.set_session_id(session_id);
  return Unary<v1::Session>(
      [&](v1::Inference::Stub* stub, grpc::ClientContext* context, v1::Session* response) {
        return stub->GetSession(context, request, response);
      });
}

absl::StatusOr<std::vector<v1::Session>> FunnelClient::ListSessions() {
  v1::ListSessionsRequest request;
  auto response = Unary<v1::ListSessionsResponse>(
      [&](v1::Inference::Stub* stub, grpc::ClientContext* context, v1::ListSessionsResponse* r) {
        return stub->ListSessions(context, request, r);
      });
  if (!response.ok()) return response.status();
  return std::vector<v1::Session>(response->sessions().begin(), response->sessions().end());
}

absl::Status FunnelClient::DeleteSession(const std::string& session_id) {
  v1::DeleteSessionRequest request;
  request.set_session_id(session_id);
  return Unary<v1::DeleteSessionResponse>([&](v1::Inference::Stub* stub,
                                              grpc::ClientContext* context,
                                              v1::DeleteSessionResponse* response) {
           return stub->DeleteSession(context, request, response);
         })
      .status();
}

absl::StatusOr<std::vector<v1::Model>> FunnelClient::ListModels() {
  v1::ListModelsRequest request;
  auto response = Unary<v1::ListModelsResponse>(
      [&](v1::Inference::Stub* stub, grpc::ClientContext* context, v1::ListModelsResponse* r) {
        return stub->ListModels(context, request, r);
      });
  if (!response.ok()) return response.status();
  return std::vector<v1::Model>(response->models().begin(), response->models().end());
}

absl::StatusOr<v1::ServerInfo> FunnelClient::GetServerInfo() {
  v1::GetServerInfoRequest request;
  return Unary<v1::ServerInfo>(
      [&](v1::Inference::Stub* stub, grpc::ClientContext* context, v1::ServerInfo* response) {
        return stub->GetServerInfo(context, request, response);
      });
}

absl::Status FunnelClient::WaitForConnected(absl::Duration timeout) {
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  if (channel_->WaitForConnected(deadline)) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat("could not connect to ", options_.target,
                                                  " within ", absl::FormatDuration(timeout)));
}

}  // namespace funnel
