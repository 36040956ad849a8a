// The command queue from RPC threads to the engine thread (mutex + condition variable).
//
// Thread rules: Push/Wake from any thread; TakeAll/Wait/Close from the engine thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "runtime/engine/active_request.h"

namespace funnel {

// A generation or a session creation, validated by Submit / CreateSession.
struct AddRequestCommand {
  std::unique_ptr<ActiveRequest> request;
};

struct DeleteSessionCommand {
  std::string session_id;
  std::string owner;
  std::promise<absl::Status> done;
};

// Stop admitting, let running requests finish until `deadline`, then stop the thread.
struct ShutdownCommand {
  absl::Time deadline;
};

using EngineCommand = std::variant<AddRequestCommand, DeleteSessionCommand, ShutdownCommand>;

class Inbox {
 public:
  // Queues a command and wakes the engine. False (the command is handed back untouched in
  // `command`) once the inbox is closed.
  bool Push(EngineCommand& command);
  // Wakes the engine thread without a command (e.g. a cancel flag was set).
  void Wake();
  std::vector<EngineCommand> TakeAll();
  // Returns when a command is queued, Wake() was called, or `timeout` passed.
  void Wait(absl::Duration timeout);
  // Refuses later pushes and returns the commands still queued.
  std::vector<EngineCommand> Close();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<EngineCommand> commands_;
  bool woken_ = false;
  bool closed_ = false;
};

}  // namespace funnel
