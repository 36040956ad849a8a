// The backend interface the engine drives: one batched forward step over paged KV caches.
// Implemented by CpuModelRunner and CudaModelRunner; tests use a fake.
//
// Thread rules: every method is called from the engine thread only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/kv/block_pool.h"
#include "runtime/kv/kv_policy.h"
#include "runtime/kv/sequence_kv.h"
#include "runtime/model/model_config.h"

namespace funnel {

// One sequence's part of a batched step.
struct StepSequence {
  SequenceKv* kv = nullptr;         // grows by tokens.size() entries in every layer
  std::span<const int32_t> tokens;  // new tokens, at positions kv->num_positions() onward
  bool all_logits = false;          // logits for every new token (else only the last)
  // Set on the step that ends a prompt to compress it (prefill_compression.h): the cache then
  // holds the prompt's earlier tokens uncompressed (steps without a policy wrote them) and this
  // step feeds the rest. Attention of the prefill itself always sees the full K/V; afterwards
  // each layer keeps only its budget of entries and returns the other blocks to the pool. Null
  // or `full` keeps everything.
  const KvPolicy* policy = nullptr;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // Runs the new tokens of all sequences as one batch (prefill and decode mix freely), appends
  // their K/V and advances num_positions. `logits` receives one vocab row per requested position,
  // in batch order. All-or-nothing on KV space: ResourceExhausted (nothing changed) when the pool
  // is too small; InvalidArgument for empty token lists or ids outside the vocabulary;
  // Unimplemented (nothing changed) for a step this backend cannot run yet; Internal for a
  // backend fault (the runner is then unusable).
  virtual absl::Status Step(std::span<const StepSequence> batch, std::vector<float>& logits) = 0;

  // An empty cache for a new sequence (its blocks come from pool()).
  virtual SequenceKv NewSequence() const = 0;
  // Returns a sequence's blocks to the pool.
  virtual void Release(SequenceKv& kv) = 0;

  // Persistence of a cache (durable sessions). One entry of one layer is entry_floats() floats:
  // the K rows, then the V rows, of every KV head ([2][kv_heads][head_dim] on every backend).
  virtual int64_t entry_floats() const = 0;
  // Appends the entries of `layer` of `kv`, in cache order, to `out`. Internal on a backend
  // fault (device copy failed; `out` is then incomplete and must not be used).
  virtual absl::Status ExportLayer(const SequenceKv& kv, int32_t layer,
                                   std::vector<float>& out) = 0;
  // A new sequence at `num_positions` whose layer l holds layers[l] ([entries][entry_floats]).
  // ResourceExhausted (nothing allocated) when the pool lacks the blocks; InvalidArgument when
  // the shapes do not fit this model.
  virtual absl::StatusOr<SequenceKv> ImportSequence(std::span<const std::vector<float>> layers,
                                                    int64_t num_positions) = 0;

  virtual BlockPool& pool() = 0;
  virtual const ModelConfig& config() const = 0;
  virtual int32_t block_size() const = 0;
  // Bytes of one pool block, and of one KV entry of one layer (K and V for all KV heads).
  virtual int64_t block_bytes() const = 0;
  int64_t entry_bytes() const { return block_bytes() / block_size(); }

 protected:
  // The per-layer entry counts of an ImportSequence argument, checked against this model.
  absl::StatusOr<std::vector<int64_t>> ImportedLengths(std::span<const std::vector<float>> layers,
                                                       int64_t num_positions) const {
    if (static_cast<int64_t>(layers.size()) != config().num_layers) {
      return absl::InvalidArgumentError("imported cache has the wrong number of layers");
    }
    std::vector<int64_t> lengths;
    for (const std::vector<float>& layer : layers) {
      const int64_t n = static_cast<int64_t>(layer.size()) / entry_floats();
      if (n * entry_floats() != static_cast<int64_t>(layer.size()) || n > num_positions ||
          num_positions > config().context_length) {
        return absl::InvalidArgumentError("imported cache layer does not fit this model");
      }
      lengths.push_back(n);
    }
    return lengths;
  }
};

}  // namespace funnel
