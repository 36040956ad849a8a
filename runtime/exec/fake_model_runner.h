// A deterministic ModelRunner for scheduler and engine tests: no model, no K/V storage.
//
// KV accounting is real: blocks come from a BlockPool with the same reservation rules as
// CpuModelRunner (compressed sizes from StepCompressionBudgets for the step that ends a prompt
// under a compressing policy, earlier chunks' blocks returned then, copy-on-write of shared partial
// blocks, all-or-nothing ResourceExhausted). Logits make the next token a function of (last token,
// its position): the row is 0 everywhere except next_token(token, position), which gets
// `peak_logit`.
//
// Test controls (delays, failures, pausing) and the step records are thread-safe; everything
// else follows ModelRunner's rule (engine thread only).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "runtime/exec/model_runner.h"

namespace funnel {

struct FakeRunnerOptions {
  int32_t num_layers = 4;
  int32_t vocab_size = 64;
  int32_t context_length = 512;
  int32_t block_size = 4;
  int32_t num_blocks = 256;
  float peak_logit = 30.0f;
  // Next token after `token` at `position`; null: DefaultNextToken.
  std::function<int32_t(int32_t token, int64_t position)> next_token;
};

// One sequence of a recorded step.
struct FakeStepSequence {
  const SequenceKv* kv = nullptr;
  int64_t start_position = 0;
  int64_t num_tokens = 0;
  bool compressing = false;  // the step that ended a prompt and compressed it
};

struct FakeStepRecord {
  std::vector<FakeStepSequence> seqs;
  int64_t num_tokens() const;
};

class FakeModelRunner final : public ModelRunner {
 public:
  explicit FakeModelRunner(const FakeRunnerOptions& options);

  // (7 * token + 3 * position + 5) mod (vocab - 3) + 3: never 0, 1 or 2 (unk, bos, eos).
  static int32_t DefaultNextToken(int32_t token, int64_t position, int32_t vocab_size);
  int32_t NextToken(int32_t token, int64_t position) const;

  absl::Status Step(std::span<const StepSequence> batch, std::vector<float>& logits) override;
  SequenceKv NewSequence() const override;
  void Release(SequenceKv& kv) override { kv.Release(pool_); }
  // No K/V is stored: exports are zeros of the right size; imports allocate blocks only.
  int64_t entry_floats() const override { return entry_bytes() / int64_t{sizeof(float)}; }
  absl::Status ExportLayer(const SequenceKv& kv, int32_t layer, std::vector<float>& out) override {
    out.resize(out.size() + static_cast<size_t>(kv.layer_length(layer) * entry_floats()), 0.0f);
    return absl::OkStatus();
  }
  absl::StatusOr<SequenceKv> ImportSequence(std::span<const std::vector<float>> layers,
                                            int64_t num_positions) override;
  BlockPool& pool() override { return pool_; }
  const ModelConfig& config() const override { return config_; }
  int32_t block_size() const override { return options_.block_size; }
  int64_t block_bytes() const override { return int64_t{options_.block_size} * 256; }

  // --- Test controls (any thread) ---
  // Each Step sleeps this long before returning.
  void set_step_delay(absl::Duration delay);
  // The next Step returns `status` without changing anything.
  void FailNextStep(absl::Status status);
  // Every Step whose batch feeds `token` to some sequence returns InvalidArgument (as a real
  // runner does for bad data), without changing anything.
  void set_poison_token(std::optional<int32_t> token);
  // While paused, Step blocks at its start.
  void Pause();
  void Resume();
  // Successful steps so far.
  std::vector<FakeStepRecord> steps() const;
  int64_t num_steps() const;

 private:
  absl::Status Check(std::span<const StepSequence> batch);
  absl::Status Reserve(std::span<const StepSequence> batch, std::vector<bool>& compressing);
  void WriteLogits(std::span<const StepSequence> batch, std::vector<float>& logits) const;

  FakeRunnerOptions options_;
  ModelConfig config_;
  BlockPool pool_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  absl::Duration step_delay_ = absl::ZeroDuration();
  std::optional<absl::Status> fail_next_;
  std::optional<int32_t> poison_token_;
  bool paused_ = false;
  std::vector<FakeStepRecord> steps_;
};

}  // namespace funnel
