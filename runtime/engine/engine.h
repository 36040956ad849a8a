// The engine: one thread that owns the scheduler, the KV pool, the sessions and the backend.
//
// RPC threads talk to it only through this class: Submit/Cancel/session calls put commands into
// an inbox; tokens come back through each request's OutputStream. Each engine step: drain the
// inbox → admit waiting requests by exact KV footprint → run one batched backend step (new
// prefills, possibly chunked, plus one decode token for every running sequence) → compress the
// prompts whose prefill ended (inside the backend step) → sample → push tokens → retire finished
// or cancelled requests, freeing their blocks at once.
//
// Memory policy: a request is admitted only when its whole footprint (compressed prompt +
// max_tokens per layer, in blocks) is free, so running sequences never run out and are never
// preempted; others wait in a bounded FIFO queue (full: RESOURCE_EXHAUSTED). A request whose
// footprint exceeds the whole pool is rejected with RESOURCE_EXHAUSTED at once.
// A backend fault marks the engine dead: every request fails with UNAVAILABLE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/engine_config.h"
#include "runtime/engine/output_stream.h"
#include "runtime/engine/request.h"
#include "runtime/exec/model_runner.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

struct CreateSessionRequest {
  std::vector<int32_t> context;        // ids (BOS included by the caller when wanted)
  std::optional<KvPolicy> kv_policy;   // the window is the context's own tail
  std::string owner;
  absl::Duration ttl = absl::ZeroDuration();  // zero: the engine default
};

struct SessionInfo {
  std::string session_id;
  std::string owner;
  int64_t tokens = 0;                  // logical length (positions continue from here)
  std::vector<int64_t> per_layer_tokens;
  int64_t kv_bytes = 0;                // pool blocks held
  KvPolicy kv_policy;
  absl::Time created;
  absl::Time expires;
  int32_t active_requests = 0;
};

// A thread-safe snapshot for metrics and probes.
struct EngineStats {
  int64_t num_waiting = 0;
  int64_t num_running = 0;
  int64_t num_sessions = 0;
  int64_t blocks_total = 0;
  int64_t blocks_used = 0;
  double compression_ratio = 1.0;  // stored / uncompressed entries over running + sessions
  int64_t prompt_tokens_total = 0;
  int64_t generation_tokens_total = 0;
  int64_t rejections_total = 0;
  int64_t preemptions_total = 0;   // stays 0 under the reserve-at-admission policy
  bool healthy = true;
};

class Engine {
 public:
  // Starts the engine thread. `runner` and `tokenizer` must outlive the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineConfig& config,
                                                        ModelRunner* runner,
                                                        const Tokenizer* tokenizer);
  ~Engine();  // Shutdown(zero grace) if still running

  // Validates (INVALID_ARGUMENT: empty or oversize prompt, bad sampling or KV parameters; NOT_FOUND:
  // unknown session or other owner's), then queues. RESOURCE_EXHAUSTED when the queue is full or
  // the request can never fit; UNAVAILABLE when draining or dead.
  absl::StatusOr<std::shared_ptr<OutputStream>> Submit(GenerateRequest request);
  // Cancels a queued or running request by id (NOT_FOUND if unknown or finished).
  absl::Status Cancel(const std::string& request_id);

  // Session calls block until the engine thread has done them.
  absl::StatusOr<SessionInfo> CreateSession(CreateSessionRequest request);
  absl::StatusOr<SessionInfo> GetSession(const std::string& session_id, const std::string& owner);
  absl::StatusOr<std::vector<SessionInfo>> ListSessions(const std::string& owner);
  absl::Status DeleteSession(const std::string& session_id, const std::string& owner);

  EngineStats Stats() const;
  bool healthy() const;
  // Stops admitting (Submit → UNAVAILABLE), lets running requests finish for up to `grace`, then
  // cancels the rest and stops the engine thread.
  void Shutdown(absl::Duration grace);

 private:
  class Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace funnel
