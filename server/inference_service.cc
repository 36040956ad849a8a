#include "server/inference_service.h"

#include <chrono>
#include <deque>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/server_context.h"
#include "server/proto_conversion.h"
#include "server/status_conversion.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

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

absl::Time DeadlineOf(const grpc::ServerContextBase& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

std::string OwnerLabel(const std::string& owner) { return owner.empty() ? "anonymous" : owner; }

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

// A Generate call refused before it streamed: finishes with `status` at once.
class RefusedGenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit RefusedGenerateReactor(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

// A unary callback call answered on the calling thread: `body` fills the response and returns
// the status.
template <typename Body>
grpc::ServerUnaryReactor* AnswerUnary(grpc::CallbackServerContext* context, Body body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(body());
  return reactor;
}

}  // namespace

// One streaming Generate call: the engine's events, in order, as messages, then the status.
//
// Thread rules: Pump runs as the stream's listener, on the engine thread (after each event) or
// on the thread that starts the call, serialized by pump_mu_ so events keep their order; the
// reactions run on gRPC threads; mu_ guards the state. No thread waits for the engine. Whoever
// claims an operation under mu_ (writing_ for a write, finishing_ for Finish) starts it after
// releasing mu_, so at most one write is in flight, nothing starts after Finish, and OnDone
// (which needs Finish) cannot run while an operation is being started. The reactor holds itself
// (self_) until OnDone; the listener holds only a weak reference, and a done call ignores late
// events.
class InferenceService::GenerateReactor final
    : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(InferenceService* service, grpc::CallbackServerContext* context, Call call,
                  std::shared_ptr<OutputStream> stream)
      : service_(service), context_(context), stream_(std::move(stream)), call_(std::move(call)) {}

  // Sends the initial metadata (x-request-id, before the first token) and starts listening to
  // the engine's events.
  static void Start(std::shared_ptr<GenerateReactor> self);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  enum class Action { kNone, kWrite, kFinish };

  // Moves every event the stream holds to Deliver, without waiting.
  void Pump();
  void Deliver(OutputStream::Event event);
  // Sets how the call ends unless that is decided already; true when this call decided it.
  // Requires mu_.
  bool DecideEnd(grpc::Status status);
  // Ends the call early with `status` (unless it is already ending) and drops the request.
  void EndEarly(grpc::Status status, const std::string& why);
  // Asks the engine to drop the request (the call is ending early) and logs why.
  void Drop(const std::string& why);
  // Starts the next operation, if one is due.
  void Advance();
  Action NextAction();  // requires mu_

  InferenceService* const service_;
  grpc::CallbackServerContext* const context_;
  const std::shared_ptr<OutputStream> stream_;
  std::shared_ptr<GenerateReactor> self_;  // set by Start, dropped by OnDone

  std::mutex pump_mu_;  // one Pump at a time
  std::mutex mu_;
  Call call_;
  std::deque<OutputStream::Event> pending_;  // delivered, not yet written
  v1::GenerateResponse message_;             // the write in flight
  bool writing_ = false;
  bool finishing_ = false;
  std::optional<grpc::Status> status_;  // how the call ends, once decided
};

void InferenceService::GenerateReactor::Start(std::shared_ptr<GenerateReactor> self) {
  GenerateReactor& r = *self;
  r.self_ = self;
  r.context_->AddInitialMetadata("x-request-id", r.call_.id);
  r.StartSendInitialMetadata();
  std::weak_ptr<GenerateReactor> weak = self;
  r.stream_->SetListener([weak] {
    if (std::shared_ptr<GenerateReactor> alive = weak.lock()) alive->Pump();
  });
}

void InferenceService::GenerateReactor::Pump() {
  std::lock_guard<std::mutex> pump(pump_mu_);
  while (std::optional<OutputStream::Event> event = stream_->Next(absl::ZeroDuration())) {
    Deliver(*std::move(event));
  }
}

void InferenceService::GenerateReactor::Deliver(OutputStream::Event event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (status_) return;  // ending already: the rest is not sent
    pending_.push_back(std::move(event));
  }
  Advance();
}

void InferenceService::GenerateReactor::OnWriteDone(bool ok) {
  bool gone = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    gone = !ok && DecideEnd(grpc::Status::CANCELLED);
  }
  if (gone) Drop("client gone");
  Advance();
}

void InferenceService::GenerateReactor::OnCancel() {
  const bool expired = absl::Now() >= DeadlineOf(*context_);
  if (expired) {
    EndEarly(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded"),
             "deadline exceeded");
  } else {
    EndEarly(grpc::Status::CANCELLED, "cancelled by the client");
  }
  Advance();
}

void InferenceService::GenerateReactor::OnDone() {
  stream_->SetListener(nullptr);
  std::shared_ptr<GenerateReactor> self = std::move(self_);  // may delete this on return
}

bool InferenceService::GenerateReactor::DecideEnd(grpc::Status status) {
  if (status_) return false;
  status_ = std::move(status);
  return true;
}

void InferenceService::GenerateReactor::EndEarly(grpc::Status status, const std::string& why) {
  bool decided = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    decided = DecideEnd(std::move(status));
  }
  if (decided) Drop(why);
}

void InferenceService::GenerateReactor::Drop(const std::string& why) {
  service_->StopRequest(call_.id, *stream_);
  int64_t tokens = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tokens = call_.tokens;
  }
  spdlog::info("request {} owner={} {} after {} tokens", call_.id, OwnerLabel(call_.owner), why,
               tokens);
}

void InferenceService::GenerateReactor::Advance() {
  Action action = Action::kNone;
  grpc::Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    action = NextAction();
    if (action == Action::kFinish) status = *status_;
  }
  if (action == Action::kWrite) {
    StartWrite(&message_);
  } else if (action == Action::kFinish) {
    service_->Unregister(call_.id);  // before the status reaches the client
    Finish(std::move(status));
  }
}

InferenceService::GenerateReactor::Action InferenceService::GenerateReactor::NextAction() {
  while (true) {
    if (finishing_ || writing_) return Action::kNone;
    if (status_) {
      finishing_ = true;
      return Action::kFinish;
    }
    if (pending_.empty()) return Action::kNone;
    OutputStream::Event event = std::move(pending_.front());
    pending_.pop_front();
    if (const auto* token = std::get_if<TokenEvent>(&event)) {
      if (!call_.first_token) call_.first_token = absl::Now();
      ++call_.tokens;
      message_.set_request_id(call_.id);
      TokenEventToProto(*token, service_->encoder_->tokenizer(), message_.mutable_delta());
      writing_ = true;
      return Action::kWrite;
    }
    status_ = service_->EndRequest(std::get<FinalEvent>(event), call_, &message_);
    if (status_->ok()) {
      writing_ = true;  // the final message, then Finish(OK) once it is written (or not)
      return Action::kWrite;
    }
  }
}

InferenceService::InferenceService(Engine* engine, const PromptEncoder* encoder,
                                   const ApiKeyAuth* auth, ServerMetrics* metrics,
                                   ServedModelInfo info)
    : engine_(engine), encoder_(encoder), auth_(auth), metrics_(metrics), info_(std::move(info)) {}

absl::StatusOr<std::string> InferenceService::Authenticate(
    const grpc::ServerContextBase& context) const {
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

absl::StatusOr<GenerateRequest> InferenceService::BuildRequest(
    const v1::GenerateRequest& request, const Call& call, const grpc::ServerContextBase& context) {
  auto req = GenerateRequestFromProto(request, *encoder_, info_.default_kv_policy);
  if (!req.ok()) return req.status();
  req->request_id = call.id;
  req->owner = call.owner;
  req->deadline = DeadlineOf(context);
  return req;
}

absl::Status InferenceService::Reject(const std::string& id, const absl::Status& status) {
  metrics_->RecordRejection(status.code());
  spdlog::info("request {} rejected: {}", id.empty() ? "-" : id, status.ToString());
  return status;
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

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  Call call;
  call.start = absl::Now();
  auto stream = StartGenerate(*context, *request, call);
  if (!stream.ok()) return new RefusedGenerateReactor(ToGrpcStatus(stream.status()));
  auto reactor = std::make_shared<GenerateReactor>(this, context, std::move(call), *stream);
  GenerateReactor* raw = reactor.get();
  GenerateReactor::Start(std::move(reactor));  // it holds itself until OnDone
  return raw;
}

absl::StatusOr<std::shared_ptr<OutputStream>> InferenceService::StartGenerate(
    const grpc::ServerContextBase& context, const v1::GenerateRequest& request, Call& call) {
  auto owner = Authenticate(context);
  if (!owner.ok()) return Reject(request.request_id(), owner.status());
  call.owner = *owner;
  auto id = AssignId(request.request_id());
  if (!id.ok()) return Reject("", id.status());
  call.id = *id;
  if (draining_.load()) return Reject(call.id, absl::UnavailableError("server is shutting down"));
  auto req = BuildRequest(request, call, context);
  if (!req.ok()) return Reject(call.id, req.status());
  if (!Reserve(call.id, call.owner)) {
    return Reject(call.id, absl::AlreadyExistsError(
                               absl::StrCat("request_id '", call.id, "' is already running")));
  }
  call.prompt = req->prompt;
  auto stream = engine_->Submit(*std::move(req));
  if (!stream.ok()) {
    Unregister(call.id);
    return Reject(call.id, stream.status());
  }
  if (Attach(call.id, *stream)) StopRequest(call.id, **stream);  // Cancel came before the stream
  return stream;
}

void InferenceService::StopRequest(const std::string& id, OutputStream& stream) {
  stream.RequestCancel();
  absl::Status s = engine_->Cancel(id);
  if (!s.ok() && !absl::IsNotFound(s)) {
    spdlog::warn("request {}: cancel failed: {}", id, s.ToString());
  }
}

grpc::Status InferenceService::EndRequest(const FinalEvent& final, Call& call,
                                          v1::GenerateResponse* msg) {
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
  msg->Clear();
  msg->set_request_id(call.id);
  v1::GenerateFinal* out = msg->mutable_final();
  out->set_finish_reason(FinishReasonToProto(final.finish_reason));
  UsageToProto(u, out->mutable_usage());
  out->set_text(ToValidUtf8(final.text));
  out->mutable_prompt_ids()->Assign(call.prompt.begin(), call.prompt.end());
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* InferenceService::Cancel(grpc::CallbackServerContext* context,
                                                   const v1::CancelRequest* request,
                                                   v1::CancelResponse*) {
  return AnswerUnary(context, [&] { return DoCancel(*context, *request); });
}

grpc::Status InferenceService::DoCancel(const grpc::ServerContextBase& context,
                                        const v1::CancelRequest& request) {
  auto owner = Authenticate(context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  std::shared_ptr<OutputStream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(request.request_id());
    if (it == live_.end() || it->second.owner != *owner) {
      return ToGrpcStatus(
          absl::NotFoundError(absl::StrCat("no running request '", request.request_id(), "'")));
    }
    stream = it->second.stream;
    it->second.cancel_requested = true;
  }
  if (stream != nullptr) stream->RequestCancel();
  absl::Status s = engine_->Cancel(request.request_id());
  if (!s.ok() && !absl::IsNotFound(s)) return ToGrpcStatus(s);
  spdlog::info("request {} cancel requested", request.request_id());
  return grpc::Status::OK;
}

grpc::Status InferenceService::CreateSession(grpc::ServerContext* context,
                                             const v1::CreateSessionRequest* request,
                                             v1::Session* response) {
  auto owner = Authenticate(*context);
  if (!owner.ok()) return ToGrpcStatus(Reject("session", owner.status()));
  if (draining_.load()) {
    return ToGrpcStatus(Reject("session", absl::UnavailableError("server is shutting down")));
  }
  auto req = CreateSessionRequestFromProto(*request, *encoder_, info_.default_kv_policy);
  if (!req.ok()) return ToGrpcStatus(Reject("session", req.status()));
  req->owner = *owner;
  const size_t num_tokens = req->context.size();
  auto info = engine_->CreateSession(*std::move(req));
  if (!info.ok()) return ToGrpcStatus(Reject("session", info.status()));
  SessionToProto(*info, response);
  spdlog::info("session {} created owner={} tokens={} kv_bytes={} method={}", info->session_id,
               OwnerLabel(*owner), num_tokens, info->kv_bytes,
               KvMethodName(info->kv_policy.method));
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* InferenceService::GetSession(grpc::CallbackServerContext* context,
                                                       const v1::GetSessionRequest* request,
                                                       v1::Session* response) {
  return AnswerUnary(context, [&] { return DoGetSession(*context, *request, response); });
}

grpc::Status InferenceService::DoGetSession(const grpc::ServerContextBase& context,
                                            const v1::GetSessionRequest& request,
                                            v1::Session* response) {
  auto owner = Authenticate(context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  auto info = engine_->GetSession(request.session_id(), *owner);
  if (!info.ok()) return ToGrpcStatus(info.status());
  SessionToProto(*info, response);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* InferenceService::ListSessions(grpc::CallbackServerContext* context,
                                                         const v1::ListSessionsRequest*,
                                                         v1::ListSessionsResponse* response) {
  return AnswerUnary(context, [&] { return DoListSessions(*context, response); });
}

grpc::Status InferenceService::DoListSessions(const grpc::ServerContextBase& context,
                                              v1::ListSessionsResponse* response) {
  auto owner = Authenticate(context);
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
  if (s.ok()) {
    spdlog::info("session {} deleted owner={}", request->session_id(), OwnerLabel(*owner));
  }
  return ToGrpcStatus(s);
}

void InferenceService::FillModel(v1::Model* model) const {
  model->set_id(info_.served_name);
  model->set_context_length(info_.context_length);
  model->set_vocab_size(info_.vocab_size);
  model->set_num_layers(info_.num_layers);
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest*,
                                                       v1::ListModelsResponse* response) {
  return AnswerUnary(context, [&] { return DoListModels(*context, response); });
}

grpc::Status InferenceService::DoListModels(const grpc::ServerContextBase& context,
                                            v1::ListModelsResponse* response) {
  auto owner = Authenticate(context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  FillModel(response->add_models());
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* InferenceService::GetServerInfo(grpc::CallbackServerContext* context,
                                                          const v1::GetServerInfoRequest*,
                                                          v1::ServerInfo* response) {
  return AnswerUnary(context, [&] { return DoGetServerInfo(*context, response); });
}

grpc::Status InferenceService::DoGetServerInfo(const grpc::ServerContextBase& context,
                                               v1::ServerInfo* response) {
  auto owner = Authenticate(context);
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  FillModel(response->mutable_model());
  KvPolicyToProto(info_.default_kv_policy, response->mutable_default_kv_policy());
  response->set_block_size(info_.block_size);
  response->set_pool_blocks(info_.pool_blocks);
  response->set_pool_bytes(info_.pool_blocks * info_.block_bytes);
  response->set_replica_id(info_.replica_id);
  response->set_version(info_.version);
  response->set_max_num_seqs(info_.max_num_seqs);
  response->set_max_prompt_tokens(info_.max_prompt_tokens);
  response->set_chat_template(info_.chat_template);
  return grpc::Status::OK;
}

}  // namespace funnel
