#include "runtime/engine/engine.h"

#include <atomic>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/engine/active_request.h"
#include "runtime/engine/engine_limits.h"
#include "runtime/engine/engine_loop.h"
#include "runtime/engine/inbox.h"
#include "runtime/engine/kv_footprint.h"
#include "runtime/engine/session_persister.h"
#include "runtime/engine/shared_state.h"
#include "runtime/exec/prefill_compression.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr int32_t kMaxTopLogprobs = 20;

EngineLimits MakeLimits(const EngineConfig& config, ModelRunner& runner) {
  const ModelConfig& c = runner.config();
  EngineLimits l;
  l.num_layers = c.num_layers;
  l.vocab_size = c.vocab_size;
  l.context_length = c.context_length;
  l.max_prompt_tokens = config.max_prompt_tokens > 0
                            ? std::min<int64_t>(config.max_prompt_tokens, c.context_length)
                            : c.context_length;
  l.block_size = runner.block_size();
  l.num_blocks = runner.pool().num_blocks();
  l.block_bytes = runner.block_bytes();
  return l;
}

absl::Status ValidateIds(std::span<const int32_t> ids, const EngineLimits& limits,
                         const char* what) {
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (static_cast<int64_t>(ids.size()) > limits.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat("%s has %d tokens, more than the limit of %d",
                                                      what, ids.size(), limits.max_prompt_tokens));
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s holds token id %d, outside the vocabulary [0, %d)", what, id, limits.vocab_size));
    }
  }
  return absl::OkStatus();
}

}  // namespace

class Engine::Impl {
 public:
  Impl(const EngineConfig& config, ModelRunner* runner, const Tokenizer* tokenizer,
       std::unique_ptr<SessionPersister> persister)
      : config_(config),
        limits_(MakeLimits(config, *runner)),
        persister_(std::move(persister)),
        loop_(config, limits_, runner, tokenizer, &inbox_, &shared_, persister_.get()) {
    loop_.RestoreSessions();
    thread_ = std::thread([this] { loop_.Run(); });
  }
  ~Impl() { Shutdown(absl::ZeroDuration()); }

  absl::StatusOr<std::shared_ptr<OutputStream>> Submit(GenerateRequest request);
  absl::Status Cancel(const std::string& request_id);
  absl::StatusOr<SessionInfo> CreateSession(CreateSessionRequest request);
  absl::StatusOr<SessionInfo> GetSession(const std::string& session_id,
                                         const std::string& owner) const;
  std::vector<SessionInfo> ListSessions(const std::string& owner) const;
  absl::Status DeleteSession(const std::string& session_id, const std::string& owner);
  EngineStats Stats() const { return shared_.stats(); }
  bool healthy() const { return !shared_.dead.load(); }
  void Shutdown(absl::Duration grace);

 private:
  absl::Status CheckAvailable() const;
  // Fills policy, budgets and the exact footprint of a fresh (non-session) prompt.
  absl::Status PlanFresh(ActiveRequest& r, const std::optional<KvPolicy>& policy);
  absl::Status PlanSession(ActiveRequest& r);
  absl::Status ReserveQueueSlot();
  absl::Status Enqueue(std::unique_ptr<ActiveRequest>& r);
  absl::Status Reject(absl::Status status);

  const EngineConfig config_;
  const EngineLimits limits_;
  Inbox inbox_;
  SharedState shared_;
  std::unique_ptr<SessionPersister> persister_;  // null: sessions in memory only
  EngineLoop loop_;
  std::thread thread_;
  std::atomic<int64_t> next_request_id_{1};
  std::mutex shutdown_mu_;
};

absl::Status Engine::Impl::CheckAvailable() const {
  if (shared_.dead.load())
    return absl::UnavailableError("engine is unavailable after a backend fault");
  if (!shared_.accepting.load()) return absl::UnavailableError("engine is shutting down");
  return absl::OkStatus();
}

absl::Status Engine::Impl::Reject(absl::Status status) {
  if (status.code() == absl::StatusCode::kResourceExhausted) shared_.rejections_total.fetch_add(1);
  return status;
}

absl::Status Engine::Impl::PlanFresh(ActiveRequest& r, const std::optional<KvPolicy>& policy) {
  r.policy = policy.value_or(config_.default_kv_policy);
  RETURN_IF_ERROR(r.policy.Validate());
  const int64_t n = r.prompt_size();
  if (n > limits_.context_length) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prompt has %d tokens, more than the model's context of %d", n, limits_.context_length));
  }
  r.budgets = ComputeLayerBudgets(r.policy, limits_.num_layers, n);
  r.compressing = r.budgets.compress;
  const int64_t reserve =
      GenerationReserve(r.request.sampling.max_tokens, n, limits_.context_length);
  r.final_lengths = FreshFinalLengths(r.budgets, limits_.num_layers, reserve);
  const int64_t need = FreshBlocks(r.final_lengths, limits_.block_size);
  if (r.compressing) {
    r.last_chunk_min_tokens = CompressionStepMinTokens(r.policy.method, r.budgets);
    r.peak_lengths = ChunkedPeakLengths(r.final_lengths, n - r.last_chunk_min_tokens);
    // A prompt whose full K/V cannot sit in the pool at all is prefilled in one step instead.
    if (FreshBlocks(r.peak_lengths, limits_.block_size) > limits_.num_blocks)
      r.last_chunk_min_tokens = n;
  }
  if (need > limits_.num_blocks) {
    return Reject(absl::ResourceExhaustedError(absl::StrFormat(
        "request can never fit: it needs %d KV blocks (%d prompt tokens, %d max_tokens, %d layers) "
        "and the "
        "whole cache has %d; lower max_tokens or the prompt, or use a compressing kv policy",
        need, n, r.request.sampling.max_tokens, limits_.num_layers, limits_.num_blocks)));
  }
  return absl::OkStatus();
}

absl::Status Engine::Impl::PlanSession(ActiveRequest& r) {
  const GenerateRequest& q = r.request;
  std::optional<SessionView> s = shared_.FindSession(q.session_id, q.owner, absl::Now());
  if (!s.has_value())
    return absl::NotFoundError(absl::StrCat("session ", q.session_id, " not found"));
  const int64_t positions = s->info.tokens + r.prompt_size();
  if (positions > limits_.context_length) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "session (%d tokens) plus prompt (%d tokens) exceed the model's context of %d tokens",
        s->info.tokens, r.prompt_size(), limits_.context_length));
  }
  if (q.session_mode == SessionMode::kAppend && s->append_pending) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", q.session_id, " already has an append in progress; retry when it ends"));
  }
  const int64_t reserve =
      GenerationReserve(q.sampling.max_tokens, positions, limits_.context_length);
  const std::vector<int64_t> final_lengths =
      ForkFinalLengths(s->info.per_layer_tokens, r.prompt_size(), reserve);
  const int64_t need = ForkBlocks(s->info.per_layer_tokens, final_lengths, limits_.block_size);
  if (need > limits_.num_blocks - s->num_blocks) {
    return Reject(absl::ResourceExhaustedError(
        absl::StrFormat("request can never fit: it needs %d KV blocks beyond its session's %d and "
                        "the whole cache has %d",
                        need, s->num_blocks, limits_.num_blocks)));
  }
  return absl::OkStatus();
}

absl::Status Engine::Impl::ReserveQueueSlot() {
  if (shared_.num_queued.fetch_add(1) >= config_.max_queue) {
    shared_.num_queued.fetch_sub(1);
    return Reject(absl::ResourceExhaustedError(
        absl::StrFormat("request queue is full (%d waiting); retry later", config_.max_queue)));
  }
  return absl::OkStatus();
}

absl::Status Engine::Impl::Enqueue(std::unique_ptr<ActiveRequest>& r) {
  RETURN_IF_ERROR(ReserveQueueSlot());
  EngineCommand command = AddRequestCommand{std::move(r)};
  if (!inbox_.Push(command)) {
    shared_.num_queued.fetch_sub(1);
    r = std::move(std::get<AddRequestCommand>(command).request);
    return absl::UnavailableError("engine is shutting down");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<OutputStream>> Engine::Impl::Submit(GenerateRequest request) {
  RETURN_IF_ERROR(CheckAvailable());
  RETURN_IF_ERROR(request.sampling.Validate());
  if (request.top_logprobs < -1 || request.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrFormat("top_logprobs must be -1 (off) or in [0, %d], got %d", kMaxTopLogprobs,
                        request.top_logprobs));
  }
  if (request.kv_policy.has_value()) RETURN_IF_ERROR(request.kv_policy->Validate());
  RETURN_IF_ERROR(ValidateIds(request.prompt, limits_, "prompt"));
  if (request.deadline <= absl::Now())
    return absl::DeadlineExceededError("request deadline already passed");
  auto r = std::make_unique<ActiveRequest>();
  r->kind = RequestKind::kGenerate;
  r->submitted = absl::Now();
  std::optional<KvPolicy> policy = request.kv_policy;
  r->request = std::move(request);
  if (r->request.session_id.empty()) {
    RETURN_IF_ERROR(PlanFresh(*r, policy));
  } else {
    RETURN_IF_ERROR(PlanSession(*r));  // a session fork is never compressed: no policy applies
  }
  if (r->request.request_id.empty())
    r->request.request_id = absl::StrCat("req-", next_request_id_.fetch_add(1));
  const std::string id = r->request.request_id;
  r->stream = std::make_shared<OutputStream>();
  std::shared_ptr<OutputStream> stream = r->stream;
  if (!shared_.AddRequest(id, stream)) {
    return absl::AlreadyExistsError(absl::StrCat("request id ", id, " is already in use"));
  }
  if (absl::Status st = Enqueue(r); !st.ok()) {
    shared_.RemoveRequest(id);
    return st;
  }
  return stream;
}

absl::Status Engine::Impl::Cancel(const std::string& request_id) {
  std::shared_ptr<OutputStream> stream = shared_.FindRequest(request_id);
  if (stream == nullptr)
    return absl::NotFoundError(absl::StrCat("request ", request_id, " not found"));
  stream->RequestCancel();
  inbox_.Wake();
  return absl::OkStatus();
}

absl::StatusOr<SessionInfo> Engine::Impl::CreateSession(CreateSessionRequest request) {
  RETURN_IF_ERROR(CheckAvailable());
  RETURN_IF_ERROR(ValidateIds(request.context, limits_, "session context"));
  if (static_cast<int64_t>(request.context.size()) >= limits_.context_length) {
    return absl::InvalidArgumentError(
        absl::StrFormat("session context has %d tokens; it must leave room in the model's context "
                        "of %d for a question",
                        request.context.size(), limits_.context_length));
  }
  if (request.ttl < absl::ZeroDuration())
    return absl::InvalidArgumentError("session ttl must not be negative");
  if (shared_.num_sessions() >= config_.max_sessions) {
    return Reject(absl::ResourceExhaustedError(absl::StrFormat(
        "too many sessions (max_sessions = %d); delete some first", config_.max_sessions)));
  }
  auto r = std::make_unique<ActiveRequest>();
  r->kind = RequestKind::kCreateSession;
  r->submitted = absl::Now();
  r->request.prompt = std::move(request.context);
  r->request.owner = std::move(request.owner);
  r->request.sampling.max_tokens = 0;
  r->session_ttl = request.ttl == absl::ZeroDuration() ? config_.session_ttl : request.ttl;
  RETURN_IF_ERROR(PlanFresh(*r, request.kv_policy));
  std::future<absl::StatusOr<SessionInfo>> done = r->created.get_future();
  RETURN_IF_ERROR(Enqueue(r));
  return done.get();
}

absl::StatusOr<SessionInfo> Engine::Impl::GetSession(const std::string& session_id,
                                                     const std::string& owner) const {
  if (shared_.dead.load())
    return absl::UnavailableError("engine is unavailable after a backend fault");
  std::optional<SessionView> s = shared_.FindSession(session_id, owner, absl::Now());
  if (!s.has_value())
    return absl::NotFoundError(absl::StrCat("session ", session_id, " not found"));
  return s->info;
}

std::vector<SessionInfo> Engine::Impl::ListSessions(const std::string& owner) const {
  return shared_.ListSessions(owner, absl::Now());
}

absl::Status Engine::Impl::DeleteSession(const std::string& session_id, const std::string& owner) {
  if (shared_.dead.load())
    return absl::UnavailableError("engine is unavailable after a backend fault");
  std::promise<absl::Status> promise;
  std::future<absl::Status> done = promise.get_future();
  EngineCommand command = DeleteSessionCommand{session_id, owner, std::move(promise)};
  if (!inbox_.Push(command)) return absl::UnavailableError("engine is shut down");
  return done.get();
}

void Engine::Impl::Shutdown(absl::Duration grace) {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  shared_.accepting.store(false);
  if (!thread_.joinable()) return;
  EngineCommand command = ShutdownCommand{absl::Now() + std::max(grace, absl::ZeroDuration())};
  inbox_.Push(command);  // fails only if the loop already stopped
  thread_.join();
  if (persister_ != nullptr) persister_->Flush();  // every session write is on disk
}

// ---- Engine --------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineConfig& config,
                                                       ModelRunner* runner,
                                                       const Tokenizer* tokenizer) {
  RETURN_IF_ERROR(config.Validate());
  if (runner == nullptr || tokenizer == nullptr) {
    return absl::InvalidArgumentError("engine needs a model runner and a tokenizer");
  }
  RETURN_IF_ERROR(runner->config().Validate());
  if (runner->pool().num_used() != 0) {
    return absl::FailedPreconditionError(
        "the runner's KV pool must be empty when the engine starts");
  }
  std::unique_ptr<SessionPersister> persister;
  if (!config.session_dir.empty()) {
    ASSIGN_OR_RETURN(persister, SessionPersister::Open(config.session_dir));
  }
  return std::unique_ptr<Engine>(
      new Engine(std::make_unique<Impl>(config, runner, tokenizer, std::move(persister))));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<std::shared_ptr<OutputStream>> Engine::Submit(GenerateRequest request) {
  return impl_->Submit(std::move(request));
}
absl::Status Engine::Cancel(const std::string& request_id) { return impl_->Cancel(request_id); }
absl::StatusOr<SessionInfo> Engine::CreateSession(CreateSessionRequest request) {
  return impl_->CreateSession(std::move(request));
}
absl::StatusOr<SessionInfo> Engine::GetSession(const std::string& session_id,
                                               const std::string& owner) {
  return impl_->GetSession(session_id, owner);
}
absl::StatusOr<std::vector<SessionInfo>> Engine::ListSessions(const std::string& owner) {
  return impl_->ListSessions(owner);
}
absl::Status Engine::DeleteSession(const std::string& session_id, const std::string& owner) {
  return impl_->DeleteSession(session_id, owner);
}
EngineStats Engine::Stats() const { return impl_->Stats(); }
bool Engine::healthy() const { return impl_->healthy(); }
void Engine::Shutdown(absl::Duration grace) { impl_->Shutdown(grace); }

}  // namespace funnel
