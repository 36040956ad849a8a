// What RPC threads may read or change of the engine without going through the Inbox: the live
// request registry (for Cancel by id), copies of the session descriptions (for Submit's
// checks and GetSession/ListSessions), the stats snapshot and a few counters and flags.
//
// Thread rules: every method is thread-safe. The engine thread is the only writer of the
// session copies and the stats snapshot; it publishes them after every change.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/output_stream.h"

namespace funnel {

// A published copy of one session.
struct SessionView {
  SessionInfo info;
  int64_t num_blocks = 0;       // pool blocks its cache holds
  bool append_pending = false;  // an append-mode request is queued or running
  bool in_use = false;          // requests use it: it does not expire before they finish

  bool expired(absl::Time now) const { return !in_use && info.expires <= now; }
};

class SharedState {
 public:
  // Request registry: ids of submitted requests that have not finished.
  // False when `id` is already live.
  bool AddRequest(const std::string& id, std::shared_ptr<OutputStream> stream);
  void RemoveRequest(const std::string& id);
  std::shared_ptr<OutputStream> FindRequest(const std::string& id) const;

  // Session copies.
  void PutSession(SessionView view);
  void EraseSession(const std::string& id);
  void ClearSessions();
  // The session if it exists, belongs to `owner` and has not expired at `now`.
  std::optional<SessionView> FindSession(const std::string& id, const std::string& owner, absl::Time now) const;
  std::vector<SessionInfo> ListSessions(const std::string& owner, absl::Time now) const;
  int64_t num_sessions() const;

  void SetStats(const EngineStats& stats);
  EngineStats stats() const;  // with the counters below filled in

  std::atomic<int64_t> num_queued{0};        // accepted, not yet admitted (inbox + waiting queue)
  std::atomic<int64_t> rejections_total{0};  // RESOURCE_EXHAUSTED at Submit or admission
  std::atomic<bool> accepting{true};         // false once Shutdown began
  std::atomic<bool> dead{false};             // a backend fault happened

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<OutputStream>> requests_;
  std::map<std::string, SessionView> sessions_;
  EngineStats stats_;
};

}  // namespace funnel
