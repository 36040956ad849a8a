// Token choice on the GPU from logits rows (fp32): greedy argmax, and a temperature / top-k /
// top-p sampler driven by one caller-drawn uniform number per row, so that the CPU twin
// (kernels/cpu/sampling.h, SampleRowsReference) reproduces the exact choice. Not wired into
// the engine (its Sampler also applies penalties and min-p).
#pragma once

#include <cstdint>

namespace funnel::cuda {

// tokens[r] = argmax of logits row r; ties go to the lowest id (as the CPU Sampler). A row of
// all -inf gives 0.
int LaunchArgmax(const float* logits,  // [rows, vocab]
                 int32_t rows, int32_t vocab,
                 int32_t* tokens,  // [rows]
                 void* stream);

inline constexpr int32_t kMaxSampleTopK = 1024;

// Per row r: temperature[r] == 0 -> argmax. Otherwise the top_k[r] most likely ids (ranked by
// logit, ties to the lower id; 1 <= top_k <= kMaxSampleTopK, clamped to vocab) are sorted in
// that rank order with weights w = exp(logit / t - max_logit / t) (fp32); the smallest rank
// prefix whose weight sum (double) reaches top_p[r] * total is kept (top_p in (0, 1]); the
// token is the first in rank order whose running sum (double) exceeds uniform[r] * kept mass
// (uniform in [0, 1)). Returns cudaErrorInvalidValue (as int) for vocab < 1 or null pointers;
// per-row values outside their ranges are clamped.
struct SampleParams {
  const float* logits = nullptr;       // [rows, vocab]
  int32_t rows = 0;                    // <= 2^31 - 1
  int32_t vocab = 0;                   // >= 1
  const float* temperature = nullptr;  // [rows], >= 0
  const int32_t* top_k = nullptr;      // [rows]
  const float* top_p = nullptr;        // [rows]
  const float* uniform = nullptr;      // [rows], in [0, 1)
  int32_t* tokens = nullptr;           // [rows]
};

int LaunchSample(const SampleParams& params, void* stream);

}  // namespace funnel::cuda
