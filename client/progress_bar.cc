#include "client/progress_bar.h"

#include <algorithm>
#include <cstdio>

namespace funnel {

ProgressBar::ProgressBar(const std::atomic<int64_t>& done, int64_t total, std::string label,
                         std::chrono::milliseconds period)
    : done_(done), total_(total), label_(std::move(label)), period_(period) {
  thread_ = std::thread([this] { Loop(); });
}

ProgressBar::~ProgressBar() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  Draw();
  std::fputc('\n', stderr);
}

void ProgressBar::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, period_, [this] { return stop_; })) Draw();
}

void ProgressBar::Draw() const {
  constexpr int kWidth = 30;
  const int64_t done = done_.load(std::memory_order_relaxed);
  const int filled = static_cast<int>(done * kWidth / std::max<int64_t>(total_, 1));
  std::fprintf(stderr, "\r[%s%s] %lld/%lld%s%s", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, ' ').c_str(), static_cast<long long>(done),
               static_cast<long long>(total_), label_.empty() ? "" : " ", label_.c_str());
  std::fflush(stderr);
}

}  // namespace funnel
