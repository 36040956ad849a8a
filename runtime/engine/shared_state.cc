#include "runtime/engine/shared_state.h"

#include <utility>

namespace funnel {

bool SharedState::AddRequest(const std::string& id, std::shared_ptr<OutputStream> stream) {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_.emplace(id, std::move(stream)).second;
}

void SharedState::RemoveRequest(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  requests_.erase(id);
}

std::shared_ptr<OutputStream> SharedState::FindRequest(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : it->second;
}

void SharedState::PutSession(SessionView view) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string id = view.info.session_id;
  sessions_[id] = std::move(view);
}

void SharedState::EraseSession(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_.erase(id);
}

void SharedState::ClearSessions() {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_.clear();
}

std::optional<SessionView> SharedState::FindSession(const std::string& id, const std::string& owner,
                                                    absl::Time now) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.info.owner != owner) return std::nullopt;
  if (it->second.expired(now)) return std::nullopt;
  return it->second;
}

std::vector<SessionInfo> SharedState::ListSessions(const std::string& owner, absl::Time now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<SessionInfo> out;
  for (const auto& [id, view] : sessions_) {
    if (view.info.owner == owner && !view.expired(now)) out.push_back(view.info);
  }
  return out;
}

int64_t SharedState::num_sessions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(sessions_.size());
}

void SharedState::SetStats(const EngineStats& stats) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_ = stats;
}

EngineStats SharedState::stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = stats_;
  }
  s.num_waiting = num_queued.load();
  s.rejections_total = rejections_total.load();
  s.healthy = !dead.load();
  return s;
}

}  // namespace funnel
