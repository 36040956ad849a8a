#include "runtime/exec/generate.h"

#include <chrono>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_format.h"
#include "runtime/sample/sampler.h"
#include "runtime/sample/stop_matcher.h"
#include "runtime/text/incremental_detokenizer.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

KvStats DescribeKv(const ModelRunner& runner, const SequenceKv& kv, const KvPolicy& policy) {
  const ModelConfig& c = runner.config();
  const int64_t n = kv.num_positions();
  const LayerBudgets b = ComputeLayerBudgets(policy, c.num_layers, n);
  KvStats s;
  s.method = KvMethodName(policy.method);
  s.budget = b.budget;
  s.window = b.compress ? b.window : (policy.compresses() ? policy.window : 0);
  for (int32_t l = 0; l < c.num_layers; ++l) s.per_layer_tokens.push_back(kv.layer_length(l));
  s.kv_bytes = kv.num_blocks() * runner.block_bytes();
  s.full_kv_bytes = n * c.num_layers * runner.entry_bytes();
  return s;
}

}  // namespace

absl::StatusOr<GenerationResult> Generate(ModelRunner& runner, const Tokenizer& tokenizer,
                                          std::span<const int32_t> prompt,
                                          const SamplingParams& params, uint64_t default_seed,
                                          const KvPolicy& policy,
                                          const LogitsObserver& observe_logits,
                                          const std::function<void(std::string_view)>& on_text) {
  RETURN_IF_ERROR(params.Validate());
  if (prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  const ModelConfig& c = runner.config();
  if (static_cast<int64_t>(prompt.size()) > c.context_length) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prompt has %d tokens, more than the model's context of %d", prompt.size(),
                        c.context_length));
  }
  SequenceKv kv = runner.NewSequence();
  absl::Cleanup release = [&] { runner.Release(kv); };
  Sampler sampler(params, default_seed);
  IncrementalDetokenizer detok(tokenizer, /*strip_leading_space=*/false);
  StopStringMatcher stops(params.stop);
  GenerationResult result;
  auto emit = [&](const std::string& s) {
    result.text += s;
    if (on_text && !s.empty()) on_text(s);
  };

  std::vector<float> logits;
  const bool all = observe_logits != nullptr;
  auto t0 = std::chrono::steady_clock::now();
  StepSequence step{&kv, prompt, all, &policy};
  RETURN_IF_ERROR(runner.Step({&step, 1}, logits));
  result.timings.prefill_ms = MsSince(t0);
  result.kv = DescribeKv(runner, kv, policy);
  result.timings.prefill_tokens = static_cast<int64_t>(prompt.size());
  const size_t vocab = static_cast<size_t>(c.vocab_size);
  if (all) {
    for (size_t i = 0; i < prompt.size(); ++i) {
      observe_logits(static_cast<int64_t>(i),
                     std::span<const float>(logits).subspan(i * vocab, vocab));
    }
    logits.erase(logits.begin(), logits.end() - static_cast<std::ptrdiff_t>(vocab));
  }

  result.finish_reason = "length";
  auto t1 = std::chrono::steady_clock::now();
  bool stopped_by_string = false;
  while (static_cast<int32_t>(result.output_ids.size()) < params.max_tokens) {
    const int32_t token = sampler.Sample(logits, prompt, result.output_ids);
    result.output_ids.push_back(token);
    if (!params.ignore_eos && tokenizer.IsEndOfGeneration(token)) {
      result.finish_reason = "stop";
      break;
    }
    StopStringMatcher::Result r = stops.Push(detok.Push(token));
    emit(r.emit);
    if (r.stopped) {
      result.finish_reason = "stop";
      stopped_by_string = true;
      break;
    }
    if (static_cast<int32_t>(result.output_ids.size()) == params.max_tokens) break;
    if (kv.num_positions() >= c.context_length) break;  // "length": the context is full
    StepSequence next{&kv, std::span<const int32_t>(&result.output_ids.back(), 1), false};
    RETURN_IF_ERROR(runner.Step({&next, 1}, logits));
    ++result.timings.decode_steps;
    if (all) observe_logits(kv.num_positions() - 1, logits);
  }
  if (!stopped_by_string) {
    StopStringMatcher::Result r = stops.Push(detok.Flush());
    emit(r.emit);
    if (r.stopped) {
      result.finish_reason = "stop";
    } else {
      emit(stops.Flush());
    }
  }
  result.timings.decode_ms = MsSince(t1);
  return result;
}

}  // namespace funnel
