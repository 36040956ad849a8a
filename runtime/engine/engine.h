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
// max_tokens per layer, in blocks, or the temporary full K/V of a chunked compressed prompt
// where larger) is free, so running sequences never run out and are never
// preempted; others wait in a bounded FIFO queue (full: RESOURCE_EXHAUSTED). A request whose
// footprint exceeds the whole pool is rejected with RESOURCE_EXHAUSTED at once.
// A backend fault marks the engine dead: every request fails with UNAVAILABLE.
//
// Details of the contract:
//  - Footprint (blocks) = sum over layers of ceil((stored_l + G) / block_size), where stored_l is
//    what layer l keeps of the prompt after compression (ComputeLayerBudgets; the prompt length
//    when nothing is compressed) and G = min(max_tokens, context left after the prompt). A session
//    fork shares the session's full blocks and copies its partial last block on the first write,
//    so it takes ceil((session_l + suffix + G) / bs) - floor(session_l / bs) blocks per layer.
//    The reserve is held until the request ends: no preemption, no mid-run KV exhaustion.
//  - Admission is strictly FIFO: the head of the queue is never overtaken, even by a smaller
//    request that would fit, so a big request waits at most for the requests running when it
//    reached the head (no starvation; the cost is some head-of-line blocking). A head that does
//    not fit while no request runs (sessions hold the rest of the cache) is rejected with
//    RESOURCE_EXHAUSTED rather than blocking the queue.
//  - At most max_num_seqs sequences run; at most max_tokens_per_step prompt tokens are prefilled
//    per step (decode tokens always run). Prompts and session suffixes are prefilled in chunks
//    across steps, interleaved with the running decodes. A compressed prompt (a compressing kv
//    policy and more tokens than its budget) writes its earlier chunks' full K/V to pool blocks;
//    its last chunk (at least the observation window) scores every entry, keeps each layer's
//    budget and returns the other blocks. Its footprint then counts that peak: per layer
//    ceil(max(N - W, stored_l + G) / block_size). Two cases still prefill the whole prompt in one
//    step (alone among prefills when it exceeds what is left of the budget, so it may stall the
//    running decodes for longer than one budget): h2o (it scores every prompt query), and a
//    prompt whose full K/V could never sit in the pool (the one-step path keeps it outside).
//  - Sessions: CreateSession queues a prefill like any request (same admission rules) and returns
//    when the session exists. A session is kept until DeleteSession or its idle TTL passes (TTL
//    counted from the last use; a session that requests are using does not expire before they
//    end). Generate with session_id forks the session's blocks (no copy) and continues at its
//    logical length; the session is unchanged (kFork). kAppend extends the session with the turn
//    (suffix + completion, the last token fed too) when the request ends successfully; at most
//    one append per session may be queued or running: a second one gets FAILED_PRECONDITION.
//    Deleting or expiring a session while forks run is fine: they hold references to its blocks.
//    A session request's kv_policy is validated but not used: a fork's suffix is never compressed.
//  - Output follows Generate() (generate.cc): an end-of-generation token ends with "stop" (unless
//    ignore_eos); it is streamed as a TokenEvent with empty text and counted in
//    completion_tokens. A stop string ends with "stop" and is not emitted. max_tokens or a full
//    context ends with "length". Sampling uses the request's seed, or a random one.
//  - A runner error that a request's data can cause (InvalidArgument, ResourceExhausted) fails
//    only the sequences that cause it (the step is retried one sequence at a time); token ids
//    are validated at Submit so that this stays exceptional. Any other runner error is a backend
//    fault: the engine is dead.
//  - Durable sessions (config.session_dir): a session is written to its file when created and
//    after each append, each use is recorded (idle TTL), and the file is removed when the session
//    is deleted or expires. Create reloads the directory's sessions of this model into the pool
//    before serving. Shutdown waits for pending writes; a backend fault or a shutdown keeps the
//    files.
//  - GetSession/ListSessions read a copy the engine thread publishes after every change, so they
//    do not wait for a step; another owner's session is NOT_FOUND.
//  - Cancel / OutputStream::RequestCancel / deadlines take effect at the next step boundary: the
//    request's blocks are freed and its FinalEvent carries CANCELLED / DEADLINE_EXCEEDED.
//  - Shutdown(grace): Submit and CreateSession return UNAVAILABLE at once; queued and running
//    requests continue for up to `grace`, then whatever is left ends with UNAVAILABLE.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/engine/engine_config.h"
#include "runtime/engine/output_stream.h"
#include "runtime/engine/request.h"
#include "runtime/exec/model_runner.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

struct CreateSessionRequest {
  std::vector<int32_t> context;       // ids (BOS included by the caller when wanted)
  std::optional<KvPolicy> kv_policy;  // the window is the context's own tail
  std::string owner;
  absl::Duration ttl = absl::ZeroDuration();  // zero: the engine default
};

struct SessionInfo {
  std::string session_id;
  std::string owner;
  int64_t tokens = 0;  // logical length (positions continue from here)
  std::vector<int64_t> per_layer_tokens;
  int64_t kv_bytes = 0;  // pool blocks held
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
  int64_t preemptions_total = 0;  // stays 0 under the reserve-at-admission policy
  bool healthy = true;
};

// Thread rules: every public method may be called from any thread, concurrently.
class Engine {
 public:
  // Starts the engine thread. `runner` and `tokenizer` must outlive the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineConfig& config,
                                                        ModelRunner* runner,
                                                        const Tokenizer* tokenizer);
  ~Engine();  // Shutdown(zero grace) if still running

  // Validates (INVALID_ARGUMENT: empty or oversize prompt, bad sampling or KV parameters;
  // NOT_FOUND: unknown session or other owner's), then queues. RESOURCE_EXHAUSTED when the queue is
  // full or the request can never fit; UNAVAILABLE when draining or dead.
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
