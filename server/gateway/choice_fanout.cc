#include "server/gateway/choice_fanout.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace funnel {

ChoiceFanout::ChoiceFanout(BackendPool* pool, GatewayMetrics* metrics,
                           std::vector<v1::GenerateRequest> choices, FanoutOptions options)
    : pool_(pool), metrics_(metrics), choices_(std::move(choices)), options_(std::move(options)) {
  for (size_t i = 0; i < choices_.size(); ++i) {
    cancellers_.push_back(std::make_unique<GenerateCanceller>());
    if (!options_.request_id.empty()) {
      choices_[i].set_request_id(absl::StrCat(options_.request_id, "-", i));
    }
  }
}

ChoiceFanout::~ChoiceFanout() {
  Cancel();
  for (std::thread& t : workers_) t.join();
}

void ChoiceFanout::Start() {
  for (size_t i = 0; i < choices_.size(); ++i) workers_.emplace_back([this, i] { Run(i); });
}

void ChoiceFanout::Cancel() {
  for (auto& c : cancellers_) c->Cancel();
}

std::optional<ChoiceEvent> ChoiceFanout::Next() {
  std::unique_lock<std::mutex> lock(mu_);
  ready_.wait(lock, [this] { return !events_.empty() || ended_ == choices_.size(); });
  if (events_.empty()) return std::nullopt;
  ChoiceEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

void ChoiceFanout::DrainInto(const std::function<void(ChoiceEvent&)>& handler) {
  std::unique_lock<std::mutex> lock(mu_);
  while (!events_.empty()) {
    ChoiceEvent event = std::move(events_.front());
    events_.pop_front();
    handler(event);
  }
  handler_ = &handler;
  ready_.wait(lock, [this] { return ended_ == choices_.size(); });
  handler_ = nullptr;
}

void ChoiceFanout::Push(ChoiceEvent event) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (event.kind != ChoiceEvent::Kind::kDelta) ++ended_;
    if (handler_ != nullptr) {
      (*handler_)(event);  // under mu_: one event at a time, in order
    } else {
      events_.push_back(std::move(event));
    }
    // DrainInto waits only for the end: no wake-up (thread switch) per token.
    wake = handler_ == nullptr || ended_ == choices_.size();
  }
  if (wake) ready_.notify_one();
}

absl::StatusOr<BackendPool::Lease> ChoiceFanout::Pick(const std::vector<size_t>& tried) {
  if (!options_.session_id.empty()) return pool_->PickForSession(options_.session_id);
  return pool_->PickLeastLoaded(options_.model, tried);
}

void ChoiceFanout::Run(size_t index) {
  std::vector<size_t> tried;
  bool streamed = false;
  absl::Status retried;  // why the last attempt failed, when it is being retried
  while (true) {
    absl::StatusOr<BackendPool::Lease> lease = Pick(tried);
    if (!lease.ok()) {
      // After a retry, "no backend left" says less than the failure that caused it.
      const absl::Status& status = retried.ok() ? lease.status() : retried;
      Push({ChoiceEvent::Kind::kError, static_cast<int32_t>(index), {}, {}, status});
      return;
    }
    tried.push_back(lease->index());
    std::optional<absl::Status> retry = Attempt(index, *std::move(lease), streamed);
    if (!retry) return;
    retried = *retry;
    if (metrics_ != nullptr) metrics_->RecordRetry();
  }
}

std::optional<absl::Status> ChoiceFanout::Attempt(size_t index, BackendPool::Lease lease,
                                                  bool& streamed) {
  const int32_t choice = static_cast<int32_t>(index);
  std::unique_ptr<FunnelClient> client = pool_->Client(lease.index(), options_.api_key);
  GenerateOptions go;
  go.canceller = cancellers_[index].get();
  go.timeout = options_.timeout;
  go.on_delta = [&](const v1::TokenDelta& delta) {
    streamed = true;
    Push({ChoiceEvent::Kind::kDelta, choice, delta, {}, absl::OkStatus()});
    return true;
  };
  absl::StatusOr<GenerateResult> result = client->Generate(choices_[index], go);
  if (result.ok()) {
    Push({ChoiceEvent::Kind::kFinal, choice, {}, std::move(result->final), absl::OkStatus()});
    return std::nullopt;
  }
  const absl::Status& status = result.status();
  if (absl::IsUnavailable(status)) {
    pool_->ReportUnavailable(lease.index());
    const bool retry = !streamed && options_.session_id.empty() && !cancellers_[index]->cancelled();
    if (retry) {
      spdlog::info("request {}: backend {} unavailable ({}); retrying elsewhere",
                   choices_[index].request_id(), pool_->address(lease.index()),
                   std::string(status.message()));
      return status;
    }
  }
  Push({ChoiceEvent::Kind::kError, choice, {}, {}, status});
  return std::nullopt;
}

}  // namespace funnel
