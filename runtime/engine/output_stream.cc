#include "runtime/engine/output_stream.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace funnel {

void OutputStream::Push(TokenEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    events_.emplace_back(std::move(event));
  }
  cv_.notify_all();
}

void OutputStream::Finish(FinalEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    events_.emplace_back(std::move(event));
    finished_ = true;
  }
  cv_.notify_all();
}

std::optional<OutputStream::Event> OutputStream::Next(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (delivered_) return std::nullopt;
  const auto ready = [this] { return !events_.empty(); };
  if (timeout == absl::InfiniteDuration()) {
    cv_.wait(lock, ready);
  } else if (timeout > absl::ZeroDuration()) {
    // Bounded so that the steady_clock arithmetic cannot overflow.
    const absl::Duration bounded = std::min(timeout, absl::Hours(24 * 365));
    cv_.wait_until(lock, std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(bounded), ready);
  }
  if (events_.empty()) return std::nullopt;
  Event event = std::move(events_.front());
  events_.pop_front();
  if (std::holds_alternative<FinalEvent>(event)) delivered_ = true;
  return event;
}

bool OutputStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

}  // namespace funnel
