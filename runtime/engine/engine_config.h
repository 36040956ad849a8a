// Engine limits and defaults; validated once when the engine is created.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "runtime/kv/kv_policy.h"

namespace funnel {

struct EngineConfig {
  KvPolicy default_kv_policy;          // used when a request names none
  int32_t max_num_seqs = 64;           // running sequences at once
  int32_t max_queue = 256;             // waiting requests; beyond: RESOURCE_EXHAUSTED
  int64_t max_prompt_tokens = 0;       // 0: the model's context length
  int64_t max_tokens_per_step = 2048;  // prompt tokens admitted per step (decodes always run)
  absl::Duration session_ttl = absl::Hours(1);  // default TTL of sessions
  int32_t max_sessions = 1024;
  // Durable sessions: a directory where each session is written when created or appended and
  // from which sessions are reloaded at start (session_persister.h). Empty: memory only.
  std::string session_dir;
  // Identifies the model weights (e.g. path, size, hash) in the session files, so that files of
  // another model are skipped; the cache layout is added to it by the engine.
  std::string model_fingerprint;
  std::string replica_id =
      "r0";  // embedded in session ids ("sess-<replica>-<16 hex>"); [A-Za-z0-9_.-]

  absl::Status Validate() const;
};

}  // namespace funnel
