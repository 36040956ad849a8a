// A terminal progress bar for the load and evaluation commands: "[#####     ] done/total label"
// redrawn on stderr every `period` until destroyed (then drawn once more, with a newline).
//
// Thread rules: its own thread reads `done` (any thread may advance it); construct and destroy
// on one thread. Callers create it only when stderr is a terminal.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace funnel {

class ProgressBar {
 public:
  ProgressBar(const std::atomic<int64_t>& done, int64_t total, std::string label,
              std::chrono::milliseconds period);
  ~ProgressBar();

  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

 private:
  void Loop();
  void Draw() const;

  const std::atomic<int64_t>& done_;
  const int64_t total_;
  const std::string label_;  // empty: none
  const std::chrono::milliseconds period_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace funnel
