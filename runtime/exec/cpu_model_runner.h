// The CPU backend: a batched Llama forward pass over a paged, per-layer KV cache.
//
// Thread rules: one thread (the engine thread) calls Step; kernels fan out on the runner's own
// ThreadPool. OpenBLAS is used single-threaded inside those tasks.
#pragma once

#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/thread_pool.h"
#include "runtime/exec/kv_selection.h"
#include "runtime/exec/model_runner.h"
#include "runtime/exec/step_kv_plan.h"
#include "runtime/kv/block_pool.h"
#include "runtime/kv/kv_policy.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/kv/sequence_kv.h"
#include "runtime/model/model_weights.h"

namespace funnel {

// How the CUDA backend stores an array on the device: its weight matrices, and its KV cache.
// 16-bit weights (bf16 or fp16) halve their memory and the bandwidth a decode step needs; each
// product then rounds its input activations to the same format and accumulates in fp32. A 16-bit
// KV cache holds twice the entries in the same bytes: K and V are rounded once, when written, and
// every later read (attention, compression scores) sees the rounded values; arithmetic stays
// fp32. The CPU backend reads the file's own weight types, keeps fp32 KV, and takes only kF32.
enum class DeviceDtype { kF32, kBf16, kF16 };
const char* DeviceDtypeName(DeviceDtype t);
// "f32", "bf16" or "f16"; InvalidArgument otherwise.
absl::StatusOr<DeviceDtype> ParseDeviceDtype(std::string_view name);

struct RunnerOptions {
  int32_t num_threads = 2;
  int32_t block_size = 16;                    // KV entries per block
  int64_t kv_cache_bytes = int64_t{1} << 30;  // pool size; rounded down to whole blocks
  DeviceDtype device_weights = DeviceDtype::kF32;  // CUDA: weight matrices
  DeviceDtype kv_dtype = DeviceDtype::kF32;        // CUDA: the KV pool

  absl::Status Validate() const;
};

class CpuModelRunner final : public ModelRunner {
 public:
  static absl::StatusOr<std::unique_ptr<CpuModelRunner>> Create(const ModelWeights& weights,
                                                                const RunnerOptions& options);

  // Runs the new tokens of all sequences through the model as one batch (prefill and decode
  // mix freely). Appends their K/V to each sequence's cache and advances num_positions.
  // `logits` receives, in batch order, one vocab-sized row per requested position.
  // All-or-nothing on KV space: ResourceExhausted (nothing changed) when the pool is too small;
  // InvalidArgument for empty token lists or ids outside the vocabulary.
  absl::Status Step(std::span<const StepSequence> batch, std::vector<float>& logits) override;

  // An empty cache for a new sequence (its blocks come from pool()).
  SequenceKv NewSequence() const override;
  // Returns a sequence's blocks to the pool.
  void Release(SequenceKv& kv) override { kv.Release(pool_); }

  // Milliseconds the last Step spent choosing and writing the kept entries (all layers).
  double last_step_compress_ms() const { return compress_ms_; }

  int64_t entry_floats() const override { return 2 * geometry_.num_kv_heads * geometry_.head_dim; }
  absl::Status ExportLayer(const SequenceKv& kv, int32_t layer, std::vector<float>& out) override;
  absl::StatusOr<SequenceKv> ImportSequence(std::span<const std::vector<float>> layers,
                                            int64_t num_positions) override;

  BlockPool& pool() override { return pool_; }
  const ModelConfig& config() const override { return weights_.config(); }
  int32_t block_size() const override { return options_.block_size; }
  int64_t block_bytes() const override { return geometry_.BlockFloats() * int64_t{sizeof(float)}; }
  const PagedKvGeometry& geometry() const { return geometry_; }
  float* block_data(BlockId b) { return kv_storage_.get() + int64_t{b} * geometry_.BlockFloats(); }

 private:
  CpuModelRunner(const ModelWeights& weights, const RunnerOptions& options, int32_t num_blocks);

  absl::Status ReserveKv(std::span<const StepSequence> batch);
  void RunLayer(int32_t layer, std::span<const StepSequence> batch);
  void WriteKv(int32_t layer, std::span<const StepSequence> batch);
  void Attention(int32_t layer, std::span<const StepSequence> batch);
  void CompressLayer(int32_t layer, std::span<const StepSequence> batch);
  void ComputeLogits(std::span<const StepSequence> batch, std::vector<float>& logits);
  bool Compressing(size_t s) const { return plan_.compressing(s); }
  void ParallelRows(int64_t rows, const std::function<void(int64_t, int64_t)>& fn);

  const ModelWeights& weights_;
  RunnerOptions options_;
  PagedKvGeometry geometry_;
  BlockPool pool_;
  std::unique_ptr<float[]> kv_storage_;
  ThreadPool threads_;
  MatMulWorkspace matmul_workspace_;
  std::vector<AttentionScratch> attention_scratch_;  // one per thread

  // Step state, reused across steps. Rows are the batch's new tokens in order.
  int64_t num_rows_ = 0;
  std::vector<int32_t> positions_;    // [rows]
  std::vector<int64_t> row_offsets_;  // first row of each sequence, + total
  StepKvPlan plan_;                   // budgets and entries stored before this step
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_;
  // Compressing prefills: the transient full K/V of the current layer (earlier chunks' entries
  // read back from the pool, then this step's), [kv_heads][n][head_dim] per sequence starting at
  // ws_offsets_[s] floats, n = whole prompt.
  std::vector<int64_t> ws_offsets_;
  std::vector<float> ws_keys_, ws_values_;
  std::vector<SelectionScratch> select_scratch_;  // one per thread
  double compress_ms_ = 0.0;
};

}  // namespace funnel
