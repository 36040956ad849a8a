#include "runtime/engine/output_stream.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace funnel {

void OutputStream::Push(TokenEvent event) {
  std::shared_ptr<const std::function<void()>> listener;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    events_.emplace_back(std::move(event));
    listener = listener_;
  }
  cv_.notify_all();
  if (listener) (*listener)();
}

void OutputStream::Finish(FinalEvent event) {
  std::shared_ptr<const std::function<void()>> listener;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    events_.emplace_back(std::move(event));
    finished_ = true;
    listener = listener_;
  }
  cv_.notify_all();
  if (listener) (*listener)();
}

void OutputStream::SetListener(std::function<void()> listener) {
  std::shared_ptr<const std::function<void()>> now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    listener_ =
        listener ? std::make_shared<const std::function<void()>>(std::move(listener)) : nullptr;
    if (!events_.empty()) now = listener_;
  }
  if (now) (*now)();
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
    cv_.wait_until(lock, std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(bounded),
                   ready);
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
