#include "server/inference_service.h"

#include <chrono>
#include <span>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/proto_conversion.h"
#include "server/status_conversion.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

// How often a streaming handler checks its call for cancellation while no event arrives.
constexpr absl::Duration kPollInterval = absl::Milliseconds(20);
constexpr size_t kMaxRequestIdBytes = 128;

// Request ids travel in metadata and logs: printable, no spaces.
bool ValidRequestId(const std::string& id) {
  if (id.empty() || id.size() > kMaxRequestIdBytes) return false;
  for (char c : id) {
    const bool ok = absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
                    c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

absl::Time DeadlineOf(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

std::string OwnerLabel(const std::string& owner) { return owner.empty() ? "anonymous" : owner; }

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

std::span<const int32_t> IdsOf(const v1::PromptIds& ids) {
  return {ids.ids().data(), static_cast<size_t>(ids.ids_size())};
}

}  // namespace

InferenceService::InferenceService(Engine* engine, const PromptEncoder* encoder,
                                   const ApiKeyAuth* auth, ServerMetrics* metrics,
                                   ServedModelInfo info)
    : engine_(engine), encoder_(encoder), auth_(auth), metrics_(metrics), info_(std::move(info)) {}

absl::StatusOr<std::string> InferenceService::Authenticate(
    const grpc::ServerContext& context) const {
  if (!auth_->enabled()) return std::string();
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return auth_->Authenticate(nullptr);
  const std::string value(it->second.data(), it->second.size());
  return auth_->Authenticate(&value);
}

absl::StatusOr<std::string> InferenceService::AssignId(const std::string& requested) {
  if (requested.empty()) {
    return absl::StrCat("req-", info_.replica_id, "-", next_id_.fetch_add(1));
  }
  if (!ValidRequestId(requested)) {
    return absl::InvalidArgumentError(absl::StrCat("request_id must be 1 to ", kMaxRequestIdBytes,
                                                   " characters of [A-Za-z0-9._:-]"));
  }
  return requested;
}

absl::StatusOr<std::vector<int32_t>> InferenceService::EncodeInput(
    const v1::GenerateRequest& request) const {
  const bool continuation = !request.session_id().empty();
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt:
      return encoder_->EncodeText(request.prompt(), continuation);
    case v1::GenerateRequest::kPromptIds:
      return encoder_->CheckIds(IdsOf(request.prompt_ids()));
    case v1::GenerateRequest::kMessages:
      return encoder_->EncodeMessages(MessagesFromProto(request.messages()),
                                      request.chat_template(), continuation,
                                      /*add_generation_prompt=*/true);
    case v1::GenerateRequest::INPUT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("one of prompt, prompt_ids or messages is required");
}

absl::StatusOr<GenerateRequest> InferenceService::BuildRequest(const v1::GenerateRequest& request,
                                                               Call& call,
                                                               const grpc::ServerContext& context) {
  GenerateRequest req;
  req.request_id = call.id;
  req.owner = call.owner;
  if (!request.chat_template().empty() && request.input_case() != v1::GenerateRequest::kMessages) {
    return absl::InvalidArgumentError("chat_template applies to messages only");
  }
  auto prompt = EncodeInput(request);
  if (!prompt.ok()) return prompt.status();
  req.prompt = std::move(*prompt);
  auto sampling = SamplingFromProto(request.sampling());
  if (!sampling.ok()) return sampling.status();
  req.sampling = std::move(sampling->params);
  req.top_logprobs = sampling->top_logprobs;
  auto policy =
      KvPolicyFromProto(request.kv_policy(), request.has_kv_policy(), info_.default_kv_policy);
  if (!policy.ok()) return policy.status();
  req.kv_policy = *policy;
  req.session_id = request.session_id();
  if (request.session_mode() != v1::SESSION_MODE_FORK &&
      request.session_mode() != v1::SESSION_MODE_APPEND) {
    return absl::InvalidArgumentError("session_mode: unknown value");
  }
  req.session_mode =
      request.session_mode() == v1::SESSION_MODE_APPEND ? SessionMode::kAppend : SessionMode::kFork;
  if (req.session_mode == SessionMode::kAppend && req.session_id.empty()) {
    return absl::InvalidArgumentError("session_mode APPEND needs a session_id");
  }
  req.deadline = DeadlineOf(context);
  return req;
}

grpc::Status InferenceService::Reject(const std::string& id, const absl::Status& status) {
  metrics_->RecordRejection(status.code());
  spdlog::info("request {} rejected: {}", id.empty() ? "-" : id, status.ToString());
  return ToGrpcStatus(status);
}

bool InferenceService::Reserve(const std::string& id, const std::string& owner) {
  std::lock_guard<std::mutex> lock(mu_);
  return live_.try_emplace(id, Live{owner, nullptr, false}).second;
}

bool InferenceService::Attach(const std::string& id, std::shared_ptr<OutputStream> stream) {
  std::lock_guard<std::mutex> lock(mu_);
  Live& live = live_[id];
  live.stream = std::move(stream);
  return live.cancel_requested;
}

void InferenceService::Unregister(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  live_.erase(id);
}

grpc::Status InferenceService::Generate(grpc::ServerContext* context,
                                        const v1::GenerateRequest* request,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  Call call;
  call.start = absl::Now();
  auto owner = Authenticate(*context);
  if (!owner.ok()) return Reject(request->request_id(), owner.status());
  call.owner = *owner;
  auto id = AssignId(request->request_id());
  if (!id.ok()) return Reject("", id.status());
  call.id = *id;
  if (draining_.load()) return Reject(call.id, absl::UnavailableError("server is shutting down"));
  auto req = BuildRequest(*request, call, *context);
  if (!req.ok()) return Reject(call.id, req.status());
  if (!Reserve(call.id, call.owner)) {
    return Reject(call.id, absl::AlreadyExistsError(
                               absl::StrCat("request_id '", call.id, "' is already running")));
  }
  const std::vector<int32_t> prompt = req->prompt;
  auto stream = engine_->Submit(*std::move(req));
  if (!stream.ok()) {
    Unregister(call.id);
    return Reject(call.id, stream.status());
  }
  if (Attach(call.id, *stream)) StopRequest(call, **stream);  // Cancel came before the stream
  context->AddInitialMetadata("x-request-id", call.id);
  grpc::Status status = StreamEvents(context, **stream, call, prompt, writer);
  Unregister(call.id);
  return status;
}

void InferenceService::StopRequest(Call& call, OutputStream& stream) {
  stream.RequestCancel();
  absl::Status s = engine_->Cancel(call.id);
  if (!s.ok() && !absl::IsNotFound(s)) {
    spdlog::warn("request {}: cancel failed: {}", call.id, s.ToString());
  }
}

grpc::Status InferenceService::StreamEvents(grpc::ServerContext* context, OutputStream& stream,
                                            Call& call, const std::vector<int32_t>& prompt,
                                            grpc::ServerWriter<v1::GenerateResponse>* writer) {
  writer->SendInitialMetadata();  // the client learns x-request-id before the first token
  v1::GenerateResponse msg;
  msg.set_request_id(call.id);
  while (true) {
    if (context->IsCancelled()) {
      StopRequest(call, stream);
      const bool expired = absl::Now() >= DeadlineOf(*context);
      spdlog::info("request {} owner={} {} after {} tokens", call.id, OwnerLabel(call.owner),
                   expired ? "deadline exceeded" : "cancelled by the client", call.tokens);
      return expired ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded")
                     : grpc::Status::CANCELLED;
    }
    std::optional<OutputStream::Event> event = stream.Next(kPollInterval);
    if (!event) continue;
    if (auto* final = std::get_if<FinalEvent>(&*event)) return Finish(*final, call, prompt, writer);
    const TokenEvent& token = std::get<TokenEvent>(*event);
    if (!call.first_token) call.first_token = absl::Now();
    ++call.tokens;
    TokenEventToProto(token, encoder_->tokenizer(), msg.mutable_delta());
    if (!writer->Write(msg)) {
      StopRequest(call, stream);
      spdlog::info("request {} owner={} client gone after {} tokens", call.id,
                   OwnerLabel(call.owner), call.tokens);
      return grpc::Status::CANCELLED;
    }
  }
}

grpc::Status InferenceService::Finish(const FinalEvent& final, Call& call,
                                      const std::vector<int32_t>& prompt,
                                      grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const absl::Time end = absl::Now();
  const Usage& u = final.usage;
  spdlog::info(
      "request {} owner={} {} finish={} prompt_tokens={} reused={} completion_tokens={} "
      "queue_ms={:.1f} ttft_ms={:.1f} total_ms={:.1f}",
      call.id, OwnerLabel(call.owner), final.status.ok() ? "ok" : final.status.ToString(),
      final.finish_reason, u.prompt_tokens, u.session_tokens_reused, u.completion_tokens,
      u.queue_ms, u.ttft_ms, absl::ToDoubleMilliseconds(end - call.start));
  if (!final.status.ok()) {
    if (absl::IsResourceExhausted(final.status)) metrics_->RecordRejection(final.status.code());
    return ToGrpcStatus(final.status);
  }
  std::optional<double> ttft, tpot;
  if (call.first_token) ttft = Seconds(*call.first_token - call.start);
  if (call.first_token && call.tokens >= 2) {
    tpot = Seconds(end - *call.first_token) / static_cast<double>(call.tokens - 1);
  }
  metrics_->RecordRequest(ttft, tpot, Seconds(end - call.start));
  v1::GenerateResponse msg;
  msg.set_request_id(call.id);
  v1::GenerateFinal* out = msg.mutable_final();
  out->set_finish_reason(FinishReasonToProto(final.finish_reason));
  UsageToProto(u, out->mutable_usage());
  out->set_text(ToValidUtf8(final.text));
  out->mutable_prompt_ids()->Assign(prompt.begin(), prompt.end());
  writer->Write(msg);  // a client gone now changes nothing: the request is over
  return grpc::Status::OK;
}

grpc::Status InferenceService::Cancel(grpc::ServerContext* context,
                                      const v1::CancelRequest* request, v1::CancelResponse*) {
  auto owner = Authenticate(*context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  std::shared_ptr<OutputStream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(request->request_id());
    if (it == live_.end() || it->second.owner != *owner) {
      return ToGrpcStatus(
          absl::NotFoundError(absl::StrCat("no running request '", request->request_id(), "'")));
    }
    stream = it->second.stream;
    it->second.cancel_requested = true;
  }
  if (stream != nullptr) stream->RequestCancel();
  absl::Status s = engine_->Cancel(request->request_id());
  if (!s.ok() && !absl::IsNotFound(s)) return ToGrpcStatus(s);
  spdlog::info("request {} cancel requested", request->request_id());
  return grpc::Status::OK;
}

absl::StatusOr<std::vector<int32_t>> InferenceService::EncodeSessionContext(
    const v1::CreateSessionRequest& request) const {
  if (!request.chat_template().empty() &&
      request.input_case() != v1::CreateSessionRequest::kMessages) {
    return absl::InvalidArgumentError("chat_template applies to messages only");
  }
  switch (request.input_case()) {
    case v1::CreateSessionRequest::kPrompt:
      return encoder_->EncodeText(request.prompt(), /*continuation=*/false);
    case v1::CreateSessionRequest::kPromptIds:
      return encoder_->CheckIds(IdsOf(request.prompt_ids()));
    case v1::CreateSessionRequest::kMessages:
      // The context is a conversation so far; questions open the assistant turn themselves.
      return encoder_->EncodeMessages(MessagesFromProto(request.messages()),
                                      request.chat_template(), /*continuation=*/false,
                                      /*add_generation_prompt=*/false);
    case v1::CreateSessionRequest::INPUT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("one of prompt, prompt_ids or messages is required");
}

grpc::Status InferenceService::CreateSession(grpc::ServerContext* context,
                                             const v1::CreateSessionRequest* request,
                                             v1::Session* response) {
  auto owner = Authenticate(*context);
  if (!owner.ok()) return Reject("session", owner.status());
  if (draining_.load()) return Reject("session", absl::UnavailableError("server is shutting down"));
  CreateSessionRequest req;
  req.owner = *owner;
  auto context_ids = EncodeSessionContext(*request);
  if (!context_ids.ok()) return Reject("session", context_ids.status());
  req.context = std::move(*context_ids);
  auto policy =
      KvPolicyFromProto(request->kv_policy(), request->has_kv_policy(), info_.default_kv_policy);
  if (!policy.ok()) return Reject("session", policy.status());
  req.kv_policy = *policy;
  if (request->ttl_seconds() < 0) {
    return Reject("session", absl::InvalidArgumentError("ttl_seconds must be >= 0"));
  }
  req.ttl = absl::Seconds(request->ttl_seconds());
  const size_t num_tokens = req.context.size();
  auto info = engine_->CreateSession(std::move(req));
  if (!info.ok()) return Reject("session", info.status());
  SessionToProto(*info, response);
  spdlog::info("session {} created owner={} tokens={} kv_bytes={} method={}", info->session_id,
               OwnerLabel(*owner), num_tokens, info->kv_bytes,
               KvMethodName(info->kv_policy.method));
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetSession(grpc::ServerContext* context,
                                          const v1::GetSessionRequest* request,
                                          v1::Session* response) {
  auto owner = Authenticate(*context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  auto info = engine_->GetSession(request->session_id(), *owner);
  if (!info.ok()) return ToGrpcStatus(info.status());
  SessionToProto(*info, response);
  return grpc::Status::OK;
}

grpc::Status InferenceService::ListSessions(grpc::ServerContext* context,
                                            const v1::ListSessionsRequest*,
                                            v1::ListSessionsResponse* response) {
  auto owner = Authenticate(*context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  auto sessions = engine_->ListSessions(*owner);
  if (!sessions.ok()) return ToGrpcStatus(sessions.status());
  for (const SessionInfo& info : *sessions) SessionToProto(info, response->add_sessions());
  return grpc::Status::OK;
}

grpc::Status InferenceService::DeleteSession(grpc::ServerContext* context,
                                             const v1::DeleteSessionRequest* request,
                                             v1::DeleteSessionResponse*) {
  auto owner = Authenticate(*context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  absl::Status s = engine_->DeleteSession(request->session_id(), *owner);
  if (s.ok())
    spdlog::info("session {} deleted owner={}", request->session_id(), OwnerLabel(*owner));
  return ToGrpcStatus(s);
}

void InferenceService::FillModel(v1::Model* model) const {
  model->set_id(info_.served_name);
  model->set_context_length(info_.context_length);
  model->set_vocab_size(info_.vocab_size);
  model->set_num_layers(info_.num_layers);
}

grpc::Status InferenceService::ListModels(grpc::ServerContext* context,
                                          const v1::ListModelsRequest*,
                                          v1::ListModelsResponse* response) {
  auto owner = Authenticate(*context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  FillModel(response->add_models());
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetServerInfo(grpc::ServerContext* context,
                                             const v1::GetServerInfoRequest*,
                                             v1::ServerInfo* response) {
  auto owner = Authenticate(*context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  FillModel(response->mutable_model());
  KvPolicyToProto(info_.default_kv_policy, response->mutable_default_kv_policy());
  const EngineStats stats = engine_->Stats();
  response->set_block_size(info_.block_size);
  response->set_pool_blocks(stats.blocks_total);
  response->set_pool_bytes(stats.blocks_total * info_.block_bytes);
  response->set_replica_id(info_.replica_id);
  response->set_version(info_.version);
  response->set_max_num_seqs(info_.max_num_seqs);
  response->set_max_prompt_tokens(info_.max_prompt_tokens);
  response->set_chat_template(info_.chat_template);
  return grpc::Status::OK;
}

}  // namespace funnel
