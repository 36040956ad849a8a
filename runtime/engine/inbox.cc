#include "runtime/engine/inbox.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace funnel {

bool Inbox::Push(EngineCommand& command) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    commands_.push_back(std::move(command));
  }
  cv_.notify_one();
  return true;
}

void Inbox::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
  }
  cv_.notify_one();
}

std::vector<EngineCommand> Inbox::TakeAll() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<EngineCommand> out;
  out.reserve(commands_.size());
  for (EngineCommand& c : commands_) out.push_back(std::move(c));
  commands_.clear();
  return out;
}

void Inbox::Wait(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Duration bounded = std::clamp(timeout, absl::ZeroDuration(), absl::Hours(1));
  cv_.wait_for(lock, absl::ToChronoNanoseconds(bounded), [this] { return woken_ || !commands_.empty(); });
  woken_ = false;
}

std::vector<EngineCommand> Inbox::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  std::vector<EngineCommand> out;
  for (EngineCommand& c : commands_) out.push_back(std::move(c));
  commands_.clear();
  return out;
}

}  // namespace funnel
