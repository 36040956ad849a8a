// Runs the upstream Generate calls of one request's choices concurrently (one thread each) and
// merges their events into one sequence: each choice's events arrive in order, and every choice
// ends with exactly one kFinal or kError event. Events wait in a queue (Next) until DrainInto
// hands them, and every later one, to a handler that runs on the workers' threads, so a streamed
// token goes from the gRPC reader to the HTTP socket without a thread switch.
//
// Routing: a request with a session id goes to the session's owner; any other to the
// least-loaded backend serving the model. A generation that fails with UNAVAILABLE marks its
// backend down; before its first token it is retried on another backend (not for sessions).
//
// Thread rules: Start, Next and DrainInto are for one consumer thread; Cancel may be called from
// any thread, the handler included. The destructor cancels what still runs and joins the workers.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/funnel_client.h"
#include "funnel/v1/inference.pb.h"
#include "server/gateway/backend_pool.h"
#include "server/gateway/gateway_metrics.h"

namespace funnel {

struct ChoiceEvent {
  enum class Kind { kDelta, kFinal, kError };
  Kind kind = Kind::kError;
  int32_t index = 0;        // the choice
  v1::TokenDelta delta;     // kDelta
  v1::GenerateFinal final;  // kFinal
  absl::Status status;      // kError
};

struct FanoutOptions {
  std::string model;       // routing of plain requests
  std::string session_id;  // "" for none
  std::string api_key;     // forwarded to the backends ("" for none)
  std::string request_id;  // choice i runs upstream as "<request_id>-<i>"
  absl::Duration timeout = absl::InfiniteDuration();  // per generation; then DEADLINE_EXCEEDED
};

class ChoiceFanout {
 public:
  ChoiceFanout(BackendPool* pool, GatewayMetrics* metrics, std::vector<v1::GenerateRequest> choices,
               FanoutOptions options);
  ~ChoiceFanout();

  ChoiceFanout(const ChoiceFanout&) = delete;
  ChoiceFanout& operator=(const ChoiceFanout&) = delete;

  void Start();
  // The next event, waiting for it; nullopt once every choice has ended and all was consumed.
  std::optional<ChoiceEvent> Next();
  // Passes the queued events, then every later one as it arrives, to `handler` (one call at a
  // time, in arrival order, on whichever thread produced the event) and returns once every choice
  // has ended and its last event was handled. The handler must not call Next or DrainInto.
  void DrainInto(const std::function<void(ChoiceEvent&)>& handler);
  // Cancels every generation still running (each then ends with a CANCELLED error event).
  void Cancel();

  size_t num_choices() const { return choices_.size(); }

 private:
  void Run(size_t index);
  // One attempt on one backend: nullopt when the choice ended (its last event pushed), else the
  // error to retry elsewhere.
  std::optional<absl::Status> Attempt(size_t index, BackendPool::Lease lease, bool& streamed);
  absl::StatusOr<BackendPool::Lease> Pick(const std::vector<size_t>& tried);
  void Push(ChoiceEvent event);

  BackendPool* pool_;
  GatewayMetrics* metrics_;
  std::vector<v1::GenerateRequest> choices_;
  FanoutOptions options_;
  std::vector<std::unique_ptr<GenerateCanceller>> cancellers_;
  std::vector<std::thread> workers_;

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<ChoiceEvent> events_;  // guarded by mu_
  size_t ended_ = 0;                // choices whose last event was pushed; guarded by mu_
  const std::function<void(ChoiceEvent&)>* handler_ = nullptr;  // guarded by mu_
};

}  // namespace funnel
