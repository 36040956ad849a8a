// Helpers shared by the model-file fuzz targets: reading every byte a loader hands out (so ASan
// sees any that lie outside the input) and checking loaded weights.
#pragma once

#include <cstdint>

#include "kernels/cpu/convert.h"
#include "runtime/model/model_weights.h"
#include "tests/fuzz/fuzz_check.h"

namespace funnel::fuzz {

// A checksum of `n` bytes at `data`; reads each one.
inline uint64_t Touch(const void* data, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) sum = sum * 31 + p[i];
  return sum;
}

// Loaded weights are valid and every matrix byte the config implies is readable.
inline uint64_t TouchWeights(const ModelWeights& w) {
  FUZZ_CHECK(w.config().Validate().ok(), "loaded an invalid config");
  uint64_t sum = 0;
  auto touch = [&sum](const WeightMatrix& m) {
    sum += Touch(m.data, m.rows * RowBytes(m.type, m.cols));
  };
  touch(w.token_embedding());
  touch(w.output());
  FUZZ_CHECK(w.output_norm().size() == static_cast<size_t>(w.config().dim), "output_norm size");
  FUZZ_CHECK(w.rope_inv_freq().size() == static_cast<size_t>(w.config().rope_dim / 2),
             "rope_inv_freq size");
  for (int32_t l = 0; l < w.config().num_layers; ++l) {
    const LayerWeights& lw = w.layer(l);
    for (const WeightMatrix* m :
         {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down}) {
      touch(*m);
    }
    FUZZ_CHECK(lw.attn_norm.size() == static_cast<size_t>(w.config().dim), "attn_norm size");
  }
  return sum;
}

}  // namespace funnel::fuzz
