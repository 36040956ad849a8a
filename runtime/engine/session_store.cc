#include "runtime/engine/session_store.h"

#include <utility>

#include "absl/strings/str_format.h"

namespace funnel {

SessionStore::SessionStore(ModelRunner* runner, std::string replica_id, int32_t max_sessions,
                           uint64_t seed)
    : runner_(runner),
      replica_id_(std::move(replica_id)),
      max_sessions_(max_sessions),
      rng_(seed) {}

SessionStore::~SessionStore() { Clear(); }

std::string SessionStore::NewId() {
  for (;;) {
    std::string id = absl::StrFormat("sess-%s-%016x", replica_id_, rng_());
    if (!sessions_.contains(id)) return id;
  }
}

absl::StatusOr<Session*> SessionStore::Add(SequenceKv kv, std::vector<int32_t> tokens,
                                           const KvPolicy& policy, const std::string& owner,
                                           absl::Duration ttl, absl::Time now) {
  if (size() >= max_sessions_) {
    runner_->Release(kv);
    return absl::ResourceExhaustedError(
        absl::StrFormat("too many sessions (max_sessions = %d); delete some first", max_sessions_));
  }
  std::string id = NewId();
  Session s{.id = id,
            .owner = owner,
            .kv = std::move(kv),
            .tokens = std::move(tokens),
            .policy = policy,
            .created = now,
            .expires = now + ttl,
            .ttl = ttl};
  auto [it, inserted] = sessions_.emplace(id, std::move(s));
  return &it->second;
}

absl::StatusOr<Session*> SessionStore::Restore(std::string id, SequenceKv kv,
                                               std::vector<int32_t> tokens, const KvPolicy& policy,
                                               const std::string& owner, absl::Duration ttl,
                                               absl::Time created, absl::Time expires) {
  absl::Status refused;
  if (size() >= max_sessions_) {
    refused = absl::ResourceExhaustedError(
        absl::StrFormat("too many sessions (max_sessions = %d)", max_sessions_));
  } else if (sessions_.contains(id) || !id.starts_with("sess-")) {
    refused =
        absl::InvalidArgumentError(absl::StrFormat("session id '%s' is taken or malformed", id));
  }
  if (!refused.ok()) {
    runner_->Release(kv);
    return refused;
  }
  Session s{.id = id,
            .owner = owner,
            .kv = std::move(kv),
            .tokens = std::move(tokens),
            .policy = policy,
            .created = created,
            .expires = expires,
            .ttl = ttl};
  auto [it, inserted] = sessions_.emplace(std::move(id), std::move(s));
  return &it->second;
}

Session* SessionStore::Find(const std::string& id, absl::Time now) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return nullptr;
  const Session& s = it->second;
  if (s.expires <= now && s.active_requests == 0 && !s.append_pending) return nullptr;
  return &it->second;
}

Session* SessionStore::Get(const std::string& id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : &it->second;
}

bool SessionStore::Remove(const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return false;
  runner_->Release(it->second.kv);
  sessions_.erase(it);
  return true;
}

std::vector<std::string> SessionStore::Expire(absl::Time now) {
  std::vector<std::string> gone;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session& s = it->second;
    if (s.expires <= now && s.active_requests == 0 && !s.append_pending) {
      gone.push_back(s.id);
      runner_->Release(s.kv);
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

absl::Time SessionStore::NextExpiry() const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [id, s] : sessions_) {
    if (s.active_requests == 0 && !s.append_pending) next = std::min(next, s.expires);
  }
  return next;
}

void SessionStore::Clear() {
  for (auto& [id, s] : sessions_) runner_->Release(s.kv);
  sessions_.clear();
}

void SessionStore::Replace(Session& session, SequenceKv kv, std::span<const int32_t> turn) {
  runner_->Release(session.kv);
  session.kv = std::move(kv);
  session.tokens.insert(session.tokens.end(), turn.begin(), turn.end());
}

SessionInfo SessionStore::Describe(const Session& s) const {
  SessionInfo info;
  info.session_id = s.id;
  info.owner = s.owner;
  info.tokens = s.kv.num_positions();
  for (int32_t l = 0; l < s.kv.num_layers(); ++l)
    info.per_layer_tokens.push_back(s.kv.layer_length(l));
  info.kv_bytes = s.kv.num_blocks() * runner_->block_bytes();
  info.kv_policy = s.policy;
  info.created = s.created;
  info.expires = s.expires;
  info.active_requests = s.active_requests;
  return info;
}

}  // namespace funnel
