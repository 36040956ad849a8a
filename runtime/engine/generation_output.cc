#include "runtime/engine/generation_output.h"

#include <utility>

#include "runtime/engine/logprobs.h"

namespace funnel {

GenerationOutput::GenerationOutput(const GenerateRequest& request, const Tokenizer& tokenizer,
                                   uint64_t default_seed)
    : request_(request),
      tokenizer_(tokenizer),
      sampler_(request.sampling, default_seed),
      detok_(tokenizer, /*strip_leading_space=*/false),
      stops_(request.sampling.stop) {}

bool GenerationOutput::Accept(std::span<const float> logits, std::span<const int32_t> penalty_prompt,
                              int64_t num_positions, int64_t context_length, OutputStream& stream) {
  const SamplingParams& params = request_.sampling;
  const int32_t token = sampler_.Sample(logits, penalty_prompt, generated_);
  TokenEvent event;
  event.token = token;
  if (request_.top_logprobs >= 0) {
    TokenLogprobs lp = ComputeLogprobs(logits, params, penalty_prompt, generated_, token,
                                       request_.top_logprobs, logprob_scratch_);
    event.logprob = lp.chosen;
    event.top_logprobs = std::move(lp.top);
  }
  generated_.push_back(token);
  if (!params.ignore_eos && tokenizer_.IsEndOfGeneration(token)) {
    finish_reason_ = "stop";
    stopped_ = true;
  } else {
    StopStringMatcher::Result r = stops_.Push(detok_.Push(token));
    event.text = std::move(r.emit);
    if (r.stopped) {
      finish_reason_ = "stop";
      stopped_by_string_ = true;
      stopped_ = true;
    }
  }
  stream.Push(std::move(event));
  return stopped_ || Ended(num_positions, context_length);
}

bool GenerationOutput::Ended(int64_t num_positions, int64_t context_length) const {
  if (static_cast<int64_t>(generated_.size()) >= request_.sampling.max_tokens) return true;
  return num_positions >= context_length;  // "length": the context is full
}

std::string GenerationOutput::Close() {
  if (stopped_by_string_) return "";
  StopStringMatcher::Result r = stops_.Push(detok_.Flush());
  if (r.stopped) {
    finish_reason_ = "stop";
    return std::move(r.emit);
  }
  return r.emit + stops_.Flush();
}

}  // namespace funnel
