#include "runtime/engine/scheduler.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_format.h"

namespace funnel {

void Scheduler::Enqueue(std::unique_ptr<ActiveRequest> request) {
  request->phase = RequestPhase::kWaiting;
  waiting_.push_back(std::move(request));
}

StepPlan Scheduler::Plan(int64_t free_blocks, AdmissionControl& admission) {
  StepPlan plan;
  int64_t budget = limits_.max_tokens_per_step;
  bool prefill_in_step = false;
  PlanRunning(plan, budget, prefill_in_step);
  AdmitWaiting(plan, free_blocks, budget, prefill_in_step, admission);
  return plan;
}

namespace {

// The next prompt chunk of `r` within `budget` (0 tokens: none this step). The chunk that ends a
// compressed prompt holds at least r.last_chunk_min_tokens tokens; when those alone exceed the
// budget, that chunk runs only in a step with no other prefill (and takes its whole budget).
struct Chunk {
  int64_t tokens = 0;
  bool last = false;
};

Chunk NextChunk(const ActiveRequest& r, int64_t budget, bool prefill_in_step) {
  const int64_t left = r.prompt_size() - r.prompt_done;
  if (left <= budget) return {left, true};
  const int64_t min_last = std::min(r.last_chunk_min_tokens, left);
  const int64_t part = std::min(budget, left - min_last);
  if (part > 0) return {part, false};
  if (budget <= 0 || left > min_last || prefill_in_step) return {};
  return {left, true};
}

}  // namespace

// Adds the next `chunk` of r's prompt to the step.
void AddChunk(StepPlan& plan, ActiveRequest& r, Chunk chunk, int64_t& budget,
              bool& prefill_in_step) {
  std::span<const int32_t> prompt(r.request.prompt);
  const KvPolicy* policy = r.compressing && chunk.last ? &r.policy : nullptr;
  plan.entries.push_back(
      {&r, prompt.subspan(static_cast<size_t>(r.prompt_done), static_cast<size_t>(chunk.tokens)),
       policy});
  budget -= chunk.tokens;  // negative after an oversize last chunk: no other prefill this step
  plan.num_prompt_tokens += chunk.tokens;
  prefill_in_step = true;
}

void Scheduler::PlanRunning(StepPlan& plan, int64_t& budget, bool& prefill_in_step) const {
  for (const std::unique_ptr<ActiveRequest>& r : running_) {
    switch (r->phase) {
      case RequestPhase::kDecode:
      case RequestPhase::kFeedLast: {
        const std::vector<int32_t>& generated = r->output->generated();
        plan.entries.push_back({r.get(), std::span<const int32_t>(&generated.back(), 1), nullptr});
        break;
      }
      case RequestPhase::kPrefill: {
        const Chunk chunk = NextChunk(*r, budget, prefill_in_step);
        if (chunk.tokens > 0) AddChunk(plan, *r, chunk, budget, prefill_in_step);
        break;
      }
      case RequestPhase::kWaiting:
        assert(false && "waiting request in the running set");
        break;
    }
  }
}

void Scheduler::AdmitWaiting(StepPlan& plan, int64_t free_blocks, int64_t& budget,
                             bool& prefill_in_step, AdmissionControl& admission) {
  while (!waiting_.empty() && static_cast<int32_t>(running_.size()) < limits_.max_num_seqs) {
    ActiveRequest& head = *waiting_.front();
    const Chunk chunk = NextChunk(head, budget, prefill_in_step);
    if (chunk.tokens == 0) break;
    absl::StatusOr<int64_t> need = admission.Footprint(head, /*chunked=*/!chunk.last);
    if (!need.ok()) {
      plan.rejected.emplace_back(PopHead(), need.status());
      continue;
    }
    if (*need > free_blocks) {
      if (!running_.empty()) break;  // blocks free up as running requests finish
      plan.rejected.emplace_back(
          PopHead(), absl::ResourceExhaustedError(absl::StrFormat(
                         "request needs %d KV blocks but only %d are free with no request running; "
                         "sessions hold the rest of the cache",
                         *need, free_blocks)));
      continue;
    }
    free_blocks -= *need;
    admission.Start(head);
    head.phase = RequestPhase::kPrefill;
    AddChunk(plan, head, chunk, budget, prefill_in_step);
    running_.push_back(PopHead());
  }
}

std::unique_ptr<ActiveRequest> Scheduler::PopHead() {
  std::unique_ptr<ActiveRequest> r = std::move(waiting_.front());
  waiting_.pop_front();
  return r;
}

std::unique_ptr<ActiveRequest> Scheduler::Remove(const ActiveRequest* request) {
  auto running = std::find_if(running_.begin(), running_.end(),
                              [&](const auto& r) { return r.get() == request; });
  if (running != running_.end()) {
    std::unique_ptr<ActiveRequest> out = std::move(*running);
    running_.erase(running);
    return out;
  }
  auto waiting = std::find_if(waiting_.begin(), waiting_.end(),
                              [&](const auto& r) { return r.get() == request; });
  if (waiting != waiting_.end()) {
    std::unique_ptr<ActiveRequest> out = std::move(*waiting);
    waiting_.erase(waiting);
    return out;
  }
  return nullptr;
}

std::vector<std::unique_ptr<ActiveRequest>> Scheduler::RemoveIf(
    const std::function<bool(const ActiveRequest&)>& pred) {
  std::vector<std::unique_ptr<ActiveRequest>> out;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (pred(**it)) {
      out.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if (pred(**it)) {
      out.push_back(std::move(*it));
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<std::unique_ptr<ActiveRequest>> Scheduler::RemoveAll() {
  return RemoveIf([](const ActiveRequest&) { return true; });
}

}  // namespace funnel
