#include "runtime/exec/fake_model_runner.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "runtime/exec/prefill_compression.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/util/status_macros.h"

namespace funnel {

int64_t FakeStepRecord::num_tokens() const {
  int64_t n = 0;
  for (const FakeStepSequence& s : seqs) n += s.num_tokens;
  return n;
}

FakeModelRunner::FakeModelRunner(const FakeRunnerOptions& options)
    : options_(options), pool_(options.num_blocks) {
  config_.name = "fake";
  config_.architecture = "llama";
  config_.num_layers = options.num_layers;
  config_.dim = 8;
  config_.ffn_dim = 16;
  config_.num_heads = 2;
  config_.num_kv_heads = 1;
  config_.head_dim = 4;
  config_.rope_dim = 4;
  config_.vocab_size = options.vocab_size;
  config_.context_length = options.context_length;
}

int32_t FakeModelRunner::DefaultNextToken(int32_t token, int64_t position, int32_t vocab_size) {
  const int64_t span = std::max(1, vocab_size - 3);
  return static_cast<int32_t>((7 * int64_t{token} + 3 * position + 5) % span + 3);
}

int32_t FakeModelRunner::NextToken(int32_t token, int64_t position) const {
  if (options_.next_token) return options_.next_token(token, position);
  return DefaultNextToken(token, position, options_.vocab_size);
}

SequenceKv FakeModelRunner::NewSequence() const {
  return SequenceKv(options_.num_layers, options_.block_size);
}

absl::Status FakeModelRunner::Check(std::span<const StepSequence> batch) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !paused_; });
  if (fail_next_.has_value()) {
    absl::Status s = *fail_next_;
    fail_next_.reset();
    return s;
  }
  for (size_t s = 0; s < batch.size(); ++s) {
    const StepSequence& seq = batch[s];
    if (seq.kv == nullptr || seq.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("batch entry %d has no tokens", s));
    }
    if (seq.policy != nullptr) RETURN_IF_ERROR(seq.policy->Validate());
    for (int32_t id : seq.tokens) {
      if (id < 0 || id >= options_.vocab_size ||
          (poison_token_.has_value() && id == *poison_token_)) {
        return absl::InvalidArgumentError(absl::StrFormat("token id %d is not accepted", id));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status FakeModelRunner::Reserve(std::span<const StepSequence> batch,
                                      std::vector<bool>& compressing) {
  const int32_t layers = options_.num_layers;
  std::vector<LayerBudgets> budgets(batch.size());
  compressing.assign(batch.size(), false);
  int64_t needed = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const StepSequence& seq = batch[s];
    ASSIGN_OR_RETURN(budgets[s], StepCompressionBudgets(seq, layers));
    compressing[s] = budgets[s].compress;
    for (int32_t l = 0; l < layers; ++l) {
      const int64_t after = compressing[s]
                                ? budgets[s].stored(l)
                                : seq.kv->layer_length(l) + static_cast<int64_t>(seq.tokens.size());
      needed += seq.kv->BlocksNeeded(l, after) + (seq.kv->NeedsCopyOnWrite(pool_, l) ? 1 : 0);
    }
  }
  if (needed > pool_.num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("KV cache full: step needs %d blocks, %d of %d free", needed,
                        pool_.num_free(), pool_.num_blocks()));
  }
  for (size_t s = 0; s < batch.size(); ++s) {
    SequenceKv& kv = *batch[s].kv;
    for (int32_t l = 0; l < layers; ++l) {
      if (kv.NeedsCopyOnWrite(pool_, l)) {
        kv.ReplaceBlock(pool_, l, static_cast<int64_t>(kv.block_table(l).size()) - 1,
                        *pool_.Allocate());
      }
      const int64_t after = compressing[s]
                                ? budgets[s].stored(l)
                                : kv.layer_length(l) + static_cast<int64_t>(batch[s].tokens.size());
      RETURN_IF_ERROR(kv.Grow(pool_, l, after));
      if (compressing[s]) kv.Truncate(pool_, l, after);  // earlier chunks' full K/V is dropped
    }
  }
  return absl::OkStatus();
}

void FakeModelRunner::WriteLogits(std::span<const StepSequence> batch,
                                  std::vector<float>& logits) const {
  const size_t vocab = static_cast<size_t>(options_.vocab_size);
  size_t rows = 0;
  for (const StepSequence& seq : batch) rows += seq.all_logits ? seq.tokens.size() : 1;
  logits.assign(rows * vocab, 0.0f);
  size_t row = 0;
  for (const StepSequence& seq : batch) {
    // num_positions was already advanced past the new tokens.
    const int64_t start = seq.kv->num_positions() - static_cast<int64_t>(seq.tokens.size());
    const size_t first = seq.all_logits ? 0 : seq.tokens.size() - 1;
    for (size_t i = first; i < seq.tokens.size(); ++i, ++row) {
      const int32_t next = NextToken(seq.tokens[i], start + static_cast<int64_t>(i));
      logits[row * vocab + static_cast<size_t>(next)] = options_.peak_logit;
    }
  }
}

absl::Status FakeModelRunner::Step(std::span<const StepSequence> batch,
                                   std::vector<float>& logits) {
  logits.clear();
  if (batch.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(Check(batch));
  std::vector<bool> compressing;
  RETURN_IF_ERROR(Reserve(batch, compressing));
  FakeStepRecord record;
  for (size_t s = 0; s < batch.size(); ++s) {
    const StepSequence& seq = batch[s];
    const int64_t n = static_cast<int64_t>(seq.tokens.size());
    record.seqs.push_back({seq.kv, seq.kv->num_positions(), n, static_cast<bool>(compressing[s])});
    seq.kv->set_num_positions(seq.kv->num_positions() + n);
  }
  WriteLogits(batch, logits);
  absl::Duration delay;
  {
    std::lock_guard<std::mutex> lock(mu_);
    steps_.push_back(std::move(record));
    delay = step_delay_;
  }
  if (delay > absl::ZeroDuration()) absl::SleepFor(delay);
  return absl::OkStatus();
}

void FakeModelRunner::set_step_delay(absl::Duration delay) {
  std::lock_guard<std::mutex> lock(mu_);
  step_delay_ = delay;
}

void FakeModelRunner::FailNextStep(absl::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_next_ = std::move(status);
}

void FakeModelRunner::set_poison_token(std::optional<int32_t> token) {
  std::lock_guard<std::mutex> lock(mu_);
  poison_token_ = token;
}

void FakeModelRunner::Pause() {
  std::lock_guard<std::mutex> lock(mu_);
  paused_ = true;
}

void FakeModelRunner::Resume() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = false;
  }
  cv_.notify_all();
}

std::vector<FakeStepRecord> FakeModelRunner::steps() const {
  std::lock_guard<std::mutex> lock(mu_);
  return steps_;
}

int64_t FakeModelRunner::num_steps() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(steps_.size());
}

absl::StatusOr<SequenceKv> FakeModelRunner::ImportSequence(
    std::span<const std::vector<float>> layers, int64_t num_positions) {
  ASSIGN_OR_RETURN(const std::vector<int64_t> lengths, ImportedLengths(layers, num_positions));
  return SequenceKv::Allocate(pool_, options_.block_size, lengths, num_positions);
}

}  // namespace funnel
