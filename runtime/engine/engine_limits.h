// Immutable facts about the model and the KV pool that request validation needs, captured once
// when the engine is created so that RPC threads never ask the runner.
#pragma once

#include <cstdint>

namespace funnel {

struct EngineLimits {
  int32_t num_layers = 0;
  int32_t vocab_size = 0;
  int64_t context_length = 0;
  int64_t max_prompt_tokens = 0;  // effective: EngineConfig's, or the context when 0
  int32_t block_size = 0;
  int64_t num_blocks = 0;
  int64_t block_bytes = 0;
};

}  // namespace funnel
