// The CUDA backend (fp32 arithmetic; weights and KV cache stored as fp32, bf16 or fp16, see
// DeviceDtype): CpuModelRunner's batched Llama
// forward pass on one GPU (device 0), with the same semantics, the same KV block layout
// (PagedKvGeometry) and the same compression at the end of prefill (same kept entries, shared host
// code in step_kv_plan.h / kv_selection.h).
//
// Owns: every weight in device memory, matrices as RunnerOptions::device_weights (uploaded once,
// converted on the host; or random, made on the device, for benchmarks), the KV pool as
// RunnerOptions::kv_dtype (one cudaMalloc), one CUDA stream, one cuBLAS handle bound to it, and
// grow-only device scratch sized by the largest step seen. No header here names a CUDA type.
//
// Not supported (Unimplemented, nothing changed): h2o compression of prompts over 16384 tokens
// (its scoring kernel is O(n^2)). Every CUDA or cuBLAS failure is Internal and sticky: the runner
// refuses every later call.
//
// Thread rules: one thread (the engine thread) calls everything; Step blocks until the logits are
// on the host.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cuda/dtype.h"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/exec/model_runner.h"
#include "runtime/exec/step_kv_plan.h"
#include "runtime/kv/block_pool.h"
#include "runtime/kv/sequence_kv.h"
#include "runtime/model/model_weights.h"

namespace funnel {
namespace cuda {
class Blas;
}  // namespace cuda

class CudaModelRunner final : public ModelRunner {
 public:
  // Uses options.block_size and options.kv_cache_bytes (num_threads is the CPU's). Unimplemented
  // for shapes the kernels lack (more than 8 query heads per KV head, head_dim above 256);
  // FailedPrecondition without a usable device; Internal when an upload or allocation fails.
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> Create(const ModelWeights& weights,
                                                                 const RunnerOptions& options);
  // A runner over random weights made on the device, no file (benchmarks): the F32 weights that
  // WriteRandomModel (runtime/model/random_model.h) writes for this shape and seed, norms 1, no
  // biases. `config` is validated here (InvalidArgument; also for attention_bias). Otherwise the
  // errors of Create.
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> CreateRandom(
      const ModelConfig& config, uint64_t seed, const RunnerOptions& options);
  ~CudaModelRunner() override;
  CudaModelRunner(const CudaModelRunner&) = delete;
  CudaModelRunner& operator=(const CudaModelRunner&) = delete;

  // As ModelRunner::Step.
  absl::Status Step(std::span<const StepSequence> batch, std::vector<float>& logits) override;
  SequenceKv NewSequence() const override;
  void Release(SequenceKv& kv) override { kv.Release(pool_); }

  // Same entry layout as the CPU backend: [2][kv_heads][head_dim] (a 16-bit cache is widened on
  // export and rounded on import).
  int64_t entry_floats() const override { return 2 * geometry_.num_kv_heads * geometry_.head_dim; }
  absl::Status ExportLayer(const SequenceKv& kv, int32_t layer, std::vector<float>& out) override;
  absl::StatusOr<SequenceKv> ImportSequence(std::span<const std::vector<float>> layers,
                                            int64_t num_positions) override;

  BlockPool& pool() override { return pool_; }
  const ModelConfig& config() const override { return config_; }
  int32_t block_size() const override { return options_.block_size; }
  int64_t block_bytes() const override {
    return geometry_.BlockFloats() * cuda::DtypeBytes(kv_dtype_);
  }
  const PagedKvGeometry& geometry() const { return geometry_; }

 private:
  // A device allocation (cudaMalloc) that only grows; freed on destruction.
  class Buffer {
   public:
    Buffer() = default;
    ~Buffer();
    Buffer(Buffer&& other) noexcept;
    Buffer& operator=(Buffer&&) = delete;
    Buffer(const Buffer&) = delete;
    // At least `bytes` (contents are lost when it grows).
    absl::Status Reserve(size_t bytes, const char* what);
    template <typename T>
    T* as() const {
      return static_cast<T*>(ptr_);
    }

   private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
  };

  // Device pointers of one layer's weights: matrices [rows, cols] as in LayerWeights, stored as
  // weights_dtype_; norms and biases fp32, biases null when the model has none.
  struct LayerPointers {
    const float *attn_norm, *bq, *bk, *bv, *ffn_norm;
    const void *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
  };

  // How a sequence's rows attend: decodes of the pool share one launch; other prefills of the
  // pool and compressing prefills (over their workspace) get one launch each.
  enum class RowGroup { kDecode, kPrefill, kCompress };

  // weights: null for random weights (made from the seed Init gets).
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> CreateFor(const ModelConfig& config,
                                                                    const ModelWeights* weights,
                                                                    uint64_t seed,
                                                                    const RunnerOptions& options);
  CudaModelRunner(const ModelConfig& config, const ModelWeights* weights,
                  const RunnerOptions& options, int32_t num_blocks);

  absl::Status Init(uint64_t seed);
  absl::Status UploadWeights();
  absl::Status MakeRandomWeights(uint64_t seed);
  absl::StatusOr<const void*> RandomMatrix(int64_t rows, int64_t cols, float bound, uint64_t seed,
                                           Buffer& fp32);
  absl::StatusOr<const void*> UploadBytes(const void* data, size_t bytes);
  absl::StatusOr<const void*> UploadMatrix(const WeightMatrix& m);
  absl::StatusOr<const float*> UploadVector(const std::vector<float>& v);
  absl::Status CopyBlock(BlockId from, BlockId to);
  // The first `blocks` blocks of `table`, widened to fp32 (host: [blocks][BlockFloats]); and
  // back, rounded to the pool's format.
  absl::Status BlocksToHost(std::span<const BlockId> table, int64_t blocks,
                            std::vector<float>& host);
  absl::Status BlocksToDevice(std::span<const BlockId> table, int64_t blocks,
                              const std::vector<float>& host);

  absl::Status CheckSupported(std::span<const StepSequence> batch, const StepKvPlan& plan) const;
  absl::Status RunStep(std::span<const StepSequence> batch, std::vector<float>& logits);
  void LayoutRows(std::span<const StepSequence> batch);
  void BuildStepInputs(std::span<const StepSequence> batch);
  void AppendTables(std::span<const StepSequence> batch, int32_t layer);
  absl::Status ReserveScratch(std::span<const StepSequence> batch);
  absl::Status RunLayer(int32_t layer, std::span<const StepSequence> batch);
  absl::StatusOr<const void*> ProductInput(const float* in, int64_t count);
  absl::Status Project(const void* w, const float* bias, int64_t out_dim, int64_t in_dim,
                       const void* in, float* out);
  absl::Status MatMul(const void* w, const void* in, int64_t rows, int64_t cols, int64_t tokens,
                      float* out, bool accumulate);
  absl::Status WriteKv(int32_t layer, std::span<const StepSequence> batch);
  absl::Status ReadBackPrefix(size_t s, int32_t layer, std::span<const StepSequence> batch);
  absl::Status Attention(int32_t layer, std::span<const StepSequence> batch);
  absl::Status AttendRows(int64_t first_row, int64_t rows, const int32_t* tables,
                          int32_t table_stride, int64_t max_kv_len, int32_t layer);
  absl::Status AttendPrefill(size_t s, int32_t layer, std::span<const StepSequence> batch);
  absl::Status CompressLayer(int32_t layer, std::span<const StepSequence> batch);
  absl::Status SelectKept(size_t s, int32_t layer, std::span<const StepSequence> batch);
  absl::Status ComputeLogits(std::vector<float>& logits);

  int32_t SplitCount(int64_t rows, int64_t max_kv_len) const;
  static int64_t NewRows(size_t s, std::span<const StepSequence> batch) {
    return static_cast<int64_t>(batch[s].tokens.size());
  }
  float* compress_ws(size_t s) { return compress_ws_.as<float>() + ws_offsets_[s]; }
  const int32_t* device_i32(int64_t offset) const { return step_i32_.as<int32_t>() + offset; }
  // Remembers the first failure (sticky) and returns it.
  absl::Status Fault(absl::Status status);

  const ModelConfig config_;
  const ModelWeights* weights_;  // null: random weights
  RunnerOptions options_;
  PagedKvGeometry geometry_;
  BlockPool pool_;
  const cuda::Dtype weights_dtype_;  // RunnerOptions::device_weights
  const cuda::Dtype kv_dtype_;       // RunnerOptions::kv_dtype
  absl::Status fault_;      // the first CUDA failure; every later call returns it
  void* stream_ = nullptr;  // cudaStream_t
  std::unique_ptr<cuda::Blas> blas_;
  int32_t num_sms_ = 1;

  // Weights and the KV pool (device).
  std::vector<Buffer> weight_buffers_;
  std::vector<LayerPointers> layers_;
  const void* embedding_ = nullptr;     // [vocab, dim], weights_dtype_
  const void* output_ = nullptr;        // [vocab, dim], weights_dtype_
  const float* output_norm_ = nullptr;  // [dim]
  const float* inv_freq_ = nullptr;     // [rope_dim / 2]
  Buffer kv_pool_;                      // [num_blocks][BlockFloats], kv_dtype_

  // Step state. Rows are the step's new tokens ordered by group (decodes, prefills,
  // compressing prefills), batch order within a group.
  StepKvPlan plan_;
  std::vector<RowGroup> groups_;    // [seq]
  std::vector<size_t> order_;       // batch indices in row order
  std::vector<int64_t> row_begin_;  // [seq]: first row of batch[s]
  int64_t num_rows_ = 0;
  int64_t num_decode_rows_ = 0;  // rows [0, num_decode_rows_) are decodes
  int64_t num_pool_rows_ = 0;    // rows [0, num_pool_rows_) write to the pool
  int64_t num_logit_rows_ = 0;
  std::vector<int64_t> ws_offsets_;  // [seq]: floats into compress_ws_ (compressing only)
  // One host array of every int32 step input, uploaded once per step into step_i32_, and the
  // offsets (elements) of its parts: token ids [rows], positions [rows], logit rows, a zero
  // (the one-block table of a workspace), kv_lens [layers][rows], and per layer the decode
  // table [decode seqs][decode_stride_[l]], and each other sequence's block table followed by
  // its prefill record {0, new rows, kv_len} (q_indptr [2] then kv_lens [1] of the prefill
  // kernel).
  std::vector<int32_t> host_i32_;
  int64_t ids_at_ = 0, positions_at_ = 0, logit_rows_at_ = 0, zero_at_ = 0, kv_lens_at_ = 0;
  std::vector<int64_t> decode_table_at_;  // [layer]
  std::vector<int32_t> decode_stride_;    // [layer]
  std::vector<int64_t> seq_table_at_;     // [layer * seqs + s]
  std::vector<int64_t> seq_prefill_at_;   // [layer * seqs + s]
  std::vector<int64_t> host_slots_;       // [layers][rows]: pool (or workspace) slot of each row
  std::vector<int32_t> host_kept_;        // [kv_heads][kept] for host-chosen entries
  Buffer step_i32_, step_slots_;
  Buffer x_, xn_, q_, k_, v_, attn_, gate_, up_, ones_, logits_, attn_ws_;
  Buffer x16_;          // 16-bit weights: a product's input in their format
  Buffer compress_ws_;  // per compressing sequence: its "block" of n entries, K then V
  Buffer scores_, pooled_, kept_;
  Buffer import_staging_;  // 16-bit pools: ImportSequence's fp32 blocks and their rounding
  int64_t ones_rows_ = 0;  // rows of ones_ holding 1.0f
};

}  // namespace funnel
