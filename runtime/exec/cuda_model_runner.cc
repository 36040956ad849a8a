#include "runtime/exec/cuda_model_runner.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cpu/convert.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kv_compress.h"
#include "kernels/cuda/paged_attention.h"
#include "kernels/cuda/prefill_attention.h"
#include "runtime/exec/kv_selection.h"
#include "runtime/model/random_model.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

// Decode-attention limits of kernels/cuda/paged_attention.cu (the prefill kernel's are wider).
constexpr int32_t kMaxGroup = 8;
constexpr int32_t kMaxHeadDim = 256;
static_assert(cuda::kMaxPrefillGroup >= kMaxGroup);
// Entries per attention split at least, and the most splits per (row, KV head).
constexpr int64_t kMinSplitEntries = 128;
// H2O scores every prompt query against every key with a simple O(n^2) kernel (about 0.3 s per
// layer of Llama-3-8B at 8K tokens, estimated): longer prompts are refused rather than stalling
// the engine thread for minutes.
constexpr int64_t kMaxH2oPromptTokens = 16384;
constexpr int64_t kMaxSplits = 64;
// Blocks per round of a 16-bit import (ImportSequence): the staging buffer holds this many fp32
// blocks and their rounding (16.5 MiB for Llama-3-8B's 256 KiB fp32 blocks).
constexpr int64_t kImportChunkBlocks = 64;

absl::Status CudaStatus(int code, const char* call) {
  if (code == 0) return absl::OkStatus();
  const auto e = static_cast<cudaError_t>(code);
  return absl::InternalError(absl::StrCat(call, " failed: CUDA error ", code, " ",
                                          cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

absl::Status BlasStatus(int code, const char* call) {
  if (code == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: cuBLAS status ", code));
}

#define CUDA_TRY(expr) RETURN_IF_ERROR(CudaStatus(static_cast<int>(expr), #expr))
#define BLAS_TRY(expr) RETURN_IF_ERROR(BlasStatus((expr), #expr))

template <typename T>
size_t Bytes(int64_t n) {
  return static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T);
}

cuda::Dtype ToCuda(DeviceDtype t) {
  switch (t) {
    case DeviceDtype::kBf16:
      return cuda::Dtype::kBf16;
    case DeviceDtype::kF16:
      return cuda::Dtype::kF16;
    case DeviceDtype::kF32:
      break;
  }
  return cuda::Dtype::kF32;
}

}  // namespace

// ---- Buffer ---------------------------------------------------------------------------------

CudaModelRunner::Buffer::~Buffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

CudaModelRunner::Buffer::Buffer(Buffer&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) {
  other.ptr_ = nullptr;
  other.bytes_ = 0;
}

absl::Status CudaModelRunner::Buffer::Reserve(size_t bytes, const char* what) {
  if (bytes <= bytes_) return absl::OkStatus();
  const size_t grown = std::max(bytes, bytes_ + bytes_ / 2);  // geometric: regrowth stays rare
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  const cudaError_t e = cudaMalloc(&ptr_, grown);
  if (e != cudaSuccess) {
    ptr_ = nullptr;
    return absl::InternalError(absl::StrCat("cudaMalloc of ", grown, " bytes for ", what,
                                            " failed: ", cudaGetErrorString(e)));
  }
  bytes_ = grown;
  return absl::OkStatus();
}

// ---- Setup ----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Create(
    const ModelWeights& weights, const RunnerOptions& options) {
  return CreateFor(weights.config(), &weights, 0, options);
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::CreateRandom(
    const ModelConfig& config, uint64_t seed, const RunnerOptions& options) {
  RETURN_IF_ERROR(config.Validate());
  if (config.attention_bias) {
    return absl::InvalidArgumentError("random weights have no q/k/v biases (attention_bias)");
  }
  return CreateFor(config, nullptr, seed, options);
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::CreateFor(
    const ModelConfig& c, const ModelWeights* weights, uint64_t seed,
    const RunnerOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (c.num_heads / c.num_kv_heads > kMaxGroup || c.head_dim > kMaxHeadDim) {
    return absl::UnimplementedError(absl::StrFormat(
        "the CUDA backend supports up to %d query heads per KV head and head_dim up to %d; this "
        "model has %d and %d",
        kMaxGroup, kMaxHeadDim, c.num_heads / c.num_kv_heads, c.head_dim));
  }
  int count = 0;
  if (const int e = cuda::DeviceCount(&count); e != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no usable CUDA device: cudaGetDeviceCount failed with error ", e, " (",
                     cuda::ErrorString(e), ")"));
  }
  if (count == 0) return absl::FailedPreconditionError("no usable CUDA device: none found");
  const PagedKvGeometry g{options.block_size, c.num_kv_heads, c.head_dim};
  const int64_t block_bytes = g.BlockFloats() * cuda::DtypeBytes(ToCuda(options.kv_dtype));
  const int64_t num_blocks = options.kv_cache_bytes / block_bytes;
  if (num_blocks < 1 || num_blocks > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KV cache of %d bytes holds %d blocks of %d bytes; need at least one",
                        options.kv_cache_bytes, num_blocks, block_bytes));
  }
  std::unique_ptr<CudaModelRunner> runner(
      new CudaModelRunner(c, weights, options, static_cast<int32_t>(num_blocks)));
  RETURN_IF_ERROR(runner->Init(seed));
  return runner;
}

CudaModelRunner::CudaModelRunner(const ModelConfig& config, const ModelWeights* weights,
                                 const RunnerOptions& options, int32_t num_blocks)
    : config_(config),
      weights_(weights),
      options_(options),
      geometry_{options.block_size, config.num_kv_heads, config.head_dim},
      pool_(num_blocks),
      weights_dtype_(ToCuda(options.device_weights)),
      kv_dtype_(ToCuda(options.kv_dtype)) {}

CudaModelRunner::~CudaModelRunner() {
  if (stream_ != nullptr) cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
  blas_.reset();
  if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

absl::Status CudaModelRunner::Init(uint64_t seed) {
  CUDA_TRY(cudaSetDevice(0));
  CUDA_TRY(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, 0));
  cudaStream_t stream = nullptr;
  CUDA_TRY(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  stream_ = stream;
  cuda::Blas* blas = nullptr;
  BLAS_TRY(cuda::Blas::Create(stream_, &blas));
  blas_.reset(blas);
  RETURN_IF_ERROR(weights_ != nullptr ? UploadWeights() : MakeRandomWeights(seed));
  RETURN_IF_ERROR(kv_pool_.Reserve(
      static_cast<size_t>(std::max<int64_t>(pool_.num_blocks(), 1)) * block_bytes(),
      "the KV pool"));
  if (kv_dtype_ != cuda::Dtype::kF32) {  // fp32 blocks, then their rounding
    RETURN_IF_ERROR(import_staging_.Reserve(
        static_cast<size_t>(kImportChunkBlocks * geometry_.BlockFloats()) * (sizeof(float) + 2),
        "KV import staging"));
  }
  CUDA_TRY(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)));
  return absl::OkStatus();
}

absl::StatusOr<const void*> CudaModelRunner::UploadBytes(const void* data, size_t bytes) {
  Buffer b;
  RETURN_IF_ERROR(b.Reserve(bytes, "weights"));
  // Stream-ordered; the pageable source is staged before the call returns.
  CUDA_TRY(cudaMemcpyAsync(b.as<void>(), data, bytes, cudaMemcpyHostToDevice,
                           static_cast<cudaStream_t>(stream_)));
  weight_buffers_.push_back(std::move(b));
  return weight_buffers_.back().as<const void>();
}

absl::StatusOr<const float*> CudaModelRunner::UploadVector(const std::vector<float>& v) {
  if (v.empty()) return nullptr;
  ASSIGN_OR_RETURN(const void* p, UploadBytes(v.data(), v.size() * sizeof(float)));
  return static_cast<const float*>(p);
}

// Converted row by row on the host (kernels/cpu/convert.h) to fp32, then to the device format.
absl::StatusOr<const void*> CudaModelRunner::UploadMatrix(const WeightMatrix& m) {
  std::vector<float> host(static_cast<size_t>(m.rows * m.cols));
  for (int64_t r = 0; r < m.rows; ++r) {
    DequantizeRow(m.type, m.Row(r), host.data() + r * m.cols, m.cols);
  }
  if (weights_dtype_ == cuda::Dtype::kF32) {
    return UploadBytes(host.data(), host.size() * sizeof(float));
  }
  std::vector<uint16_t> half(host.size());
  for (size_t i = 0; i < host.size(); ++i) half[i] = cuda::HostNarrow(host[i], weights_dtype_);
  return UploadBytes(half.data(), half.size() * sizeof(uint16_t));
}

absl::Status CudaModelRunner::UploadWeights() {
  const ModelConfig& c = config_;
  // Device pointers stay valid as weight_buffers_ grows (a moved Buffer keeps its allocation).
  ASSIGN_OR_RETURN(embedding_, UploadMatrix(weights_->token_embedding()));
  const bool tied = weights_->output().data == weights_->token_embedding().data &&
                    weights_->output().type == weights_->token_embedding().type;
  if (tied) {
    output_ = embedding_;
  } else {
    ASSIGN_OR_RETURN(output_, UploadMatrix(weights_->output()));
  }
  ASSIGN_OR_RETURN(output_norm_, UploadVector(weights_->output_norm()));
  ASSIGN_OR_RETURN(inv_freq_, UploadVector(weights_->rope_inv_freq()));
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights_->layer(l);
    LayerPointers p{};
    ASSIGN_OR_RETURN(p.attn_norm, UploadVector(w.attn_norm));
    ASSIGN_OR_RETURN(p.wq, UploadMatrix(w.wq));
    ASSIGN_OR_RETURN(p.wk, UploadMatrix(w.wk));
    ASSIGN_OR_RETURN(p.wv, UploadMatrix(w.wv));
    ASSIGN_OR_RETURN(p.wo, UploadMatrix(w.wo));
    ASSIGN_OR_RETURN(p.bq, UploadVector(w.bq));
    ASSIGN_OR_RETURN(p.bk, UploadVector(w.bk));
    ASSIGN_OR_RETURN(p.bv, UploadVector(w.bv));
    ASSIGN_OR_RETURN(p.ffn_norm, UploadVector(w.ffn_norm));
    ASSIGN_OR_RETURN(p.w_gate, UploadMatrix(w.w_gate));
    ASSIGN_OR_RETURN(p.w_up, UploadMatrix(w.w_up));
    ASSIGN_OR_RETURN(p.w_down, UploadMatrix(w.w_down));
    layers_.push_back(p);
  }
  return absl::OkStatus();
}

absl::StatusOr<const void*> CudaModelRunner::RandomMatrix(int64_t rows, int64_t cols, float bound,
                                                          uint64_t seed, Buffer& fp32) {
  const int64_t n = rows * cols;
  Buffer b;
  const bool narrow = weights_dtype_ != cuda::Dtype::kF32;
  RETURN_IF_ERROR(
      b.Reserve(narrow ? Bytes<uint16_t>(n) : Bytes<float>(n), "a random weight matrix"));
  if (narrow) {
    RETURN_IF_ERROR(fp32.Reserve(Bytes<float>(n), "random weights (fp32 staging)"));
    CUDA_TRY(cuda::LaunchFillUniform(fp32.as<float>(), n, seed, bound, stream_));
    CUDA_TRY(cuda::LaunchConvert(fp32.as<float>(), b.as<void>(), n, weights_dtype_, stream_));
  } else {
    CUDA_TRY(cuda::LaunchFillUniform(b.as<float>(), n, seed, bound, stream_));
  }
  weight_buffers_.push_back(std::move(b));
  return weight_buffers_.back().as<const void>();
}

// The streams and bounds of WriteRandomModel (random_model.h), matrix by matrix in file order.
absl::Status CudaModelRunner::MakeRandomWeights(uint64_t seed) {
  const ModelConfig& c = config_;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
  const std::vector<float> ones(static_cast<size_t>(c.dim), 1.0f);
  Buffer staging;  // 16 bits: each matrix is made in fp32 here first (sized once: no regrowth)
  if (weights_dtype_ != cuda::Dtype::kF32) {
    const int64_t largest = std::max<int64_t>(
        {int64_t{c.vocab_size} * c.dim, int64_t{c.ffn_dim} * c.dim, q_dim * c.dim});
    RETURN_IF_ERROR(staging.Reserve(Bytes<float>(largest), "random weights (fp32 staging)"));
  }
  auto matrix = [&](int64_t rows, int64_t cols) {
    return RandomMatrix(rows, cols, RandomMatrixBound(cols), seed++, staging);
  };
  ASSIGN_OR_RETURN(embedding_, RandomMatrix(c.vocab_size, c.dim, 1.0f, seed++, staging));
  if (c.tied_output) {
    output_ = embedding_;
  } else {
    ASSIGN_OR_RETURN(output_, matrix(c.vocab_size, c.dim));
  }
  ASSIGN_OR_RETURN(output_norm_, UploadVector(ones));
  ASSIGN_OR_RETURN(inv_freq_, UploadVector(RopeInverseFrequencies(c)));
  for (int32_t l = 0; l < c.num_layers; ++l) {
    LayerPointers p{};
    ASSIGN_OR_RETURN(p.attn_norm, UploadVector(ones));
    ASSIGN_OR_RETURN(p.wq, matrix(q_dim, c.dim));
    ASSIGN_OR_RETURN(p.wk, matrix(kv_dim, c.dim));
    ASSIGN_OR_RETURN(p.wv, matrix(kv_dim, c.dim));
    ASSIGN_OR_RETURN(p.wo, matrix(c.dim, q_dim));
    ASSIGN_OR_RETURN(p.ffn_norm, UploadVector(ones));
    ASSIGN_OR_RETURN(p.w_gate, matrix(c.ffn_dim, c.dim));
    ASSIGN_OR_RETURN(p.w_up, matrix(c.ffn_dim, c.dim));
    ASSIGN_OR_RETURN(p.w_down, matrix(c.dim, c.ffn_dim));
    layers_.push_back(p);
  }
  // `staging` is freed on return: the conversions reading it must be done.
  CUDA_TRY(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)));
  return absl::OkStatus();
}

SequenceKv CudaModelRunner::NewSequence() const {
  return SequenceKv(config_.num_layers, options_.block_size);
}

absl::Status CudaModelRunner::Fault(absl::Status status) {
  if (fault_.ok() && !status.ok()) fault_ = status;
  return status;
}

absl::Status CudaModelRunner::CopyBlock(BlockId from, BlockId to) {
  const int64_t bytes = block_bytes();
  char* pool = kv_pool_.as<char>();
  CUDA_TRY(cudaMemcpyAsync(pool + to * bytes, pool + from * bytes, static_cast<size_t>(bytes),
                           cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream_)));
  return absl::OkStatus();
}

// ---- Step -----------------------------------------------------------------------------------

absl::Status CudaModelRunner::CheckSupported(std::span<const StepSequence> batch,
                                             const StepKvPlan& plan) const {
  for (size_t s = 0; s < batch.size(); ++s) {
    if (plan.compressing(s) && batch[s].policy->method == KvMethod::kH2o &&
        plan.budgets[s].prompt_tokens > kMaxH2oPromptTokens) {
      return absl::UnimplementedError(absl::StrFormat(
          "h2o on the CUDA backend takes prompts up to %d tokens (this one has %d); use another "
          "KV method or --device cpu",
          kMaxH2oPromptTokens, plan.budgets[s].prompt_tokens));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaModelRunner::Step(std::span<const StepSequence> batch,
                                   std::vector<float>& logits) {
  logits.clear();
  if (!fault_.ok()) return fault_;
  if (batch.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(ValidateStepBatch(batch, config_, options_.block_size));
  ASSIGN_OR_RETURN(StepKvPlan plan, PlanStep(batch, config_.num_layers));
  RETURN_IF_ERROR(CheckSupported(batch, plan));
  plan_ = std::move(plan);
  absl::Status reserved = ReserveStepKv(
      batch, plan_, pool_, [this](BlockId from, BlockId to) { return CopyBlock(from, to); });
  if (reserved.code() == absl::StatusCode::kInternal) return Fault(reserved);
  RETURN_IF_ERROR(reserved);
  return Fault(RunStep(batch, logits));
}

absl::Status CudaModelRunner::RunStep(std::span<const StepSequence> batch,
                                      std::vector<float>& logits) {
  const ModelConfig& c = config_;
  LayoutRows(batch);
  BuildStepInputs(batch);
  RETURN_IF_ERROR(ReserveScratch(batch));
  auto stream = static_cast<cudaStream_t>(stream_);
  CUDA_TRY(cudaMemcpyAsync(step_i32_.as<int32_t>(), host_i32_.data(),
                           host_i32_.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  CUDA_TRY(cudaMemcpyAsync(step_slots_.as<int64_t>(), host_slots_.data(),
                           host_slots_.size() * sizeof(int64_t), cudaMemcpyHostToDevice, stream));
  CUDA_TRY(cuda::LaunchEmbeddingGatherTyped(embedding_, weights_dtype_, device_i32(ids_at_),
                                            x_.as<float>(), num_rows_, c.dim, stream_));
  for (int32_t l = 0; l < c.num_layers; ++l) RETURN_IF_ERROR(RunLayer(l, batch));
  for (const StepSequence& seq : batch) {
    seq.kv->set_num_positions(seq.kv->num_positions() + static_cast<int64_t>(seq.tokens.size()));
  }
  return ComputeLogits(logits);
}

void CudaModelRunner::LayoutRows(std::span<const StepSequence> batch) {
  groups_.assign(batch.size(), RowGroup::kDecode);
  for (size_t s = 0; s < batch.size(); ++s) {
    if (plan_.compressing(s)) {
      groups_[s] = RowGroup::kCompress;
    } else if (batch[s].tokens.size() > 1) {
      groups_[s] = RowGroup::kPrefill;
    }
  }
  order_.clear();
  for (RowGroup g : {RowGroup::kDecode, RowGroup::kPrefill, RowGroup::kCompress}) {
    for (size_t s = 0; s < batch.size(); ++s) {
      if (groups_[s] == g) order_.push_back(s);
    }
  }
  row_begin_.assign(batch.size(), 0);
  ws_offsets_.assign(batch.size(), 0);
  const int64_t kv_dim = geometry_.num_kv_heads * geometry_.head_dim;
  int64_t row = 0, ws = 0;
  num_decode_rows_ = num_pool_rows_ = 0;
  for (size_t s : order_) {
    row_begin_[s] = row;
    row += NewRows(s, batch);
    if (groups_[s] == RowGroup::kDecode) num_decode_rows_ = row;
    if (groups_[s] != RowGroup::kCompress) num_pool_rows_ = row;
    if (groups_[s] == RowGroup::kCompress) {
      ws_offsets_[s] = ws;
      ws += 2 * plan_.budgets[s].prompt_tokens * kv_dim;
    }
  }
  num_rows_ = row;
}

// Fills host_i32_ and host_slots_ (layout: see the header).
void CudaModelRunner::BuildStepInputs(std::span<const StepSequence> batch) {
  const int32_t layers = config_.num_layers;
  const int64_t bs = options_.block_size;
  host_i32_.assign(static_cast<size_t>(2 * num_rows_), 0);
  host_slots_.assign(static_cast<size_t>(layers * num_rows_), 0);
  ids_at_ = 0;
  positions_at_ = num_rows_;
  for (size_t s = 0; s < batch.size(); ++s) {
    for (int64_t i = 0; i < NewRows(s, batch); ++i) {
      const size_t r = static_cast<size_t>(row_begin_[s] + i);
      host_i32_[r] = batch[s].tokens[static_cast<size_t>(i)];
      host_i32_[static_cast<size_t>(num_rows_) + r] =
          static_cast<int32_t>(batch[s].kv->num_positions() + i);
    }
  }
  logit_rows_at_ = static_cast<int64_t>(host_i32_.size());
  for (size_t s = 0; s < batch.size(); ++s) {  // batch order, as `logits` wants them
    const int64_t end = row_begin_[s] + NewRows(s, batch);
    for (int64_t r = batch[s].all_logits ? row_begin_[s] : end - 1; r < end; ++r) {
      host_i32_.push_back(static_cast<int32_t>(r));
    }
  }
  num_logit_rows_ = static_cast<int64_t>(host_i32_.size()) - logit_rows_at_;
  zero_at_ = static_cast<int64_t>(host_i32_.size());
  host_i32_.push_back(0);
  kv_lens_at_ = static_cast<int64_t>(host_i32_.size());
  host_i32_.resize(host_i32_.size() + static_cast<size_t>(layers * num_rows_), 0);
  for (int32_t l = 0; l < layers; ++l) {
    for (size_t s = 0; s < batch.size(); ++s) {
      std::span<const BlockId> table = batch[s].kv->block_table(l);
      const int64_t base = plan_.base_length(s, l);
      for (int64_t i = 0; i < NewRows(s, batch); ++i) {
        const int64_t r = row_begin_[s] + i, e = base + i;
        host_i32_[static_cast<size_t>(kv_lens_at_ + l * num_rows_ + r)] =
            static_cast<int32_t>(e + 1);
        host_slots_[static_cast<size_t>(l * num_rows_ + r)] =
            groups_[s] == RowGroup::kCompress
                ? e  // the workspace is one block of prompt_tokens entries
                : int64_t{table[static_cast<size_t>(e / bs)]} * bs + e % bs;
      }
    }
    AppendTables(batch, l);
  }
}

// The decode sequences' tables of `layer`, padded to one stride, then every other sequence's.
void CudaModelRunner::AppendTables(std::span<const StepSequence> batch, int32_t layer) {
  const size_t seqs = batch.size();
  if (layer == 0) {
    decode_table_at_.assign(static_cast<size_t>(config_.num_layers), 0);
    decode_stride_.assign(decode_table_at_.size(), 0);
    seq_table_at_.assign(decode_table_at_.size() * seqs, 0);
    seq_prefill_at_.assign(decode_table_at_.size() * seqs, 0);
  }
  int32_t stride = 0;
  for (size_t s : order_) {
    if (groups_[s] != RowGroup::kDecode) continue;
    stride = std::max(stride, static_cast<int32_t>(batch[s].kv->block_table(layer).size()));
  }
  decode_table_at_[static_cast<size_t>(layer)] = static_cast<int64_t>(host_i32_.size());
  decode_stride_[static_cast<size_t>(layer)] = stride;
  for (size_t s : order_) {
    if (groups_[s] != RowGroup::kDecode) continue;
    std::span<const BlockId> table = batch[s].kv->block_table(layer);
    host_i32_.insert(host_i32_.end(), table.begin(), table.end());
    host_i32_.resize(host_i32_.size() + static_cast<size_t>(stride) - table.size(), 0);
  }
  for (size_t s : order_) {
    if (groups_[s] == RowGroup::kDecode) continue;
    std::span<const BlockId> table = batch[s].kv->block_table(layer);
    seq_table_at_[static_cast<size_t>(layer) * seqs + s] = static_cast<int64_t>(host_i32_.size());
    host_i32_.insert(host_i32_.end(), table.begin(), table.end());
    seq_prefill_at_[static_cast<size_t>(layer) * seqs + s] = static_cast<int64_t>(host_i32_.size());
    const int64_t rows = NewRows(s, batch);
    host_i32_.push_back(0);
    host_i32_.push_back(static_cast<int32_t>(rows));
    host_i32_.push_back(static_cast<int32_t>(plan_.base_length(s, layer) + rows));
  }
}

absl::Status CudaModelRunner::ReserveScratch(std::span<const StepSequence> batch) {
  const ModelConfig& c = config_;
  const int64_t n = num_rows_, q_dim = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
  RETURN_IF_ERROR(
      step_i32_.Reserve(Bytes<int32_t>(static_cast<int64_t>(host_i32_.size())), "step inputs"));
  RETURN_IF_ERROR(
      step_slots_.Reserve(Bytes<int64_t>(static_cast<int64_t>(host_slots_.size())), "step slots"));
  RETURN_IF_ERROR(x_.Reserve(Bytes<float>(n * c.dim), "activations"));
  RETURN_IF_ERROR(xn_.Reserve(Bytes<float>(n * std::max<int64_t>(c.dim, q_dim)), "activations"));
  RETURN_IF_ERROR(q_.Reserve(Bytes<float>(n * q_dim), "queries"));
  RETURN_IF_ERROR(k_.Reserve(Bytes<float>(n * kv_dim), "keys"));
  RETURN_IF_ERROR(v_.Reserve(Bytes<float>(n * kv_dim), "values"));
  RETURN_IF_ERROR(attn_.Reserve(Bytes<float>(n * q_dim), "attention output"));
  RETURN_IF_ERROR(gate_.Reserve(Bytes<float>(n * c.ffn_dim), "FFN gate"));
  RETURN_IF_ERROR(up_.Reserve(Bytes<float>(n * c.ffn_dim), "FFN up"));
  RETURN_IF_ERROR(logits_.Reserve(Bytes<float>(num_logit_rows_ * c.vocab_size), "logits"));
  if (weights_dtype_ != cuda::Dtype::kF32) {
    const int64_t widest = std::max<int64_t>({c.dim, q_dim, c.ffn_dim});
    RETURN_IF_ERROR(x16_.Reserve(Bytes<uint16_t>(n * widest), "16-bit activations"));
  }
  // SplitCount keeps rows * splits below rows + 4 * num_sms_ for any launch of this step.
  RETURN_IF_ERROR(
      attn_ws_.Reserve(Bytes<float>((n + 4 * int64_t{num_sms_}) * c.num_heads * (c.head_dim + 2)),
                       "attention workspace"));
  if (c.attention_bias && ones_rows_ < n) {
    RETURN_IF_ERROR(ones_.Reserve(Bytes<float>(n), "bias ones"));
    const std::vector<float> ones(static_cast<size_t>(n), 1.0f);
    CUDA_TRY(cudaMemcpyAsync(ones_.as<float>(), ones.data(), Bytes<float>(n),
                             cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream_)));
    ones_rows_ = n;
  }
  int64_t ws = 0, most_prefix = 0, most_prompt = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    if (groups_[s] != RowGroup::kCompress) continue;
    const LayerBudgets& b = plan_.budgets[s];
    ws = std::max(ws, ws_offsets_[s] + 2 * b.prompt_tokens * kv_dim);
    most_prefix = std::max(most_prefix, b.prompt_tokens - b.window);
    most_prompt = std::max(most_prompt, b.prompt_tokens);
  }
  if (ws == 0) return absl::OkStatus();
  RETURN_IF_ERROR(compress_ws_.Reserve(Bytes<float>(ws), "compression workspace"));
  RETURN_IF_ERROR(scores_.Reserve(Bytes<float>(most_prefix * c.num_heads), "window scores"));
  RETURN_IF_ERROR(pooled_.Reserve(Bytes<float>(most_prefix * c.num_kv_heads), "pooled scores"));
  return kept_.Reserve(Bytes<int32_t>(most_prompt * c.num_kv_heads), "kept indices");
}

// ---- One layer --------------------------------------------------------------------------------

absl::Status CudaModelRunner::RunLayer(int32_t layer, std::span<const StepSequence> batch) {
  const ModelConfig& c = config_;
  const LayerPointers& w = layers_[static_cast<size_t>(layer)];
  const int64_t n = num_rows_, dim = c.dim;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
  const bool half = c.rope_style == RopeStyle::kHalfSplit;
  float* x = x_.as<float>();
  float* xn = xn_.as<float>();
  CUDA_TRY(cuda::LaunchRmsNorm(x, w.attn_norm, xn, n, dim, c.rms_norm_eps, stream_));
  ASSIGN_OR_RETURN(const void* in, ProductInput(xn, n * dim));  // shared by q, k and v
  RETURN_IF_ERROR(Project(w.wq, w.bq, q_dim, dim, in, q_.as<float>()));
  RETURN_IF_ERROR(Project(w.wk, w.bk, kv_dim, dim, in, k_.as<float>()));
  RETURN_IF_ERROR(Project(w.wv, w.bv, kv_dim, dim, in, v_.as<float>()));
  const int32_t* positions = device_i32(positions_at_);
  CUDA_TRY(cuda::LaunchRopeWithFrequencies(q_.as<float>(), positions, n, c.num_heads, c.head_dim,
                                           c.rope_dim, inv_freq_, half, stream_));
  CUDA_TRY(cuda::LaunchRopeWithFrequencies(k_.as<float>(), positions, n, c.num_kv_heads, c.head_dim,
                                           c.rope_dim, inv_freq_, half, stream_));
  // K/V as the cache stores them, before anything reads them (the prefill's own attention and
  // the compression scores included).
  CUDA_TRY(cuda::LaunchRoundTrip(k_.as<float>(), n * kv_dim, kv_dtype_, stream_));
  CUDA_TRY(cuda::LaunchRoundTrip(v_.as<float>(), n * kv_dim, kv_dtype_, stream_));
  RETURN_IF_ERROR(WriteKv(layer, batch));
  RETURN_IF_ERROR(Attention(layer, batch));
  RETURN_IF_ERROR(CompressLayer(layer, batch));
  ASSIGN_OR_RETURN(in, ProductInput(attn_.as<float>(), n * q_dim));
  RETURN_IF_ERROR(MatMul(w.wo, in, dim, q_dim, n, x, true));  // x += wo·a
  CUDA_TRY(cuda::LaunchRmsNorm(x, w.ffn_norm, xn, n, dim, c.rms_norm_eps, stream_));
  float* gate = gate_.as<float>();
  ASSIGN_OR_RETURN(in, ProductInput(xn, n * dim));  // shared by gate and up
  RETURN_IF_ERROR(MatMul(w.w_gate, in, c.ffn_dim, dim, n, gate, false));
  RETURN_IF_ERROR(MatMul(w.w_up, in, c.ffn_dim, dim, n, up_.as<float>(), false));
  CUDA_TRY(cuda::LaunchSwiGlu(gate, up_.as<float>(), gate, n * c.ffn_dim, stream_));
  ASSIGN_OR_RETURN(in, ProductInput(gate, n * c.ffn_dim));
  RETURN_IF_ERROR(MatMul(w.w_down, in, dim, c.ffn_dim, n, x, true));  // x += down·g
  return absl::OkStatus();
}

// out[rows, out_dim] = in[rows, in_dim] · w^T (+ bias, broadcast through a rank-1 product with
// a column of ones, so that no extra kernel is needed).
absl::Status CudaModelRunner::Project(const void* w, const float* bias, int64_t out_dim,
                                      int64_t in_dim, const void* in, float* out) {
  if (bias == nullptr) return MatMul(w, in, out_dim, in_dim, num_rows_, out, false);
  BLAS_TRY(blas_->MatMulF32(bias, ones_.as<float>(), out_dim, 1, num_rows_, out));
  return MatMul(w, in, out_dim, in_dim, num_rows_, out, true);
}

// A product's input [count] as the weights take it: `in` itself (fp32 weights), or its rounding
// to the weights' 16-bit format in x16_, valid until the next call.
absl::StatusOr<const void*> CudaModelRunner::ProductInput(const float* in, int64_t count) {
  if (weights_dtype_ == cuda::Dtype::kF32) return in;
  CUDA_TRY(cuda::LaunchConvert(in, x16_.as<void>(), count, weights_dtype_, stream_));
  return x16_.as<const void>();
}

// out (+)= in · w^T with fp32 accumulation; `in` from ProductInput.
absl::Status CudaModelRunner::MatMul(const void* w, const void* in, int64_t rows, int64_t cols,
                                     int64_t tokens, float* out, bool accumulate) {
  if (weights_dtype_ == cuda::Dtype::kF32) {
    const auto* wf = static_cast<const float*>(w);
    const auto* xf = static_cast<const float*>(in);
    BLAS_TRY(accumulate ? blas_->MatMulF32Accumulate(wf, xf, rows, cols, tokens, out)
                        : blas_->MatMulF32(wf, xf, rows, cols, tokens, out));
    return absl::OkStatus();
  }
  const auto* wb = static_cast<const uint16_t*>(w);
  const auto* xb = static_cast<const uint16_t*>(in);
  BLAS_TRY(accumulate ? blas_->MatMul16Accumulate(weights_dtype_, wb, xb, rows, cols, tokens, out)
                      : blas_->MatMul16(weights_dtype_, wb, xb, rows, cols, tokens, out));
  return absl::OkStatus();
}

// New K/V rows: pool sequences into their blocks (one launch); compressing prefills into their
// workspace, after the prompt's earlier chunks read back from the pool.
absl::Status CudaModelRunner::WriteKv(int32_t layer, std::span<const StepSequence> batch) {
  const int32_t kv_heads = static_cast<int32_t>(geometry_.num_kv_heads);
  const int32_t d = static_cast<int32_t>(geometry_.head_dim);
  const int64_t kv_dim = int64_t{kv_heads} * d;
  const int64_t* slots = step_slots_.as<int64_t>() + layer * num_rows_;
  CUDA_TRY(cuda::LaunchAppendKv(k_.as<float>(), v_.as<float>(), slots, num_pool_rows_, kv_heads, d,
                                options_.block_size, kv_pool_.as<void>(), kv_dtype_, stream_));
  for (size_t s : order_) {
    if (groups_[s] != RowGroup::kCompress) continue;
    if (plan_.base_length(s, layer) > 0) RETURN_IF_ERROR(ReadBackPrefix(s, layer, batch));
    const int64_t r0 = row_begin_[s];
    CUDA_TRY(cuda::LaunchAppendKv(k_.as<float>() + r0 * kv_dim, v_.as<float>() + r0 * kv_dim,
                                  slots + r0, NewRows(s, batch), kv_heads, d,
                                  static_cast<int32_t>(plan_.budgets[s].prompt_tokens),
                                  compress_ws(s), cuda::Dtype::kF32, stream_));
  }
  return absl::OkStatus();
}

// The first base entries of a chunked prompt, from its pool blocks (its device table of this
// layer) into its workspace ([kv_heads][n][head_dim] keys, then values), widened to fp32.
absl::Status CudaModelRunner::ReadBackPrefix(size_t s, int32_t layer,
                                             std::span<const StepSequence> batch) {
  const int64_t at = seq_table_at_[static_cast<size_t>(layer) * batch.size() + s];
  CUDA_TRY(cuda::LaunchReadEntries(kv_pool_.as<const void>(), kv_dtype_, device_i32(at),
                                   options_.block_size, plan_.base_length(s, layer),
                                   static_cast<int32_t>(geometry_.num_kv_heads),
                                   static_cast<int32_t>(geometry_.head_dim),
                                   plan_.budgets[s].prompt_tokens, compress_ws(s), stream_));
  return absl::OkStatus();
}

// Decode rows use the paged decode kernel (one launch, split along the sequence); every other
// sequence's rows use the tiled prefill kernel, one launch per sequence: row i of a prompt sees
// entries [0, base + i], which covers session suffixes and compressed caches alike.
absl::Status CudaModelRunner::Attention(int32_t layer, std::span<const StepSequence> batch) {
  if (num_decode_rows_ > 0) {
    int64_t longest = 0;
    for (size_t s : order_) {
      if (groups_[s] == RowGroup::kDecode) {
        longest = std::max(longest, plan_.base_length(s, layer) + 1);
      }
    }
    RETURN_IF_ERROR(AttendRows(0, num_decode_rows_,
                               device_i32(decode_table_at_[static_cast<size_t>(layer)]),
                               decode_stride_[static_cast<size_t>(layer)], longest, layer));
  }
  for (size_t s : order_) {
    if (groups_[s] != RowGroup::kDecode) RETURN_IF_ERROR(AttendPrefill(s, layer, batch));
  }
  return absl::OkStatus();
}

// The new rows of batch[s] over its pool blocks (prefill) or its workspace, read as one block
// of the whole prompt with the table {0} (compressing prefill).
absl::Status CudaModelRunner::AttendPrefill(size_t s, int32_t layer,
                                            std::span<const StepSequence> batch) {
  const ModelConfig& c = config_;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
  const size_t at = static_cast<size_t>(layer) * batch.size() + s;
  const bool compressing = groups_[s] == RowGroup::kCompress;
  const int64_t record = seq_prefill_at_[at];
  cuda::PagedPrefillParams p;
  p.q = q_.as<float>() + row_begin_[s] * q_dim;
  p.out = attn_.as<float>() + row_begin_[s] * q_dim;
  p.num_seqs = 1;
  p.num_heads = c.num_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.head_dim = c.head_dim;
  p.pool = compressing ? compress_ws(s) : kv_pool_.as<const void>();
  p.kv_dtype = compressing ? cuda::Dtype::kF32 : kv_dtype_;
  p.block_size =
      compressing ? static_cast<int32_t>(plan_.budgets[s].prompt_tokens) : options_.block_size;
  p.block_tables = device_i32(compressing ? zero_at_ : seq_table_at_[at]);
  p.max_blocks_per_seq = 0;
  p.q_indptr = device_i32(record);
  p.kv_lens = device_i32(record + 2);
  p.max_q_len = static_cast<int32_t>(NewRows(s, batch));
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  CUDA_TRY(cuda::LaunchPagedPrefillAttention(p, stream_));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::AttendRows(int64_t first_row, int64_t rows, const int32_t* tables,
                                         int32_t table_stride, int64_t max_kv_len, int32_t layer) {
  const ModelConfig& c = config_;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
  cuda::PagedDecodeParams p;
  p.q = q_.as<float>() + first_row * q_dim;
  p.out = attn_.as<float>() + first_row * q_dim;
  p.num_seqs = static_cast<int32_t>(rows);
  p.num_heads = c.num_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.head_dim = c.head_dim;
  p.pool = kv_pool_.as<const void>();
  p.kv_dtype = kv_dtype_;
  p.block_size = options_.block_size;
  p.block_tables = tables;
  p.max_blocks_per_seq = table_stride;
  p.kv_lens = device_i32(kv_lens_at_ + layer * num_rows_ + first_row);
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.num_splits = SplitCount(rows, max_kv_len);
  p.max_kv_len = static_cast<int32_t>(max_kv_len);
  p.workspace = attn_ws_.as<float>();
  CUDA_TRY(cuda::LaunchPagedDecodeAttention(p, stream_));
  return absl::OkStatus();
}

// Enough (row, KV head, split) blocks to fill the GPU (about 4 per SM), at least
// kMinSplitEntries entries per split. rows * splits <= rows + 4 * num_sms_.
int32_t CudaModelRunner::SplitCount(int64_t rows, int64_t max_kv_len) const {
  const int64_t blocks = rows * geometry_.num_kv_heads;
  const int64_t want = (4 * int64_t{num_sms_} + blocks - 1) / blocks;
  const int64_t most = (max_kv_len + kMinSplitEntries - 1) / kMinSplitEntries;
  return static_cast<int32_t>(std::clamp<int64_t>(std::min(want, most), 1, kMaxSplits));
}

// ---- Compression at the end of prefill --------------------------------------------------------

absl::Status CudaModelRunner::CompressLayer(int32_t layer, std::span<const StepSequence> batch) {
  const int32_t kv_heads = static_cast<int32_t>(geometry_.num_kv_heads);
  const int32_t d = static_cast<int32_t>(geometry_.head_dim);
  for (size_t s : order_) {
    if (groups_[s] != RowGroup::kCompress) continue;
    const LayerBudgets& b = plan_.budgets[s];
    const int64_t n = b.prompt_tokens, count = b.stored(layer);
    RETURN_IF_ERROR(SelectKept(s, layer, batch));
    const float* keys = compress_ws(s);
    const int64_t at = seq_table_at_[static_cast<size_t>(layer) * batch.size() + s];
    CUDA_TRY(cuda::LaunchGatherKept(keys, keys + int64_t{kv_heads} * n * d, n, kept_.as<int32_t>(),
                                    count, kv_heads, d, device_i32(at), options_.block_size,
                                    kv_pool_.as<void>(), kv_dtype_, stream_));
    // A prompt written in chunks held its full K/V in the pool until now.
    batch[s].kv->Truncate(pool_, layer, count);
  }
  return absl::OkStatus();
}

// kept_ [kv_heads][selected + window]: scored methods on the GPU (window scores, pooling,
// group average, top-k; the CPU twins of kv_selection.h); position-only choices (streamingllm,
// or no selected entries) from the shared host code.
absl::Status CudaModelRunner::SelectKept(size_t s, int32_t layer,
                                         std::span<const StepSequence> batch) {
  const ModelConfig& c = config_;
  const LayerBudgets& b = plan_.budgets[s];
  const KvPolicy& policy = *batch[s].policy;
  const int64_t n = b.prompt_tokens, w = b.window, prefix = n - w;
  const int64_t selected = b.selected[static_cast<size_t>(layer)];
  const bool h2o = policy.method == KvMethod::kH2o;
  const bool scored =
      h2o || policy.method == KvMethod::kSnapKv || policy.method == KvMethod::kPyramidKv;
  if (scored && selected > 0) {
    const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    if (h2o) {  // the plan put the whole prompt in this step (CompressionStepMinTokens)
      CUDA_TRY(cuda::LaunchH2oScores(q_.as<float>() + row_begin_[s] * q_dim, compress_ws(s), n, w,
                                     c.num_heads, c.num_kv_heads, c.head_dim, scale,
                                     scores_.as<float>(), stream_));
    } else {
      const int64_t last_window_row = row_begin_[s] + NewRows(s, batch) - w;
      CUDA_TRY(cuda::LaunchWindowScores(q_.as<float>() + last_window_row * q_dim, compress_ws(s), n,
                                        w, c.num_heads, c.num_kv_heads, c.head_dim, scale,
                                        scores_.as<float>(), stream_));
    }
    // h2o: no pooling (kernel 1), as kv_selection.h.
    CUDA_TRY(cuda::LaunchPoolAndAverage(scores_.as<float>(), prefix, c.num_heads, c.num_kv_heads,
                                        h2o ? 1 : policy.kernel, policy.pooling == KvPooling::kMax,
                                        pooled_.as<float>(), stream_));
    CUDA_TRY(cuda::LaunchTopKWithWindow(pooled_.as<float>(), prefix, c.num_kv_heads, selected, w,
                                        kept_.as<int32_t>(), nullptr, 0, stream_));
    return absl::OkStatus();
  }
  SelectionInput in;
  in.method = policy.method;
  in.n = n;
  in.num_heads = c.num_heads;
  in.num_kv_heads = c.num_kv_heads;
  in.head_dim = c.head_dim;
  in.window = w;
  in.selected = scored ? 0 : selected;
  SelectionScratch scratch;
  const std::vector<int32_t> kept = SelectKeptIndices(in, 0, scratch);  // same for every head
  host_kept_.clear();
  for (int64_t h = 0; h < c.num_kv_heads; ++h) {
    host_kept_.insert(host_kept_.end(), kept.begin(), kept.end());
  }
  CUDA_TRY(cudaMemcpyAsync(kept_.as<int32_t>(), host_kept_.data(),
                           host_kept_.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                           static_cast<cudaStream_t>(stream_)));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::ComputeLogits(std::vector<float>& logits) {
  const ModelConfig& c = config_;
  const int64_t rows = num_logit_rows_;
  float* xn = xn_.as<float>();
  // The requested rows of x, gathered in batch order, then normalized and projected.
  CUDA_TRY(cuda::LaunchEmbeddingGather(x_.as<float>(), device_i32(logit_rows_at_), xn, rows, c.dim,
                                       stream_));
  CUDA_TRY(cuda::LaunchRmsNorm(xn, output_norm_, xn, rows, c.dim, c.rms_norm_eps, stream_));
  ASSIGN_OR_RETURN(const void* in, ProductInput(xn, rows * c.dim));
  RETURN_IF_ERROR(MatMul(output_, in, c.vocab_size, c.dim, rows, logits_.as<float>(), false));
  logits.resize(static_cast<size_t>(rows * c.vocab_size));
  auto stream = static_cast<cudaStream_t>(stream_);
  CUDA_TRY(cudaMemcpyAsync(logits.data(), logits_.as<float>(), logits.size() * sizeof(float),
                           cudaMemcpyDeviceToHost, stream));
  CUDA_TRY(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

// ---- Persistence ------------------------------------------------------------------------------

// fp32 pools copy straight into `host`; 16-bit ones into a host buffer of bits, widened here.
absl::Status CudaModelRunner::BlocksToHost(std::span<const BlockId> table, int64_t blocks,
                                           std::vector<float>& host) {
  const int64_t bytes = block_bytes();
  host.resize(static_cast<size_t>(blocks * geometry_.BlockFloats()));
  std::vector<uint16_t> bits;
  char* dst = reinterpret_cast<char*>(host.data());
  if (kv_dtype_ != cuda::Dtype::kF32) {
    bits.resize(host.size());
    dst = reinterpret_cast<char*>(bits.data());
  }
  auto stream = static_cast<cudaStream_t>(stream_);
  for (int64_t b = 0; b < blocks; ++b) {
    CUDA_TRY(cudaMemcpyAsync(dst + b * bytes,
                             kv_pool_.as<char>() + int64_t{table[static_cast<size_t>(b)]} * bytes,
                             static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, stream));
  }
  CUDA_TRY(cudaStreamSynchronize(stream));
  for (size_t i = 0; i < bits.size(); ++i) host[i] = cuda::HostWiden(bits[i], kv_dtype_);
  return absl::OkStatus();
}

// fp32 pools: one host-to-device copy per block. 16-bit pools: kImportChunkBlocks blocks at a
// time through import_staging_ (allocated once, in Init): uploaded in fp32, rounded on the
// device, then one device-to-device copy per block (stream order keeps the staging reuse safe).
absl::Status CudaModelRunner::BlocksToDevice(std::span<const BlockId> table, int64_t blocks,
                                             const std::vector<float>& host) {
  const int64_t floats = geometry_.BlockFloats(), bytes = block_bytes();
  auto stream = static_cast<cudaStream_t>(stream_);
  auto pool_block = [&](int64_t b) {
    return kv_pool_.as<char>() + int64_t{table[static_cast<size_t>(b)]} * bytes;
  };
  if (kv_dtype_ == cuda::Dtype::kF32) {
    for (int64_t b = 0; b < blocks; ++b) {
      CUDA_TRY(cudaMemcpyAsync(pool_block(b), host.data() + b * floats, static_cast<size_t>(bytes),
                               cudaMemcpyHostToDevice, stream));
    }
  }
  for (int64_t b0 = 0; kv_dtype_ != cuda::Dtype::kF32 && b0 < blocks; b0 += kImportChunkBlocks) {
    const int64_t n = std::min(kImportChunkBlocks, blocks - b0);
    float* staged = import_staging_.as<float>();
    char* rounded = reinterpret_cast<char*>(staged + kImportChunkBlocks * floats);
    CUDA_TRY(cudaMemcpyAsync(staged, host.data() + b0 * floats, Bytes<float>(n * floats),
                             cudaMemcpyHostToDevice, stream));
    CUDA_TRY(cuda::LaunchConvert(staged, rounded, n * floats, kv_dtype_, stream_));
    for (int64_t b = 0; b < n; ++b) {
      CUDA_TRY(cudaMemcpyAsync(pool_block(b0 + b), rounded + b * bytes, static_cast<size_t>(bytes),
                               cudaMemcpyDeviceToDevice, stream));
    }
  }
  CUDA_TRY(cudaStreamSynchronize(stream));  // the caller reuses `host`
  return absl::OkStatus();
}

absl::Status CudaModelRunner::ExportLayer(const SequenceKv& kv, int32_t layer,
                                          std::vector<float>& out) {
  if (!fault_.ok()) return fault_;
  const PagedKvGeometry& g = geometry_;
  const int64_t length = kv.layer_length(layer);
  const int64_t blocks = (length + g.block_size - 1) / g.block_size;
  std::vector<float> host;
  RETURN_IF_ERROR(Fault(BlocksToHost(kv.block_table(layer), blocks, host)));
  for (int64_t e = 0; e < length; ++e) {
    const float* block = host.data() + (e / g.block_size) * g.BlockFloats();
    g.AppendEntry(block, e % g.block_size, out);
  }
  return absl::OkStatus();
}

absl::StatusOr<SequenceKv> CudaModelRunner::ImportSequence(
    std::span<const std::vector<float>> layers, int64_t num_positions) {
  if (!fault_.ok()) return fault_;
  ASSIGN_OR_RETURN(const std::vector<int64_t> lengths, ImportedLengths(layers, num_positions));
  ASSIGN_OR_RETURN(SequenceKv kv,
                   SequenceKv::Allocate(pool_, options_.block_size, lengths, num_positions));
  const PagedKvGeometry& g = geometry_;
  std::vector<float> host;
  absl::Status copied = absl::OkStatus();
  for (int32_t l = 0; l < kv.num_layers() && copied.ok(); ++l) {
    const int64_t length = lengths[static_cast<size_t>(l)];
    const int64_t blocks = (length + g.block_size - 1) / g.block_size;
    host.assign(static_cast<size_t>(blocks * g.BlockFloats()), 0.0f);
    const float* in = layers[static_cast<size_t>(l)].data();
    for (int64_t e = 0; e < length; ++e) {
      float* block = host.data() + (e / g.block_size) * g.BlockFloats();
      const int64_t slot = e % g.block_size;
      for (int64_t h = 0; h < g.num_kv_heads; ++h, in += g.head_dim) {
        std::copy_n(in, g.head_dim, block + g.KOffset(h, slot));
      }
      for (int64_t h = 0; h < g.num_kv_heads; ++h, in += g.head_dim) {
        std::copy_n(in, g.head_dim, block + g.VOffset(h, slot));
      }
    }
    copied = BlocksToDevice(kv.block_table(l), blocks, host);
  }
  if (!copied.ok()) {
    kv.Release(pool_);
    return Fault(copied);
  }
  return kv;
}

}  // namespace funnel
