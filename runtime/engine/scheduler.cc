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
        // Only chunked (uncompressed) prefills stay in this phase across steps.
        assert(!r->compressing);
        const int64_t n = std::min(r->prompt_size() - r->prompt_done, budget);
        if (n <= 0) break;
        std::span<const int32_t> prompt(r->request.prompt);
        plan.entries.push_back({r.get(), prompt.subspan(static_cast<size_t>(r->prompt_done), static_cast<size_t>(n)),
                                nullptr});
        budget -= n;
        plan.num_prompt_tokens += n;
        prefill_in_step = true;
        break;
      }
      case RequestPhase::kWaiting:
        assert(false && "waiting request in the running set");
        break;
    }
  }
}

void Scheduler::AdmitWaiting(StepPlan& plan, int64_t free_blocks, int64_t& budget, bool& prefill_in_step,
                             AdmissionControl& admission) {
  while (!waiting_.empty() && static_cast<int32_t>(running_.size()) < limits_.max_num_seqs) {
    ActiveRequest& head = *waiting_.front();
    const int64_t prompt = head.prompt_size();
    int64_t chunk = prompt;
    if (head.compressing) {
      // One step for the whole prompt: within the budget left, or alone among prefills.
      if (prompt > budget && prefill_in_step) break;
    } else {
      if (budget <= 0) break;
      chunk = std::min(prompt, budget);
    }
    absl::StatusOr<int64_t> need = admission.Footprint(head);
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
    std::span<const int32_t> tokens(head.request.prompt);
    plan.entries.push_back({&head, tokens.first(static_cast<size_t>(chunk)),
                            head.compressing ? &head.policy : nullptr});
    budget -= chunk;  // negative after an oversize compressing prefill: nothing else this step
    plan.num_prompt_tokens += chunk;
    prefill_in_step = true;
    running_.push_back(PopHead());
  }
}

std::unique_ptr<ActiveRequest> Scheduler::PopHead() {
  std::unique_ptr<ActiveRequest> r = std::move(waiting_.front());
  waiting_.pop_front();
  return r;
}

std::unique_ptr<ActiveRequest> Scheduler::Remove(const ActiveRequest* request) {
  auto running = std::find_if(running_.begin(), running_.end(), [&](const auto& r) { return r.get() == request; });
  if (running != running_.end()) {
    std::unique_ptr<ActiveRequest> out = std::move(*running);
    running_.erase(running);
    return out;
  }
  auto waiting = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& r) { return r.get() == request; });
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
