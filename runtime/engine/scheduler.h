// Continuous-batching policy: the FIFO waiting queue, the running set, and the plan of each step.
//
// Each step (Plan):
//  1. Every running request contributes its next tokens: one decode token (or, in append mode,
//     the last token to feed), or the next chunk of a prompt that is being prefilled in chunks.
//  2. Waiting requests are admitted strictly in arrival order while the running set is below
//     max_num_seqs, the step's prompt-token budget (max_tokens_per_step) allows, and the head's
//     whole KV footprint fits in the free blocks not reserved by running requests.
//
// Rules (documented in engine.h):
//  - Strict FIFO: the head of the queue is never overtaken. When it does not fit, admission stops
//    for this step even if a later, smaller request would fit, so a big request waits at most
//    for the requests running when it reached the head (no starvation).
//  - Prompt tokens per step are bounded by max_tokens_per_step; decode tokens always run. Prompts
//    and session suffixes are prefilled in chunks of what is left of the budget. A compressed
//    prompt is compressed by its last chunk, which must hold its last last_chunk_min_tokens
//    tokens (the observation window; the whole prompt for h2o, or when its full K/V could never
//    sit in the pool): when those alone exceed what is left of the budget, that chunk runs only
//    in a step with no other prefill and takes the whole budget of that step.
//  - A head that does not fit while nothing is running can only be waiting for sessions' blocks:
//    it is rejected with RESOURCE_EXHAUSTED instead of blocking the queue.
//
// Thread rules: engine thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/active_request.h"
#include "runtime/kv/kv_policy.h"

namespace funnel {

// One sequence's part of a planned step.
struct StepEntry {
  ActiveRequest* request = nullptr;
  std::span<const int32_t> tokens;
  const KvPolicy* policy = nullptr;  // set on the chunk that ends a compressed prompt
};

// What admission asks of the engine.
class AdmissionControl {
 public:
  virtual ~AdmissionControl() = default;
  // The KV blocks `request` needs over its life (its exact footprint, including the temporary
  // full K/V of a compressed prompt when it is `chunked`; it may set request.final_lengths and
  // request.peak_lengths), or an error that rejects it (e.g. its session is gone).
  virtual absl::StatusOr<int64_t> Footprint(ActiveRequest& request, bool chunked) = 0;
  // Gives an admitted request its cache (a new sequence or a fork of its session).
  virtual void Start(ActiveRequest& request) = 0;
};

struct SchedulerLimits {
  int32_t max_num_seqs = 64;
  int64_t max_tokens_per_step = 2048;
};

struct StepPlan {
  std::vector<StepEntry> entries;
  // Requests refused at admission, with the status that ends them.
  std::vector<std::pair<std::unique_ptr<ActiveRequest>, absl::Status>> rejected;
  int64_t num_prompt_tokens = 0;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerLimits limits) : limits_(limits) {}

  void Enqueue(std::unique_ptr<ActiveRequest> request);
  // `free_blocks`: pool blocks free and not reserved by running requests.
  StepPlan Plan(int64_t free_blocks, AdmissionControl& admission);

  // Takes a request (waiting or running) out of the scheduler; null if it is not there.
  std::unique_ptr<ActiveRequest> Remove(const ActiveRequest* request);
  // Takes out every request (waiting and running) for which `pred` holds.
  std::vector<std::unique_ptr<ActiveRequest>> RemoveIf(
      const std::function<bool(const ActiveRequest&)>& pred);
  std::vector<std::unique_ptr<ActiveRequest>> RemoveAll();

  const std::deque<std::unique_ptr<ActiveRequest>>& waiting() const { return waiting_; }
  const std::vector<std::unique_ptr<ActiveRequest>>& running() const { return running_; }
  bool idle() const { return waiting_.empty() && running_.empty(); }

 private:
  void PlanRunning(StepPlan& plan, int64_t& budget, bool& prefill_in_step) const;
  void AdmitWaiting(StepPlan& plan, int64_t free_blocks, int64_t& budget, bool& prefill_in_step,
                    AdmissionControl& admission);
  std::unique_ptr<ActiveRequest> PopHead();

  SchedulerLimits limits_;
  std::deque<std::unique_ptr<ActiveRequest>> waiting_;
  std::vector<std::unique_ptr<ActiveRequest>> running_;  // in admission order
};

}  // namespace funnel
