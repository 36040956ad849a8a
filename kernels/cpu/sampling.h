// CPU twin of the GPU token choice (kernels/cuda/sampling.h): same contract, same rank order
// and arithmetic, so that both pick the same token unless uniform * mass falls within rounding
// of a cumulative boundary (the margin reported below).
#pragma once

#include <cstdint>
#include <span>

namespace funnel {

// The lowest id of the maximum logit of row `logits` ([vocab]); 0 for an empty or all -inf row.
int32_t ArgmaxReference(std::span<const float> logits);

struct SampleChoice {
  int32_t token = 0;
  // How far (relative) the choice was from flipping: the top-p cut's distance to its target
  // over the total, and the draw's distance to the nearest cumulative boundary over the kept
  // mass, whichever is smaller (1 for argmax rows).
  double margin = 1.0;
};

// One row of cuda::LaunchSample.
SampleChoice SampleRowReference(std::span<const float> logits, float temperature, int32_t top_k,
                                float top_p, float uniform);

}  // namespace funnel
