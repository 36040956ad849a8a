// The engine thread: drains the Inbox, retires cancelled / expired work, plans a step with the
// Scheduler, runs it on the ModelRunner as one batch, samples and streams, and publishes state.
//
// Thread rules: constructed by Engine, then Run() executes on the engine thread, which is the
// only thread that touches the scheduler, the sessions, the requests' caches and the runner.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "runtime/engine/active_request.h"
#include "runtime/engine/engine_config.h"
#include "runtime/engine/engine_limits.h"
#include "runtime/engine/inbox.h"
#include "runtime/engine/scheduler.h"
#include "runtime/engine/session_persister.h"
#include "runtime/engine/session_store.h"
#include "runtime/engine/shared_state.h"
#include "runtime/exec/model_runner.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

class EngineLoop final : private AdmissionControl {
 public:
  // Every pointer must outlive the loop; `persister` may be null (sessions in memory only).
  EngineLoop(const EngineConfig& config, const EngineLimits& limits, ModelRunner* runner,
             const Tokenizer* tokenizer, Inbox* inbox, SharedState* shared,
             SessionPersister* persister);
  ~EngineLoop() override;

  // Loads the persisted sessions into the pool (before Run, on the thread that creates the
  // engine). Files that are expired are removed; ones that do not fit are skipped with a warning.
  void RestoreSessions();
  // Runs until a ShutdownCommand has been honoured; every request and session is gone then (the
  // persisted session files stay).
  void Run();

 private:
  // AdmissionControl.
  absl::StatusOr<int64_t> Footprint(ActiveRequest& request, bool chunked) override;
  void Start(ActiveRequest& request) override;

  void HandleCommands();
  void HandleAdd(std::unique_ptr<ActiveRequest> request);
  void HandleDelete(DeleteSessionCommand& command);
  void ExpireSessions(absl::Time now);
  void RetireCancelled(absl::Time now);
  // Plans and runs one step; false when there was nothing to run.
  bool StepOnce();
  // Runs the batch; on an error a request's data can cause, retries sequence by sequence so that
  // only the culprits fail. A backend fault kills the engine.
  void RunBatch(const std::vector<StepEntry>& entries);
  void ProcessEntry(const StepEntry& entry, std::span<const float> logits);
  void OnPrefillDone(ActiveRequest& r);
  void SampleNext(ActiveRequest& r, std::span<const float> logits);
  void CompleteSession(ActiveRequest& r);
  void CommitAppend(ActiveRequest& r, bool last_token_fed);
  int64_t FreeBlocks() const;

  // Ends a request: returns its blocks, updates its session, sends the FinalEvent (or answers
  // the session creation). `final.status` not OK: the request failed.
  void Retire(const ActiveRequest* request, FinalEvent final);
  void Fail(std::unique_ptr<ActiveRequest> request, absl::Status status);
  void Finalize(std::unique_ptr<ActiveRequest> request, FinalEvent final);
  void ReleaseKv(ActiveRequest& r);
  Usage MakeUsage(const ActiveRequest& r, absl::Time end) const;
  FinalEvent EndOfGeneration(ActiveRequest& r);

  void Fault(const absl::Status& status);
  void FailEverything(const absl::Status& status);
  void Stop();
  absl::Duration IdleTimeout(absl::Time now) const;
  void PublishSession(const Session& session);
  // Durable sessions (no-ops without a persister): write the whole session, record a use.
  void PersistSession(const Session& session);
  void TouchSession(const std::string& id);
  void PublishStats();

  const EngineConfig config_;
  const EngineLimits limits_;
  ModelRunner* runner_;
  const Tokenizer* tokenizer_;
  Inbox* inbox_;
  SharedState* shared_;
  Scheduler scheduler_;
  SessionStore sessions_;
  SessionPersister* persister_;
  const std::string fingerprint_;  // model + cache layout, stored in session files
  std::mt19937_64 rng_;

  bool draining_ = false;
  absl::Time drain_deadline_ = absl::InfiniteFuture();
  bool stopped_ = false;

  // Step buffers, reused.
  std::vector<StepSequence> batch_;
  std::vector<float> logits_;
  std::vector<float> one_logits_;
  std::vector<absl::Status> entry_status_;

  int64_t prompt_tokens_total_ = 0;
  int64_t generation_tokens_total_ = 0;
};

}  // namespace funnel
