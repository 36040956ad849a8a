// Per-request queue from the engine thread to the RPC thread that streams the response.
//
// Thread rules: the engine thread calls Push/Finish; one consumer at a time calls Next (a thread
// that blocks in it, or a listener that drains it without blocking). Cancel may be called from
// any thread (it only sets a flag the engine polls).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <variant>

#include "absl/time/time.h"
#include "runtime/engine/request.h"

namespace funnel {

class OutputStream {
 public:
  using Event = std::variant<TokenEvent, FinalEvent>;

  void Push(TokenEvent event);
  void Finish(FinalEvent event);  // the last event; later Push/Finish calls are ignored

  // Waits up to `timeout` for the next event; nullopt on timeout. After the FinalEvent has been
  // returned, returns nullopt at once.
  std::optional<Event> Next(absl::Duration timeout);
  bool finished() const;

  // For consumers that do not block in Next (gRPC callback reactors): `listener` is called after
  // every Push and Finish, on the producing thread and outside the stream's lock, and once right
  // away if events are waiting. It must be quick, must not call Push/Finish, and may run once
  // more after being replaced (a call already under way). nullptr removes it.
  void SetListener(std::function<void()> listener);

  // Asks the engine to stop this request (client gone or Cancel RPC); its blocks are freed at the
  // next step boundary and a FinalEvent with CANCELLED follows.
  void RequestCancel() { cancel_requested_.store(true, std::memory_order_relaxed); }
  bool cancel_requested() const { return cancel_requested_.load(std::memory_order_relaxed); }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  bool finished_ = false;   // FinalEvent pushed
  bool delivered_ = false;  // FinalEvent returned by Next
  std::atomic<bool> cancel_requested_{false};
  std::shared_ptr<const std::function<void()>> listener_;  // guarded by mu_
};

}  // namespace funnel
