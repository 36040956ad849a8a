// Compressed-cache sessions (DESIGN.md section 6): each holds the SequenceKv of a prefilled (and
// usually compressed) context, the context's ids, and its owner.
//
// Ids are "sess-<replica_id>-<16 random hex digits>". Lookups are scoped by owner: another
// owner's session is reported as not found. TTL is an idle TTL: `expires` = last use + ttl,
// refreshed when a request starts on the session and when it ends; a session that requests are
// using does not expire until they finish.
//
// Thread rules: engine thread only (other threads read the copies in SharedState).
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "runtime/exec/model_runner.h"
#include "runtime/kv/sequence_kv.h"

namespace funnel {

struct Session {
  std::string id;
  std::string owner;
  SequenceKv kv;
  std::vector<int32_t> tokens;  // the ids the cache holds: context, then appended turns
  KvPolicy policy;
  absl::Time created;
  absl::Time expires;
  absl::Duration ttl;
  int32_t active_requests = 0;  // running forks (not counting queued ones)
  bool append_pending = false;  // an append-mode request is queued or running
};

class SessionStore {
 public:
  // `runner` must outlive the store (it owns the pool the sessions' blocks come from).
  SessionStore(ModelRunner* runner, std::string replica_id, int32_t max_sessions, uint64_t seed);
  ~SessionStore();  // releases every session's blocks

  // Takes `kv` as a new session. RESOURCE_EXHAUSTED (and `kv` released) when max_sessions exist.
  absl::StatusOr<Session*> Add(SequenceKv kv, std::vector<int32_t> tokens, const KvPolicy& policy,
                               const std::string& owner, absl::Duration ttl, absl::Time now);
  // Takes `kv` as a session restored from disk under its own id. InvalidArgument when the id is
  // taken or not of this store's form, RESOURCE_EXHAUSTED when max_sessions exist; `kv` is
  // released on error.
  absl::StatusOr<Session*> Restore(std::string id, SequenceKv kv, std::vector<int32_t> tokens,
                                   const KvPolicy& policy, const std::string& owner,
                                   absl::Duration ttl, absl::Time created, absl::Time expires);
  // The live session `id` (not expired at `now`, or in use), or null.
  Session* Find(const std::string& id, absl::Time now);
  // The session `id` even if expired, or null.
  Session* Get(const std::string& id);
  // Removes the session and drops its block references (forks keep theirs). False if absent.
  bool Remove(const std::string& id);
  // Removes sessions whose TTL passed and that no request is using; returns their ids.
  std::vector<std::string> Expire(absl::Time now);
  // Earliest expiry among the sessions that no request uses, InfiniteFuture when none.
  absl::Time NextExpiry() const;
  void Clear();

  // Replaces the session's cache with `kv` (an append: the session's fork extended by a turn)
  // and appends `turn` to its ids. The old cache's references are dropped.
  void Replace(Session& session, SequenceKv kv, std::span<const int32_t> turn);

  SessionInfo Describe(const Session& session) const;
  int32_t size() const { return static_cast<int32_t>(sessions_.size()); }
  const std::map<std::string, Session>& sessions() const { return sessions_; }

 private:
  std::string NewId();

  ModelRunner* runner_;
  std::string replica_id_;
  int32_t max_sessions_;
  std::mt19937_64 rng_;
  std::map<std::string, Session> sessions_;
};

}  // namespace funnel
