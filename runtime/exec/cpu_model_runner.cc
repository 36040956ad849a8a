#include "runtime/exec/cpu_model_runner.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cpu/norm_rope_act.h"
#include "runtime/exec/kv_selection.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr int64_t kRowsPerTask = 8;

void AddInPlace(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// x[r, :] += bias for r < n_rows (x: [n_rows, bias.size()]); no-op for an empty bias.
void AddBias(float* x, const std::vector<float>& bias, int64_t n_rows) {
  const auto d = static_cast<int64_t>(bias.size());
  for (int64_t r = 0; r < n_rows && d > 0; ++r) AddInPlace(x + r * d, bias.data(), d);
}

}  // namespace

const char* DeviceDtypeName(DeviceDtype t) {
  switch (t) {
    case DeviceDtype::kBf16:
      return "bf16";
    case DeviceDtype::kF16:
      return "f16";
    case DeviceDtype::kF32:
      break;
  }
  return "f32";
}

absl::StatusOr<DeviceDtype> ParseDeviceDtype(std::string_view name) {
  for (DeviceDtype t : {DeviceDtype::kF32, DeviceDtype::kBf16, DeviceDtype::kF16}) {
    if (name == DeviceDtypeName(t)) return t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device type '", std::string(name), "' (f32|bf16|f16)"));
}

absl::Status RunnerOptions::Validate() const {
  if (num_threads < 1 || num_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrFormat("threads must be in [1, 256], got %d", num_threads));
  }
  if (block_size < 1 || block_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrFormat("block size must be in [1, 1024], got %d", block_size));
  }
  if (kv_cache_bytes <= 0) return absl::InvalidArgumentError("KV cache size must be positive");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CpuModelRunner>> CpuModelRunner::Create(
    const ModelWeights& weights, const RunnerOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (options.device_weights != DeviceDtype::kF32 || options.kv_dtype != DeviceDtype::kF32) {
    return absl::InvalidArgumentError(
        "16-bit device weights and KV caches need the CUDA backend (the CPU backend reads the "
        "file's weight types and keeps an fp32 KV cache)");
  }
  const ModelConfig& c = weights.config();
  PagedKvGeometry g{options.block_size, c.num_kv_heads, c.head_dim};
  const int64_t block_bytes = g.BlockFloats() * int64_t{sizeof(float)};
  const int64_t num_blocks = options.kv_cache_bytes / block_bytes;
  if (num_blocks < 1 || num_blocks > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KV cache of %d bytes holds %d blocks of %d bytes; need at least one",
                        options.kv_cache_bytes, num_blocks, block_bytes));
  }
  return std::unique_ptr<CpuModelRunner>(
      new CpuModelRunner(weights, options, static_cast<int32_t>(num_blocks)));
}

CpuModelRunner::CpuModelRunner(const ModelWeights& weights, const RunnerOptions& options,
                               int32_t num_blocks)
    : weights_(weights),
      options_(options),
      geometry_{options.block_size, weights.config().num_kv_heads, weights.config().head_dim},
      pool_(num_blocks),
      // Uninitialized on purpose: pages are only touched when blocks are used.
      kv_storage_(new float[static_cast<size_t>(int64_t{num_blocks} * geometry_.BlockFloats())]),
      threads_(options.num_threads),
      matmul_workspace_(options.num_threads),
      attention_scratch_(static_cast<size_t>(options.num_threads)),
      select_scratch_(static_cast<size_t>(options.num_threads)) {
  // Parallelism comes from threads_; each OpenBLAS call runs inside one task.
  openblas_set_num_threads(1);
}

SequenceKv CpuModelRunner::NewSequence() const {
  return SequenceKv(weights_.config().num_layers, options_.block_size);
}

absl::Status CpuModelRunner::ReserveKv(std::span<const StepSequence> batch) {
  ASSIGN_OR_RETURN(plan_, PlanStep(batch, weights_.config().num_layers));
  return ReserveStepKv(batch, plan_, pool_, [this](BlockId from, BlockId to) {
    std::copy_n(block_data(from), geometry_.BlockFloats(), block_data(to));
    return absl::OkStatus();
  });
}

void CpuModelRunner::ParallelRows(int64_t rows, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  threads_.ParallelFor(tasks, [&](int64_t task, int) {
    const int64_t r0 = task * kRowsPerTask;
    fn(r0, std::min(rows, r0 + kRowsPerTask));
  });
}

absl::Status CpuModelRunner::Step(std::span<const StepSequence> batch, std::vector<float>& logits) {
  logits.clear();
  if (batch.empty()) return absl::OkStatus();
  compress_ms_ = 0.0;
  RETURN_IF_ERROR(ValidateStepBatch(batch, weights_.config(), options_.block_size));
  RETURN_IF_ERROR(ReserveKv(batch));

  const ModelConfig& c = weights_.config();
  row_offsets_.assign(1, 0);
  positions_.clear();
  for (const StepSequence& seq : batch) {
    const int64_t start = seq.kv->num_positions();
    for (size_t i = 0; i < seq.tokens.size(); ++i)
      positions_.push_back(static_cast<int32_t>(start + i));
    row_offsets_.push_back(row_offsets_.back() + static_cast<int64_t>(seq.tokens.size()));
  }
  num_rows_ = row_offsets_.back();
  const int64_t kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
  ws_offsets_.assign(batch.size(), 0);
  int64_t ws_floats = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    ws_offsets_[s] = ws_floats;
    if (Compressing(s)) ws_floats += plan_.budgets[s].prompt_tokens * kv_dim;
  }
  ws_keys_.resize(static_cast<size_t>(ws_floats));
  ws_values_.resize(static_cast<size_t>(ws_floats));
  const int64_t dim = c.dim;
  x_.resize(static_cast<size_t>(num_rows_ * dim));
  int64_t row = 0;
  for (const StepSequence& seq : batch) {
    for (int32_t id : seq.tokens) {
      const WeightMatrix& e = weights_.token_embedding();
      DequantizeRow(e.type, e.Row(id), x_.data() + row * dim, dim);
      ++row;
    }
  }
  for (int32_t l = 0; l < c.num_layers; ++l) RunLayer(l, batch);
  for (const StepSequence& seq : batch) {
    seq.kv->set_num_positions(seq.kv->num_positions() + static_cast<int64_t>(seq.tokens.size()));
  }
  ComputeLogits(batch, logits);
  return absl::OkStatus();
}

void CpuModelRunner::RunLayer(int32_t layer, std::span<const StepSequence> batch) {
  const ModelConfig& c = weights_.config();
  const LayerWeights& w = weights_.layer(layer);
  const int64_t n = num_rows_, dim = c.dim;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
  xn_.resize(static_cast<size_t>(n * std::max<int64_t>(dim, q_dim)));
  q_.resize(static_cast<size_t>(n * q_dim));
  k_.resize(static_cast<size_t>(n * kv_dim));
  v_.resize(static_cast<size_t>(n * kv_dim));
  attn_.resize(static_cast<size_t>(n * q_dim));
  gate_.resize(static_cast<size_t>(n * c.ffn_dim));
  up_.resize(static_cast<size_t>(n * c.ffn_dim));

  ParallelRows(n, [&](int64_t r0, int64_t r1) {
    RmsNorm(x_.data() + r0 * dim, w.attn_norm.data(), xn_.data() + r0 * dim, r1 - r0, dim,
            c.rms_norm_eps);
  });
  MatMul(w.wq, xn_.data(), n, q_.data(), threads_, matmul_workspace_);
  MatMul(w.wk, xn_.data(), n, k_.data(), threads_, matmul_workspace_);
  MatMul(w.wv, xn_.data(), n, v_.data(), threads_, matmul_workspace_);
  ParallelRows(n, [&](int64_t r0, int64_t r1) {
    AddBias(q_.data() + r0 * q_dim, w.bq, r1 - r0);
    AddBias(k_.data() + r0 * kv_dim, w.bk, r1 - r0);
    AddBias(v_.data() + r0 * kv_dim, w.bv, r1 - r0);
    const float* inv_freq = weights_.rope_inv_freq().data();
    ApplyRopeWithFrequencies(q_.data() + r0 * q_dim, positions_.data() + r0, r1 - r0, c.num_heads,
                             c.head_dim, c.rope_dim, inv_freq, c.rope_style);
    ApplyRopeWithFrequencies(k_.data() + r0 * kv_dim, positions_.data() + r0, r1 - r0,
                             c.num_kv_heads, c.head_dim, c.rope_dim, inv_freq, c.rope_style);
  });
  WriteKv(layer, batch);
  Attention(layer, batch);
  CompressLayer(layer, batch);
  MatMul(w.wo, attn_.data(), n, xn_.data(), threads_, matmul_workspace_);
  ParallelRows(n, [&](int64_t r0, int64_t r1) {
    AddInPlace(x_.data() + r0 * dim, xn_.data() + r0 * dim, (r1 - r0) * dim);
    RmsNorm(x_.data() + r0 * dim, w.ffn_norm.data(), xn_.data() + r0 * dim, r1 - r0, dim,
            c.rms_norm_eps);
  });
  MatMul(w.w_gate, xn_.data(), n, gate_.data(), threads_, matmul_workspace_);
  MatMul(w.w_up, xn_.data(), n, up_.data(), threads_, matmul_workspace_);
  ParallelRows(n, [&](int64_t r0, int64_t r1) {
    SwiGlu(gate_.data() + r0 * c.ffn_dim, up_.data() + r0 * c.ffn_dim,
           gate_.data() + r0 * c.ffn_dim, (r1 - r0) * c.ffn_dim);
  });
  MatMul(w.w_down, gate_.data(), n, xn_.data(), threads_, matmul_workspace_);
  ParallelRows(n, [&](int64_t r0, int64_t r1) {
    AddInPlace(x_.data() + r0 * dim, xn_.data() + r0 * dim, (r1 - r0) * dim);
  });
}

void CpuModelRunner::WriteKv(int32_t layer, std::span<const StepSequence> batch) {
  const PagedKvGeometry& g = geometry_;
  const int64_t kv_dim = g.num_kv_heads * g.head_dim;
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t n_new = row_offsets_[s + 1] - row_offsets_[s];
    std::span<const BlockId> table = batch[s].kv->block_table(layer);
    const int64_t base = plan_.base_length(s, layer);
    if (Compressing(s)) {  // the whole prompt's K/V to the workspace, [kv_heads][n][head_dim]
      const int64_t n = plan_.budgets[s].prompt_tokens;
      for (int64_t i = 0; i < base; ++i) {  // earlier chunks, from the pool
        const float* block = block_data(table[static_cast<size_t>(i / g.block_size)]);
        const int64_t slot = i % g.block_size;
        for (int64_t h = 0; h < g.num_kv_heads; ++h) {
          const int64_t at = ws_offsets_[s] + (h * n + i) * g.head_dim;
          std::copy_n(block + g.KOffset(h, slot), g.head_dim, ws_keys_.data() + at);
          std::copy_n(block + g.VOffset(h, slot), g.head_dim, ws_values_.data() + at);
        }
      }
      for (int64_t i = 0; i < n_new; ++i) {
        const int64_t r = row_offsets_[s] + i;
        for (int64_t h = 0; h < g.num_kv_heads; ++h) {
          const int64_t at = ws_offsets_[s] + (h * n + base + i) * g.head_dim;
          std::copy_n(k_.data() + r * kv_dim + h * g.head_dim, g.head_dim, ws_keys_.data() + at);
          std::copy_n(v_.data() + r * kv_dim + h * g.head_dim, g.head_dim, ws_values_.data() + at);
        }
      }
      continue;
    }
    for (int64_t i = 0; i < row_offsets_[s + 1] - row_offsets_[s]; ++i) {
      const int64_t entry = base + i;
      float* block = block_data(table[static_cast<size_t>(entry / g.block_size)]);
      const int64_t slot = entry % g.block_size;
      const int64_t r = row_offsets_[s] + i;
      for (int64_t h = 0; h < g.num_kv_heads; ++h) {
        std::copy_n(k_.data() + r * kv_dim + h * g.head_dim, g.head_dim,
                    block + g.KOffset(h, slot));
        std::copy_n(v_.data() + r * kv_dim + h * g.head_dim, g.head_dim,
                    block + g.VOffset(h, slot));
      }
    }
  }
}

void CpuModelRunner::Attention(int32_t layer, std::span<const StepSequence> batch) {
  const ModelConfig& c = weights_.config();
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv_heads = c.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  threads_.ParallelFor(
      static_cast<int64_t>(batch.size()) * kv_heads, [&](int64_t task, int thread) {
        const size_t s = static_cast<size_t>(task / kv_heads);
        const int64_t n_q = row_offsets_[s + 1] - row_offsets_[s];
        PagedAttentionArgs args;
        args.q = q_.data() + row_offsets_[s] * q_dim;
        args.out = attn_.data() + row_offsets_[s] * q_dim;
        args.n_q = n_q;
        args.num_heads = c.num_heads;
        args.pool = kv_storage_.get();
        args.geometry = geometry_;
        args.block_table = batch[s].kv->block_table(layer).data();
        args.kv_len = plan_.base_length(s, layer) + n_q;
        args.scale = scale;
        const int64_t kv_head = task % kv_heads;
        AttentionScratch& scratch = attention_scratch_[static_cast<size_t>(thread)];
        if (Compressing(s)) {
          const int64_t at = ws_offsets_[s] + kv_head * plan_.budgets[s].prompt_tokens * c.head_dim;
          ContiguousAttentionKvHead(args, kv_head, ws_keys_.data() + at, ws_values_.data() + at,
                                    scratch);
        } else {
          PagedAttentionKvHead(args, kv_head, scratch);
        }
      });
}

void CpuModelRunner::CompressLayer(int32_t layer, std::span<const StepSequence> batch) {
  if (!plan_.any_compressing()) return;
  const auto t0 = std::chrono::steady_clock::now();
  absl::Cleanup timing = [&] {
    compress_ms_ +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  const ModelConfig& c = weights_.config();
  const PagedKvGeometry& g = geometry_;
  const int64_t kv_heads = c.num_kv_heads, d = c.head_dim;
  const int64_t q_stride = int64_t{c.num_heads} * d;
  threads_.ParallelFor(
      static_cast<int64_t>(batch.size()) * kv_heads, [&](int64_t task, int thread) {
        const size_t s = static_cast<size_t>(task / kv_heads);
        if (!Compressing(s)) return;
        const int64_t kv_head = task % kv_heads;
        const LayerBudgets& b = plan_.budgets[s];
        const int64_t n = b.prompt_tokens, w = b.window;
        const int64_t at = ws_offsets_[s] + kv_head * n * d;
        const float* keys = ws_keys_.data() + at;
        const float* values = ws_values_.data() + at;
        SelectionInput in;
        in.method = batch[s].policy->method;
        in.pooling = batch[s].policy->pooling;
        in.kernel = batch[s].policy->kernel;
        in.q = q_.data() + row_offsets_[s] * q_stride;
        in.q_rows = row_offsets_[s + 1] - row_offsets_[s];
        in.keys = keys;
        in.n = n;
        in.num_heads = c.num_heads;
        in.num_kv_heads = kv_heads;
        in.head_dim = d;
        in.window = w;
        in.selected = b.selected[static_cast<size_t>(layer)];
        const std::vector<int32_t> kept =
            SelectKeptIndices(in, kv_head, select_scratch_[static_cast<size_t>(thread)]);
        std::span<const BlockId> table = batch[s].kv->block_table(layer);
        for (size_t e = 0; e < kept.size(); ++e) {
          float* block = block_data(table[e / static_cast<size_t>(g.block_size)]);
          const int64_t slot = static_cast<int64_t>(e) % g.block_size;
          std::copy_n(keys + int64_t{kept[e]} * d, d, block + g.KOffset(kv_head, slot));
          std::copy_n(values + int64_t{kept[e]} * d, d, block + g.VOffset(kv_head, slot));
        }
      });
  // A prompt written in chunks held its full K/V in the pool until now.
  for (size_t s = 0; s < batch.size(); ++s) {
    if (Compressing(s)) batch[s].kv->Truncate(pool_, layer, plan_.budgets[s].stored(layer));
  }
}

void CpuModelRunner::ComputeLogits(std::span<const StepSequence> batch,
                                   std::vector<float>& logits) {
  const ModelConfig& c = weights_.config();
  const int64_t dim = c.dim;
  // Gather the rows that need logits into xn_, normalized.
  int64_t out_rows = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t first = batch[s].all_logits ? row_offsets_[s] : row_offsets_[s + 1] - 1;
    for (int64_t r = first; r < row_offsets_[s + 1]; ++r) {
      RmsNorm(x_.data() + r * dim, weights_.output_norm().data(), xn_.data() + out_rows * dim, 1,
              dim, c.rms_norm_eps);
      ++out_rows;
    }
  }
  logits.resize(static_cast<size_t>(out_rows * c.vocab_size));
  MatMul(weights_.output(), xn_.data(), out_rows, logits.data(), threads_, matmul_workspace_);
}

absl::Status CpuModelRunner::ExportLayer(const SequenceKv& kv, int32_t layer,
                                         std::vector<float>& out) {
  const PagedKvGeometry& g = geometry_;
  std::span<const BlockId> table = kv.block_table(layer);
  for (int64_t e = 0; e < kv.layer_length(layer); ++e) {
    const float* block = block_data(table[static_cast<size_t>(e / g.block_size)]);
    const int64_t slot = e % g.block_size;
    g.AppendEntry(block, slot, out);
  }
  return absl::OkStatus();
}

absl::StatusOr<SequenceKv> CpuModelRunner::ImportSequence(
    std::span<const std::vector<float>> layers, int64_t num_positions) {
  ASSIGN_OR_RETURN(const std::vector<int64_t> lengths, ImportedLengths(layers, num_positions));
  ASSIGN_OR_RETURN(SequenceKv kv,
                   SequenceKv::Allocate(pool_, options_.block_size, lengths, num_positions));
  const PagedKvGeometry& g = geometry_;
  for (int32_t l = 0; l < kv.num_layers(); ++l) {
    std::span<const BlockId> table = kv.block_table(l);
    const float* in = layers[static_cast<size_t>(l)].data();
    for (int64_t e = 0; e < lengths[static_cast<size_t>(l)]; ++e) {
      float* block = block_data(table[static_cast<size_t>(e / g.block_size)]);
      const int64_t slot = e % g.block_size;
      for (int64_t h = 0; h < g.num_kv_heads; ++h, in += g.head_dim) {
        std::copy_n(in, g.head_dim, block + g.KOffset(h, slot));
      }
      for (int64_t h = 0; h < g.num_kv_heads; ++h, in += g.head_dim) {
        std::copy_n(in, g.head_dim, block + g.VOffset(h, slot));
      }
    }
  }
  return kv;
}

}  // namespace funnel
