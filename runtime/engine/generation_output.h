// The output side of one generating request: sampling, logprobs, incremental detokenization,
// stop strings and TokenEvents, with the stop semantics of Generate() (generate.cc):
//  - "stop" on an end-of-generation token (unless ignore_eos; the token is counted and streamed
//    with empty text) or when a stop string completes (the stop string itself is not emitted);
//  - "length" after max_tokens tokens or when the sequence fills the model context.
//
// Thread rules: engine thread only.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/engine/output_stream.h"
#include "runtime/engine/request.h"
#include "runtime/sample/sampler.h"
#include "runtime/sample/stop_matcher.h"
#include "runtime/text/incremental_detokenizer.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

class GenerationOutput {
 public:
  // `request` and `tokenizer` must outlive this object. `default_seed` seeds the sampler when
  // the request has no seed.
  GenerationOutput(const GenerateRequest& request, const Tokenizer& tokenizer, uint64_t default_seed);

  // Samples the next token from one vocab row of logits and pushes its TokenEvent to `stream`.
  // `penalty_prompt`: the ids before generation (for the repetition penalty; may be empty when
  // no penalty uses it). `num_positions`: the sequence's logical length after the step that
  // produced `logits`. Returns true when generation has ended (see finish_reason()).
  bool Accept(std::span<const float> logits, std::span<const int32_t> penalty_prompt,
              int64_t num_positions, int64_t context_length, OutputStream& stream);

  // Ends the text: flushes held-back bytes (a stop string may still complete there) and returns
  // the text to put in the FinalEvent. Call once, after generation ended.
  std::string Close();

  const std::vector<int32_t>& generated() const { return generated_; }
  const std::string& finish_reason() const { return finish_reason_; }

 private:
  bool Ended(int64_t num_positions, int64_t context_length) const;

  const GenerateRequest& request_;
  const Tokenizer& tokenizer_;
  Sampler sampler_;
  IncrementalDetokenizer detok_;
  StopStringMatcher stops_;
  std::vector<int32_t> generated_;
  std::vector<float> logprob_scratch_;
  std::string finish_reason_ = "length";
  bool stopped_by_string_ = false;
  bool stopped_ = false;
};

}  // namespace funnel
