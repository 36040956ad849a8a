#include "runtime/engine/engine_config.h"

#include "absl/strings/str_format.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

bool ValidReplicaId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::Status EngineConfig::Validate() const {
  RETURN_IF_ERROR(default_kv_policy.Validate());
  if (max_num_seqs < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("max_num_seqs must be >= 1, got %d", max_num_seqs));
  }
  if (max_queue < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("max_queue must be >= 1, got %d", max_queue));
  }
  if (max_prompt_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_prompt_tokens must be >= 0 (0: the model context), got %d", max_prompt_tokens));
  }
  if (max_tokens_per_step < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_tokens_per_step must be >= 1, got %d", max_tokens_per_step));
  }
  if (session_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("session_ttl must be positive");
  }
  if (max_sessions < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("max_sessions must be >= 0, got %d", max_sessions));
  }
  if (!ValidReplicaId(replica_id)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "replica_id must be 1 to 64 characters of [A-Za-z0-9_.-], got '%s'", replica_id));
  }
  return absl::OkStatus();
}

}  // namespace funnel
