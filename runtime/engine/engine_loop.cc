#include "runtime/engine/engine_loop.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/engine/kv_footprint.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

bool IsSet(absl::Time t) { return t != absl::InfinitePast(); }

// Errors a Step returns, with nothing changed, because of one sequence's data or size.
bool IsRequestError(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument ||
         s.code() == absl::StatusCode::kResourceExhausted ||
         s.code() == absl::StatusCode::kUnimplemented;  // e.g. a KV method a backend lacks
}

FinalEvent Failed(absl::Status status) {
  FinalEvent final;
  final.status = std::move(status);
  return final;
}

std::vector<int64_t> LayerLengths(const SequenceKv& kv) {
  std::vector<int64_t> out;
  for (int32_t l = 0; l < kv.num_layers(); ++l) out.push_back(kv.layer_length(l));
  return out;
}

}  // namespace

EngineLoop::EngineLoop(const EngineConfig& config, const EngineLimits& limits, ModelRunner* runner,
                       const Tokenizer* tokenizer, Inbox* inbox, SharedState* shared,
                       SessionPersister* persister)
    : config_(config),
      limits_(limits),
      runner_(runner),
      tokenizer_(tokenizer),
      inbox_(inbox),
      shared_(shared),
      scheduler_(SchedulerLimits{config.max_num_seqs, config.max_tokens_per_step}),
      sessions_(runner, config.replica_id, config.max_sessions, std::random_device{}()),
      persister_(persister),
      fingerprint_(absl::StrFormat("%s|layers=%d|entry_floats=%d|vocab=%d",
                                   config.model_fingerprint, limits.num_layers,
                                   runner->entry_floats(), limits.vocab_size)),
      rng_(std::random_device{}()) {}

EngineLoop::~EngineLoop() {
  // Run() normally empties everything; this covers a loop that never ran.
  if (!stopped_) Stop();
}

void EngineLoop::RestoreSessions() {
  if (persister_ == nullptr) return;
  const absl::Time now = absl::Now();
  int restored = 0;
  for (SessionRecord& rec : persister_->LoadAll(fingerprint_)) {
    if (rec.expires <= now) {
      persister_->Remove(rec.id);
      continue;
    }
    absl::StatusOr<SequenceKv> kv = runner_->ImportSequence(rec.layers, rec.num_positions);
    absl::StatusOr<Session*> s =
        kv.ok() ? sessions_.Restore(rec.id, std::move(*kv), std::move(rec.tokens), rec.policy,
                                    rec.owner, rec.ttl, rec.created, rec.expires)
                : absl::StatusOr<Session*>(kv.status());
    if (!s.ok()) {
      spdlog::warn("session {} not restored: {}", rec.id, s.status().ToString());
      continue;
    }
    PublishSession(**s);
    ++restored;
  }
  PublishStats();
  spdlog::info("restored {} sessions from {}", restored, config_.session_dir);
}

void EngineLoop::PersistSession(const Session& s) {
  if (persister_ == nullptr) return;
  SessionRecord rec;
  rec.fingerprint = fingerprint_;
  rec.id = s.id;
  rec.owner = s.owner;
  rec.policy = s.policy;
  rec.created = s.created;
  rec.expires = s.expires;
  rec.ttl = s.ttl;
  rec.tokens = s.tokens;
  rec.num_positions = s.kv.num_positions();
  rec.entry_floats = runner_->entry_floats();
  rec.layers.resize(static_cast<size_t>(s.kv.num_layers()));
  for (int32_t l = 0; l < s.kv.num_layers(); ++l) {
    absl::Status exported = runner_->ExportLayer(s.kv, l, rec.layers[static_cast<size_t>(l)]);
    if (!exported.ok()) {  // a backend fault: the next step fails and marks the engine dead
      spdlog::error("session {} not persisted: {}", s.id, exported.ToString());
      return;
    }
  }
  persister_->Save(s.id, EncodeSessionRecord(rec));
}

void EngineLoop::TouchSession(const std::string& id) {
  if (persister_ != nullptr) persister_->Touch(id);
}

void EngineLoop::Run() {
  PublishStats();
  while (!stopped_) {
    HandleCommands();
    if (stopped_) break;
    const absl::Time now = absl::Now();
    if (draining_ && (scheduler_.idle() || now >= drain_deadline_ || shared_->dead.load())) {
      Stop();
      break;
    }
    if (shared_->dead.load()) {
      inbox_->Wait(absl::Milliseconds(100));
      continue;
    }
    ExpireSessions(now);
    RetireCancelled(now);
    if (!StepOnce()) inbox_->Wait(IdleTimeout(now));
  }
}

// ---- Commands ------------------------------------------------------------------------------

void EngineLoop::HandleCommands() {
  for (EngineCommand& command : inbox_->TakeAll()) {
    if (auto* add = std::get_if<AddRequestCommand>(&command)) {
      HandleAdd(std::move(add->request));
    } else if (auto* del = std::get_if<DeleteSessionCommand>(&command)) {
      HandleDelete(*del);
    } else if (auto* stop = std::get_if<ShutdownCommand>(&command)) {
      draining_ = true;
      drain_deadline_ = std::min(drain_deadline_, stop->deadline);
    }
  }
}

void EngineLoop::HandleAdd(std::unique_ptr<ActiveRequest> r) {
  if (shared_->dead.load()) {
    Fail(std::move(r), absl::UnavailableError("engine is unavailable after a backend fault"));
    return;
  }
  if (r->stream != nullptr && r->stream->cancel_requested()) {
    Fail(std::move(r), absl::CancelledError("request cancelled"));
    return;
  }
  if (r->is_session_request()) {
    Session* s = sessions_.Find(r->request.session_id, absl::Now());
    if (s == nullptr || s->owner != r->request.owner) {
      Fail(std::move(r),
           absl::NotFoundError(absl::StrCat("session ", r->request.session_id, " not found")));
      return;
    }
    if (r->request.session_mode == SessionMode::kAppend) {
      if (s->append_pending) {
        Fail(std::move(r),
             absl::FailedPreconditionError(absl::StrCat(
                 "session ", s->id, " already has an append in progress; retry when it ends")));
        return;
      }
      s->append_pending = true;
      r->holds_append = true;
      PublishSession(*s);
    }
  }
  scheduler_.Enqueue(std::move(r));
}

void EngineLoop::HandleDelete(DeleteSessionCommand& command) {
  if (shared_->dead.load()) {
    command.done.set_value(absl::UnavailableError("engine is unavailable after a backend fault"));
    return;
  }
  Session* s = sessions_.Find(command.session_id, absl::Now());
  if (s == nullptr || s->owner != command.owner) {
    command.done.set_value(
        absl::NotFoundError(absl::StrCat("session ", command.session_id, " not found")));
    return;
  }
  // Running forks keep their references to the blocks; they are freed when those finish. A
  // pending append finds no session at its end and only releases its fork.
  sessions_.Remove(command.session_id);
  shared_->EraseSession(command.session_id);
  if (persister_ != nullptr) persister_->Remove(command.session_id);
  PublishStats();
  spdlog::debug("session {} deleted", command.session_id);
  command.done.set_value(absl::OkStatus());
}

void EngineLoop::ExpireSessions(absl::Time now) {
  for (const std::string& id : sessions_.Expire(now)) {
    shared_->EraseSession(id);
    if (persister_ != nullptr) persister_->Remove(id);
    spdlog::info("session {} expired", id);
  }
}

void EngineLoop::RetireCancelled(absl::Time now) {
  auto gone = scheduler_.RemoveIf([now](const ActiveRequest& r) {
    return r.stream != nullptr && (r.stream->cancel_requested() || now >= r.request.deadline);
  });
  for (std::unique_ptr<ActiveRequest>& r : gone) {
    const bool cancelled = r->stream->cancel_requested();
    Fail(std::move(r), cancelled ? absl::CancelledError("request cancelled")
                                 : absl::DeadlineExceededError("request deadline exceeded"));
  }
}

// ---- Admission -----------------------------------------------------------------------------

int64_t EngineLoop::FreeBlocks() const {
  int64_t free = runner_->pool().num_free();
  for (const std::unique_ptr<ActiveRequest>& r : scheduler_.running()) {
    free -= RemainingBlocks(*r->kv, runner_->pool(),
                            r->peak_lengths.empty() ? r->final_lengths : r->peak_lengths);
  }
  return free;
}

absl::StatusOr<int64_t> EngineLoop::Footprint(ActiveRequest& r, bool chunked) {
  if (!r.is_session_request()) {
    if (!chunked || !r.compressing) r.peak_lengths.clear();
    return FreshBlocks(r.peak_lengths.empty() ? r.final_lengths : r.peak_lengths,
                       limits_.block_size);
  }
  Session* s = sessions_.Find(r.request.session_id, absl::Now());
  if (s == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("session ", r.request.session_id, " not found (expired or deleted)"));
  }
  const int64_t positions = s->kv.num_positions() + r.prompt_size();
  if (positions > limits_.context_length) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "session (%d tokens) plus prompt (%d tokens) exceed the model's context of %d tokens",
        s->kv.num_positions(), r.prompt_size(), limits_.context_length));
  }
  const std::vector<int64_t> base = LayerLengths(s->kv);
  const int64_t reserve =
      GenerationReserve(r.request.sampling.max_tokens, positions, limits_.context_length);
  r.final_lengths = ForkFinalLengths(base, r.prompt_size(), reserve);
  const int64_t need = ForkBlocks(base, r.final_lengths, limits_.block_size);
  if (need > limits_.num_blocks - s->kv.num_blocks()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "request needs %d KV blocks beyond its session's %d, more than the cache's %d blocks", need,
        s->kv.num_blocks(), limits_.num_blocks));
  }
  return need;
}

void EngineLoop::Start(ActiveRequest& r) {
  const absl::Time now = absl::Now();
  r.admitted = now;
  shared_->num_queued.fetch_sub(1);
  if (r.is_session_request()) {
    Session* s = sessions_.Find(r.request.session_id, now);  // Footprint found it
    r.kv = s->kv.Fork(runner_->pool());
    r.session_tokens = s->kv.num_positions();
    ++s->active_requests;
    s->expires = std::max(s->expires, now + s->ttl);
    TouchSession(s->id);
    if (r.request.sampling.repetition_penalty != 1.0f) {
      r.penalty_prompt = s->tokens;
      r.penalty_prompt.insert(r.penalty_prompt.end(), r.request.prompt.begin(),
                              r.request.prompt.end());
    }
    PublishSession(*s);
  } else {
    r.kv = runner_->NewSequence();
  }
  if (r.kind == RequestKind::kGenerate) {
    r.output = std::make_unique<GenerationOutput>(r.request, *tokenizer_, rng_());
  }
}

// ---- Steps ---------------------------------------------------------------------------------

bool EngineLoop::StepOnce() {
  StepPlan plan = scheduler_.Plan(FreeBlocks(), *this);
  for (auto& [r, status] : plan.rejected) {
    if (status.code() == absl::StatusCode::kResourceExhausted)
      shared_->rejections_total.fetch_add(1);
    Fail(std::move(r), status);
  }
  if (plan.entries.empty()) {
    PublishStats();
    return false;
  }
  RunBatch(plan.entries);
  if (shared_->dead.load()) return true;
  const size_t vocab = static_cast<size_t>(limits_.vocab_size);
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    if (!entry_status_[i].ok()) {
      Retire(plan.entries[i].request, Failed(entry_status_[i]));
      continue;
    }
    ProcessEntry(plan.entries[i], std::span<const float>(logits_).subspan(i * vocab, vocab));
  }
  PublishStats();
  return true;
}

void EngineLoop::RunBatch(const std::vector<StepEntry>& entries) {
  batch_.clear();
  for (const StepEntry& e : entries) batch_.push_back({&*e.request->kv, e.tokens, false, e.policy});
  entry_status_.assign(entries.size(), absl::OkStatus());
  absl::Status status = runner_->Step(batch_, logits_);
  if (status.ok()) return;
  if (!IsRequestError(status)) {
    Fault(status);
    return;
  }
  // Nothing changed; find the sequences at fault by running them one at a time.
  spdlog::warn("engine: batched step failed ({}); retrying its {} sequences one by one",
               status.ToString(), entries.size());
  const size_t vocab = static_cast<size_t>(limits_.vocab_size);
  logits_.assign(entries.size() * vocab, 0.0f);
  for (size_t i = 0; i < batch_.size(); ++i) {
    absl::Status one = runner_->Step({&batch_[i], 1}, one_logits_);
    if (one.ok()) {
      std::copy_n(one_logits_.begin(), vocab,
                  logits_.begin() + static_cast<std::ptrdiff_t>(i * vocab));
    } else if (IsRequestError(one)) {
      entry_status_[i] = one;
    } else {
      Fault(one);
      return;
    }
  }
}

void EngineLoop::ProcessEntry(const StepEntry& entry, std::span<const float> logits) {
  ActiveRequest& r = *entry.request;
  switch (r.phase) {
    case RequestPhase::kPrefill:
      r.prompt_done += static_cast<int64_t>(entry.tokens.size());
      prompt_tokens_total_ += static_cast<int64_t>(entry.tokens.size());
      if (r.prompt_done < r.prompt_size()) return;  // more chunks to come
      OnPrefillDone(r);
      if (r.kind == RequestKind::kCreateSession) {
        CompleteSession(r);
      } else if (r.request.sampling.max_tokens == 0) {
        if (r.holds_append) CommitAppend(r, true);
        Retire(&r, EndOfGeneration(r));
      } else {
        SampleNext(r, logits);
      }
      return;
    case RequestPhase::kDecode:
      SampleNext(r, logits);
      return;
    case RequestPhase::kFeedLast: {
      CommitAppend(r, true);
      FinalEvent final = std::move(*r.pending_final);
      Retire(&r, std::move(final));
      return;
    }
    case RequestPhase::kWaiting:
      return;
  }
}

void EngineLoop::OnPrefillDone(ActiveRequest& r) {
  r.prefill_done = absl::Now();
  r.peak_lengths.clear();  // the compressing step returned the temporary blocks
  r.kv_entries_after_prefill = LayerLengths(*r.kv);
}

void EngineLoop::SampleNext(ActiveRequest& r, std::span<const float> logits) {
  if (!IsSet(r.first_token)) r.first_token = absl::Now();
  std::span<const int32_t> penalty_prompt = r.is_session_request()
                                                ? std::span<const int32_t>(r.penalty_prompt)
                                                : std::span<const int32_t>(r.request.prompt);
  const bool ended = r.output->Accept(logits, penalty_prompt, r.kv->num_positions(),
                                      limits_.context_length, *r.stream);
  ++generation_tokens_total_;
  if (!ended) {
    r.phase = RequestPhase::kDecode;
    return;
  }
  FinalEvent final = EndOfGeneration(r);
  if (r.holds_append) {
    if (r.kv->num_positions() < limits_.context_length) {
      // Feed the last token too, so that the session holds the whole turn.
      r.pending_final = std::move(final);
      r.phase = RequestPhase::kFeedLast;
      return;
    }
    CommitAppend(r, false);
  }
  Retire(&r, std::move(final));
}

FinalEvent EngineLoop::EndOfGeneration(ActiveRequest& r) {
  FinalEvent final;
  if (r.output != nullptr) {
    final.text = r.output->Close();
    final.finish_reason = r.output->finish_reason();
  } else {
    final.finish_reason = "length";
  }
  return final;
}

void EngineLoop::CompleteSession(ActiveRequest& r) {
  const absl::Time now = absl::Now();
  std::unique_ptr<ActiveRequest> owned = scheduler_.Remove(&r);
  SequenceKv kv = std::move(*owned->kv);
  owned->kv.reset();
  absl::StatusOr<Session*> s =
      sessions_.Add(std::move(kv), std::move(owned->request.prompt), owned->policy,
                    owned->request.owner, owned->session_ttl, now);
  if (!s.ok()) {
    shared_->rejections_total.fetch_add(1);
    owned->created.set_value(s.status());
    return;
  }
  PublishSession(**s);
  PersistSession(**s);
  PublishStats();  // before answering, so that the caller sees the session in Stats()
  SessionInfo info = sessions_.Describe(**s);
  spdlog::debug("session {} created: {} tokens, {} KV bytes, prefill {:.1f} ms", info.session_id,
                info.tokens, info.kv_bytes, Ms(now - owned->submitted));
  owned->created.set_value(absl::StatusOr<SessionInfo>(std::move(info)));
}

void EngineLoop::CommitAppend(ActiveRequest& r, bool last_token_fed) {
  Session* s = sessions_.Find(r.request.session_id, absl::Now());
  if (s == nullptr) {
    spdlog::warn("request {}: session {} is gone; the turn is not appended", r.request.request_id,
                 r.request.session_id);
    return;
  }
  std::vector<int32_t> turn = r.request.prompt;
  if (r.output != nullptr) {
    const std::vector<int32_t>& generated = r.output->generated();
    const size_t fed = generated.size() - (last_token_fed || generated.empty() ? 0 : 1);
    turn.insert(turn.end(), generated.begin(),
                generated.begin() + static_cast<std::ptrdiff_t>(fed));
  }
  sessions_.Replace(*s, std::move(*r.kv), turn);
  r.kv.reset();
  PersistSession(*s);
}

// ---- Ending requests -----------------------------------------------------------------------

void EngineLoop::Retire(const ActiveRequest* request, FinalEvent final) {
  std::unique_ptr<ActiveRequest> owned = scheduler_.Remove(request);
  Finalize(std::move(owned), std::move(final));
}

void EngineLoop::Fail(std::unique_ptr<ActiveRequest> request, absl::Status status) {
  Finalize(std::move(request), Failed(std::move(status)));
}

void EngineLoop::ReleaseKv(ActiveRequest& r) {
  if (r.kv.has_value()) {
    runner_->Release(*r.kv);
    r.kv.reset();
  }
  if (!r.is_session_request()) return;
  Session* found = sessions_.Get(r.request.session_id);  // expired or not
  if (found == nullptr) return;
  Session& session = *found;
  if (r.phase != RequestPhase::kWaiting) {
    --session.active_requests;
    session.expires = absl::Now() + session.ttl;
    TouchSession(session.id);
  }
  if (r.holds_append) session.append_pending = false;
  PublishSession(session);
}

void EngineLoop::Finalize(std::unique_ptr<ActiveRequest> r, FinalEvent final) {
  if (r == nullptr) return;
  const absl::Time end = absl::Now();
  if (r->phase == RequestPhase::kWaiting) shared_->num_queued.fetch_sub(1);
  ReleaseKv(*r);
  if (r->kind == RequestKind::kCreateSession) {
    r->created.set_value(final.status.ok() ? absl::InternalError("session prefill ended early")
                                           : final.status);
    return;
  }
  final.usage = MakeUsage(*r, end);
  if (!final.status.ok()) final.finish_reason.clear();
  const Usage& u = final.usage;
  spdlog::debug(
      "request {} {}: {} prompt + {} session tokens, {} completion tokens, ttft {:.1f} ms, total "
      "{:.1f} ms",
      r->request.request_id,
      final.status.ok() ? absl::StrCat("finished (", final.finish_reason, ")")
                        : final.status.ToString(),
      u.prompt_tokens, u.session_tokens_reused, u.completion_tokens, u.ttft_ms, u.total_ms);
  shared_->RemoveRequest(r->request.request_id);
  r->stream->Finish(std::move(final));
}

Usage EngineLoop::MakeUsage(const ActiveRequest& r, absl::Time end) const {
  Usage u;
  u.prompt_tokens = r.prompt_size();
  u.session_tokens_reused = r.session_tokens;
  u.completion_tokens =
      r.output != nullptr ? static_cast<int64_t>(r.output->generated().size()) : 0;
  u.kv_entries_per_layer = r.kv_entries_after_prefill;
  const absl::Time admitted = IsSet(r.admitted) ? r.admitted : end;
  u.queue_ms = Ms(admitted - r.submitted);
  if (IsSet(r.prefill_done)) u.prefill_ms = Ms(r.prefill_done - admitted);
  if (IsSet(r.first_token)) {
    u.ttft_ms = Ms(r.first_token - r.submitted);
    u.decode_ms = Ms(end - r.first_token);
  }
  u.total_ms = Ms(end - r.submitted);
  return u;
}

// ---- Faults, shutdown, publication ---------------------------------------------------------

void EngineLoop::Fault(const absl::Status& status) {
  spdlog::error("engine: backend fault, failing every request: {}", status.ToString());
  shared_->dead.store(true);
  FailEverything(absl::UnavailableError(
      absl::StrCat("engine is unavailable after a backend fault: ", status.message())));
}

void EngineLoop::FailEverything(const absl::Status& status) {
  for (std::unique_ptr<ActiveRequest>& r : scheduler_.RemoveAll()) Fail(std::move(r), status);
  sessions_.Clear();
  shared_->ClearSessions();
  PublishStats();
}

void EngineLoop::Stop() {
  const absl::Status status = absl::UnavailableError("engine shut down");
  for (EngineCommand& command : inbox_->Close()) {
    if (auto* add = std::get_if<AddRequestCommand>(&command)) {
      Fail(std::move(add->request), status);
    } else if (auto* del = std::get_if<DeleteSessionCommand>(&command)) {
      del->done.set_value(status);
    }
  }
  FailEverything(status);
  stopped_ = true;
}

absl::Duration EngineLoop::IdleTimeout(absl::Time now) const {
  absl::Time until = std::min(sessions_.NextExpiry(), now + absl::Seconds(1));
  if (draining_) until = std::min(until, drain_deadline_);
  return std::max(until - now, absl::Milliseconds(1));
}

void EngineLoop::PublishSession(const Session& s) {
  shared_->PutSession(SessionView{.info = sessions_.Describe(s),
                                  .num_blocks = s.kv.num_blocks(),
                                  .append_pending = s.append_pending,
                                  .in_use = s.active_requests > 0 || s.append_pending});
}

void EngineLoop::PublishStats() {
  EngineStats stats;
  stats.num_running = static_cast<int64_t>(scheduler_.running().size());
  stats.num_sessions = sessions_.size();
  stats.blocks_total = runner_->pool().num_blocks();
  stats.blocks_used = runner_->pool().num_used();
  int64_t stored = 0, full = 0;
  const auto count = [&](const SequenceKv& kv) {
    for (int32_t l = 0; l < kv.num_layers(); ++l) stored += kv.layer_length(l);
    full += kv.num_positions() * kv.num_layers();
  };
  for (const auto& r : scheduler_.running()) count(*r->kv);
  for (const auto& [id, s] : sessions_.sessions()) count(s.kv);
  stats.compression_ratio =
      full > 0 ? static_cast<double>(stored) / static_cast<double>(full) : 1.0;
  stats.prompt_tokens_total = prompt_tokens_total_;
  stats.generation_tokens_total = generation_tokens_total_;
  shared_->SetStats(stats);
}

}  // namespace funnel
