// One request inside the engine: a generation, or the prefill that creates a session.
//
// Built and validated by Engine::Submit / CreateSession on an RPC thread, handed to the engine
// thread through the Inbox, and from then on touched by the engine thread only.
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/generation_output.h"
#include "runtime/engine/output_stream.h"
#include "runtime/engine/request.h"
#include "runtime/kv/kv_policy.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/kv/sequence_kv.h"

namespace funnel {

enum class RequestKind { kGenerate, kCreateSession };

enum class RequestPhase {
  kWaiting,   // queued, no KV yet
  kPrefill,   // admitted; prompt (or session suffix) tokens still to feed, maybe in chunks
  kDecode,    // feeding the last sampled token each step
  kFeedLast,  // append mode: generation ended, the last token is fed so the session holds it
};

struct ActiveRequest {
  // Fixed at submission.
  RequestKind kind = RequestKind::kGenerate;
  GenerateRequest request;  // for kCreateSession: prompt = the context, owner; max_tokens = 0
  KvPolicy policy;          // resolved (server default when unset); unused for session forks
  // Fresh prompts: what each layer stores right after prefill. `compressing`: the prompt is
  // compressed by the step that feeds its last `last_chunk_min_tokens` tokens or more (earlier
  // chunks are written uncompressed to pool blocks; prefill_compression.h).
  LayerBudgets budgets;
  bool compressing = false;
  int64_t last_chunk_min_tokens = 1;
  // Per-layer entries at the peak of a chunked compressed prefill (the uncompressed prefix before
  // the compressing step, or final_lengths where larger). Empty when the prompt is prefilled
  // without that peak (one step, or uncompressed); cleared once the prompt is compressed.
  std::vector<int64_t> peak_lengths;
  absl::Duration session_ttl;                         // kCreateSession
  std::shared_ptr<OutputStream> stream;               // kGenerate
  std::promise<absl::StatusOr<SessionInfo>> created;  // kCreateSession
  absl::Time submitted;

  // Engine-thread state.
  RequestPhase phase = RequestPhase::kWaiting;
  std::optional<SequenceKv> kv;
  // Entries each layer holds when the request ends: the admission reserve (DESIGN.md 4).
  std::vector<int64_t> final_lengths;
  int64_t prompt_done = 0;              // prompt tokens already fed
  int64_t session_tokens = 0;           // session forks: the session's logical length at the fork
  bool holds_append = false;            // this request is its session's one pending append
  std::vector<int32_t> penalty_prompt;  // ids before generation, when a penalty reads them
  std::unique_ptr<GenerationOutput> output;
  std::optional<FinalEvent> pending_final;  // kFeedLast: sent once the last token is fed
  std::vector<int64_t> kv_entries_after_prefill;
  absl::Time admitted = absl::InfinitePast();  // InfinitePast: not yet
  absl::Time first_token = absl::InfinitePast();
  absl::Time prefill_done = absl::InfinitePast();

  int64_t prompt_size() const { return static_cast<int64_t>(request.prompt.size()); }
  bool is_session_request() const {
    return kind == RequestKind::kGenerate && !request.session_id.empty();
  }
};

}  // namespace funnel
