// The CUDA backend end to end: stories260K against llama2.c's golden logits, and against the CPU
// backend (the reference) for compression (the same kept entries per layer and KV head, then the
// same logits), batches mixing prefill and decode, session suffixes over compressed caches,
// copy-on-write forks, durable export/import, other weight types, 16-bit device weights and KV
// caches, random weights made on the device, and HF models with q/k/v biases and llama3 RoPE
// scaling. Label gpu: every case skips without a device, except the factory case, which then
// checks the refusal.
#include "runtime/exec/cuda_model_runner.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/exec/model_runner_factory.h"
#include "runtime/model/hf_converter.h"
#include "runtime/model/random_model.h"
#include "runtime/model/safetensors_file.h"
#include "runtime/model/safetensors_writer.h"
#include "tests/testing/golden.h"
#include "tests/testing/gpu_test.h"

namespace funnel {
namespace {

constexpr float kTolerance = 1e-3f;  // logits vs golden and vs the CPU (the CPU golden test's)
constexpr size_t kVocab = 512;

float MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const float d = std::fabs(a[i] - b[i]);
    if (!(d <= m)) m = std::isnan(d) ? std::numeric_limits<float>::infinity() : d;
  }
  return m;
}

int32_t Argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Runs one sequence's step; logits of the requested rows (empty on failure, reported).
std::vector<float> StepOne(ModelRunner& runner, SequenceKv& kv, std::span<const int32_t> tokens,
                           bool all_logits = false, const KvPolicy* policy = nullptr) {
  std::vector<float> logits;
  StepSequence s{&kv, tokens, all_logits, policy};
  absl::Status st = runner.Step({&s, 1}, logits);
  EXPECT_TRUE(st.ok()) << st;
  return logits;
}

std::vector<std::vector<float>> ExportAll(ModelRunner& runner, const SequenceKv& kv) {
  std::vector<std::vector<float>> layers(static_cast<size_t>(kv.num_layers()));
  for (int32_t l = 0; l < kv.num_layers(); ++l) {
    absl::Status st = runner.ExportLayer(kv, l, layers[static_cast<size_t>(l)]);
    EXPECT_TRUE(st.ok()) << st;
  }
  return layers;
}

// The prompt position of every entry of an exported layer ([entries][2][kv_heads][head_dim]), per
// KV head: the index of the nearest key row in `full` (the uncompressed cache of the same prompt).
// *worst gets the largest match distance (small when every entry is a real match).
std::vector<std::vector<int32_t>> KeptPositions(const std::vector<float>& layer,
                                                const std::vector<float>& full, int64_t kv_heads,
                                                int64_t d, float* worst) {
  const int64_t entry = 2 * kv_heads * d;
  const int64_t n = static_cast<int64_t>(layer.size()) / entry;
  const int64_t full_n = static_cast<int64_t>(full.size()) / entry;
  std::vector<std::vector<int32_t>> kept(static_cast<size_t>(kv_heads));
  for (int64_t h = 0; h < kv_heads; ++h) {
    for (int64_t e = 0; e < n; ++e) {
      const float* k = layer.data() + e * entry + h * d;
      float best = std::numeric_limits<float>::infinity();
      int32_t at = -1;
      for (int64_t j = 0; j < full_n; ++j) {
        const float* f = full.data() + j * entry + h * d;
        float dist = 0.0f;
        for (int64_t x = 0; x < d; ++x) dist += (k[x] - f[x]) * (k[x] - f[x]);
        if (dist < best) {
          best = dist;
          at = static_cast<int32_t>(j);
        }
      }
      kept[static_cast<size_t>(h)].push_back(at);
      *worst = std::max(*worst, std::sqrt(best));
    }
  }
  return kept;
}

class CudaRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FUNNEL_SKIP_WITHOUT_GPU();
    auto w = ModelWeights::Open(::funnel::testing::Stories260KPath());
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = std::move(*w);
    golden_ = ::funnel::testing::LoadStories260KGolden();
    ASSERT_EQ(golden_.logits.size(), 48u);
  }

  static RunnerOptions Options(int32_t block_size, int64_t kv_bytes) {
    RunnerOptions o;
    o.num_threads = 2;
    o.block_size = block_size;
    o.kv_cache_bytes = kv_bytes;
    return o;
  }
  std::unique_ptr<CudaModelRunner> Cuda(int32_t block_size = 16,
                                        int64_t kv_bytes = int64_t{64} << 20) {
    auto r = CudaModelRunner::Create(*weights_, Options(block_size, kv_bytes));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(*r) : nullptr;
  }
  std::unique_ptr<CpuModelRunner> Cpu(int32_t block_size = 16) {
    auto r = CpuModelRunner::Create(*weights_, Options(block_size, int64_t{64} << 20));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(*r) : nullptr;
  }
  float GoldenDiff(std::span<const float> ours, int64_t pos) const {
    return MaxAbsDiff(ours, golden_.logits[static_cast<size_t>(pos)]);
  }
  std::span<const int32_t> Fed() const {
    return std::span<const int32_t>(golden_.full_sequence).first(48);
  }
  // BOS, then a deterministic walk over the vocabulary.
  static std::vector<int32_t> Synthetic(int64_t n) {
    std::vector<int32_t> ids = {1};
    for (int64_t i = 1; i < n; ++i) ids.push_back(static_cast<int32_t>((i * 37 + 11) % 509 + 3));
    return ids;
  }

  std::unique_ptr<ModelWeights> weights_;
  ::funnel::testing::GoldenRun golden_;
};

// ---- Golden ----------------------------------------------------------------------------------

TEST_F(CudaRunnerTest, PrefillMatchesGoldenLogitsAtEveryPosition) {
  for (int32_t block_size : {1, 5, 16}) {
    auto runner = Cuda(block_size);
    ASSERT_NE(runner, nullptr);
    SequenceKv kv = runner->NewSequence();
    const std::vector<float> logits = StepOne(*runner, kv, Fed(), true);
    ASSERT_EQ(logits.size(), 48 * kVocab);
    for (int64_t p = 0; p < 48; ++p) {
      std::span<const float> row(logits.data() + p * kVocab, kVocab);
      EXPECT_LT(GoldenDiff(row, p), kTolerance) << "position " << p << " block " << block_size;
      EXPECT_EQ(Argmax(row), golden_.full_sequence[static_cast<size_t>(p + 1)]) << p;
    }
    runner->Release(kv);
    EXPECT_EQ(runner->pool().num_free(), runner->pool().num_blocks());
  }
}

// ---- 16-bit storage ----------------------------------------------------------------------------

struct StorageCase {
  DeviceDtype weights, kv;
  float max_diff, mean_diff;  // bounds on |logit - golden| at any position, and on average
};

// 16-bit weights (each product's input rounded to the same format, fp32 accumulation) and 16-bit
// KV caches (K and V rounded once, when written) against the fp32 golden run, prefill (all 48
// rows) and decode (positions 4 to 47 one by one, after the 4-token prompt).
// tools/device/emulate_rounding.py (PyTorch, exactly this rounding) gives max |diff|, mean |diff|
// and argmax agreement with the golden next token: bf16 weights 0.111 / 0.0201 / 48 of 48, f16
// weights 0.0127 / 0.0023 / 48, bf16 KV 0.122 / 0.0137 / 48, f16 KV 0.0136 / 0.0017 / 48, both bf16
// 0.133 / 0.0238 / 48, both f16 0.0162 / 0.0031 / 48. The bounds leave about 4x room and allow two
// near-tie flips.
TEST_F(CudaRunnerTest, SixteenBitStorageStaysCloseToTheGoldenRun) {
  using T = DeviceDtype;
  const StorageCase cases[] = {
      {T::kBf16, T::kF32, 0.5f, 0.08f}, {T::kF16, T::kF32, 0.06f, 0.01f},
      {T::kF32, T::kBf16, 0.5f, 0.06f}, {T::kF32, T::kF16, 0.06f, 0.008f},
      {T::kBf16, T::kBf16, 0.6f, 0.1f}, {T::kF16, T::kF16, 0.07f, 0.013f},
  };
  for (const StorageCase& c : cases) {
    const std::string what =
        absl::StrCat("weights ", DeviceDtypeName(c.weights), ", kv ", DeviceDtypeName(c.kv));
    RunnerOptions o = Options(16, int64_t{64} << 20);
    o.device_weights = c.weights;
    o.kv_dtype = c.kv;
    auto runner = CudaModelRunner::Create(*weights_, o);
    ASSERT_TRUE(runner.ok()) << runner.status();
    for (bool decode : {false, true}) {
      SequenceKv kv = (*runner)->NewSequence();
      std::vector<float> logits;
      int64_t first = 0;
      if (decode) {
        first = 3;  // the prompt's last row, then one decode step per position
        logits = StepOne(**runner, kv, Fed().first(4));
        for (int64_t p = 4; p < 48; ++p) {
          const std::vector<float> row = StepOne(**runner, kv, Fed().subspan(p, 1));
          logits.insert(logits.end(), row.begin(), row.end());
        }
      } else {
        logits = StepOne(**runner, kv, Fed(), true);
      }
      ASSERT_EQ(logits.size(), (48 - first) * kVocab) << what;
      double sum = 0.0;
      int agree = 0;
      for (int64_t p = first; p < 48; ++p) {
        std::span<const float> row(logits.data() + (p - first) * kVocab, kVocab);
        EXPECT_LT(GoldenDiff(row, p), c.max_diff) << what << " position " << p;
        const auto& ref = golden_.logits[static_cast<size_t>(p)];
        for (size_t i = 0; i < kVocab; ++i) sum += std::fabs(row[i] - ref[i]);
        agree += Argmax(row) == golden_.full_sequence[static_cast<size_t>(p + 1)];
      }
      EXPECT_LT(sum / ((48.0 - first) * kVocab), c.mean_diff) << what;
      EXPECT_GE(agree, 46 - first) << what << (decode ? " decode" : " prefill");
      (*runner)->Release(kv);
    }
  }
}

// A 16-bit KV cache: twice the blocks in the same bytes; every stored value is a value of the
// format; layer 0's are within one rounding step of the CPU's fp32 cache, and later layers' (whose
// inputs went through attention over rounded K/V) within 8 rounding steps of the layer's RMS
// (tools/device/emulate_rounding.py's arithmetic on this prompt: worst 0.021 RMS for bf16, 0.0031
// for f16, against bounds of 0.0625 and 0.0078); a chunked compressing prefill
// (its first chunk read back from the 16-bit pool) keeps as many entries per layer as the CPU and
// stays within the golden tolerance of the format; export widens and import rounds bit-exactly.
TEST_F(CudaRunnerTest, SixteenBitKvCacheHoldsRoundedEntries) {
  for (DeviceDtype t : {DeviceDtype::kBf16, DeviceDtype::kF16}) {
    const cuda::Dtype dt = t == DeviceDtype::kBf16 ? cuda::Dtype::kBf16 : cuda::Dtype::kF16;
    const float rel = t == DeviceDtype::kBf16 ? 1.0f / 128 : 1.0f / 1024;  // one rounding step
    const float logit_tol = t == DeviceDtype::kBf16 ? 0.5f : 0.06f;
    RunnerOptions o = Options(5, int64_t{64} << 20);
    o.kv_dtype = t;
    auto made = CudaModelRunner::Create(*weights_, o);
    ASSERT_TRUE(made.ok()) << made.status();
    CudaModelRunner& gpu = **made;
    auto gpu32 = Cuda(5);
    auto cpu = Cpu(5);
    ASSERT_TRUE(gpu32 && cpu);
    EXPECT_EQ(gpu.block_bytes() * 2, gpu32->block_bytes());
    EXPECT_GE(gpu.pool().num_blocks(), 2 * gpu32->pool().num_blocks());

    const std::vector<int32_t> prompt = Synthetic(60);
    SequenceKv g = gpu.NewSequence(), c = cpu->NewSequence();
    StepOne(gpu, g, prompt);
    StepOne(*cpu, c, prompt);
    const auto ge = ExportAll(gpu, g), ce = ExportAll(*cpu, c);
    for (size_t l = 0; l < ge.size(); ++l) {
      ASSERT_EQ(ge[l].size(), ce[l].size());
      double square = 0.0;
      for (float x : ce[l]) square += double{x} * x;
      const float rms = static_cast<float>(std::sqrt(square / static_cast<double>(ce[l].size())));
      for (size_t i = 0; i < ge[l].size(); ++i) {
        ASSERT_EQ(cuda::HostWiden(cuda::HostNarrow(ge[l][i], dt), dt), ge[l][i]) << i;
        const float bound = l == 0 ? rel * std::fabs(ce[l][i]) + 1e-4f : 8 * rel * rms;
        ASSERT_NEAR(ge[l][i], ce[l][i], bound) << "layer " << l;
      }
    }
    // Export, import into a fresh sequence: bit-exact, and it decodes as the original.
    auto imported = gpu.ImportSequence(ge, g.num_positions());
    ASSERT_TRUE(imported.ok()) << imported.status();
    EXPECT_EQ(ExportAll(gpu, *imported), ge);
    const int32_t next = 42;
    EXPECT_LT(MaxAbsDiff(StepOne(gpu, *imported, {&next, 1}), StepOne(gpu, g, {&next, 1})), 1e-5f);

    KvPolicy pyramid;
    pyramid.method = KvMethod::kPyramidKv;
    pyramid.budget = 20;
    SequenceKv gc = gpu.NewSequence(), cc = cpu->NewSequence();
    std::span<const int32_t> all(prompt);
    StepOne(gpu, gc, all.first(40));
    StepOne(*cpu, cc, all.first(40));
    const std::vector<float> gl = StepOne(gpu, gc, all.last(20), false, &pyramid);
    const std::vector<float> cl = StepOne(*cpu, cc, all.last(20), false, &pyramid);
    EXPECT_LT(MaxAbsDiff(gl, cl), logit_tol) << DeviceDtypeName(t);
    for (int32_t l = 0; l < gc.num_layers(); ++l) {
      EXPECT_EQ(gc.layer_length(l), cc.layer_length(l)) << "layer " << l;
    }
    EXPECT_LT(MaxAbsDiff(StepOne(gpu, gc, {&next, 1}), StepOne(*cpu, cc, {&next, 1})), logit_tol);
    for (SequenceKv* kv : {&g, &*imported, &gc}) gpu.Release(*kv);
    cpu->Release(c);
    cpu->Release(cc);
    EXPECT_EQ(gpu.pool().num_free(), gpu.pool().num_blocks());
  }
}

TEST_F(CudaRunnerTest, DecodeStepsReproduceGreedyIdsAndLogits) {
  auto runner = Cuda(16);
  ASSERT_NE(runner, nullptr);
  SequenceKv kv = runner->NewSequence();
  std::vector<float> logits = StepOne(*runner, kv, golden_.prompt_ids);
  for (int64_t pos = 4; pos < 48; ++pos) {
    EXPECT_LT(GoldenDiff(logits, pos), kTolerance) << pos;
    ASSERT_EQ(Argmax(logits), golden_.full_sequence[static_cast<size_t>(pos + 1)]) << pos;
    if (pos == 47) break;
    logits = StepOne(*runner, kv, {&golden_.full_sequence[static_cast<size_t>(pos + 1)], 1});
  }
  EXPECT_EQ(kv.num_positions(), 48);
  runner->Release(kv);
}

// ---- Batches -----------------------------------------------------------------------------------

// The golden sequence decoded while other sequences join (prefills of 1, 3 and 21 tokens), decode,
// and a fork of one of them decodes the same tokens (copy-on-write of a shared partial block):
// batches of 1 to 5 sequences mixing prefill and decode equal the golden run, and each other
// sequence equals the same sequence run alone.
TEST_F(CudaRunnerTest, BatchedStepsEqualSoloSteps) {
  auto runner = Cuda(5);
  auto solo = Cuda(5);
  ASSERT_TRUE(runner && solo);
  const std::vector<std::vector<int32_t>> prompts = {{1, 20, 30}, Synthetic(21), {1}};
  SequenceKv golden_kv = runner->NewSequence();
  std::vector<SequenceKv> others, alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    others.push_back(runner->NewSequence());
    alone.push_back(solo->NewSequence());
  }
  std::vector<SequenceKv> forks;  // forks[0] shares others[1] from its prefill on
  std::vector<int32_t> next(prompts.size(), 0);
  for (int64_t pos = 4; pos < 30; ++pos) {
    std::vector<StepSequence> batch;
    std::vector<std::vector<float>> expected;  // per batch entry, from `solo`
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (others[i].num_positions() == 0 && static_cast<size_t>(pos - 4) % 3 != i) continue;
      std::span<const int32_t> tokens = others[i].num_positions() == 0
                                            ? std::span<const int32_t>(prompts[i])
                                            : std::span<const int32_t>(&next[i], 1);
      batch.push_back({&others[i], tokens, false});
      expected.push_back(StepOne(*solo, alone[i], tokens));
      if (i == 1 && !forks.empty()) {
        batch.push_back({&forks[0], tokens, false});
        expected.push_back(expected.back());
      }
    }
    const std::span<const int32_t> mine =
        pos == 4 ? std::span<const int32_t>(golden_.prompt_ids)
                 : std::span<const int32_t>(&golden_.full_sequence[static_cast<size_t>(pos)], 1);
    batch.push_back({&golden_kv, mine, false});
    std::vector<float> logits;
    ASSERT_TRUE(runner->Step(batch, logits).ok());
    ASSERT_EQ(logits.size(), batch.size() * kVocab);
    std::span<const float> golden_row(logits.data() + (batch.size() - 1) * kVocab, kVocab);
    EXPECT_LT(GoldenDiff(golden_row, pos), kTolerance) << pos;
    EXPECT_EQ(Argmax(golden_row), golden_.full_sequence[static_cast<size_t>(pos + 1)]) << pos;
    for (size_t b = 0; b + 1 < batch.size(); ++b) {
      std::span<const float> row(logits.data() + b * kVocab, kVocab);
      EXPECT_LT(MaxAbsDiff(row, expected[b]), 1e-4f) << "position " << pos << " entry " << b;
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      for (size_t b = 0; b + 1 < batch.size(); ++b) {
        if (batch[b].kv == &others[i]) next[i] = Argmax({logits.data() + b * kVocab, kVocab});
      }
    }
    if (forks.empty() && others[1].num_positions() > 0)
      forks.push_back(others[1].Fork(runner->pool()));
  }
  runner->Release(golden_kv);
  for (auto& kv : others) runner->Release(kv);
  for (auto& kv : forks) runner->Release(kv);
  for (auto& kv : alone) solo->Release(kv);
  EXPECT_EQ(runner->pool().num_free(), runner->pool().num_blocks());
}

// A batch of three on the CUDA and CPU backends alike: a decode, a fresh prefill with every
// row's logits, and a 4-token suffix over a compressed cache.
TEST_F(CudaRunnerTest, MixedBatchOfThreeMatchesCpu) {
  auto gpu = Cuda(16);
  auto cpu = Cpu(16);
  ASSERT_TRUE(gpu && cpu);
  KvPolicy snap;
  snap.method = KvMethod::kSnapKv;
  snap.budget = 16;
  const std::vector<int32_t> long_prompt = Synthetic(40), suffix = {5, 77, 300, 2};
  const std::vector<int32_t> fresh = {1, 400, 401, 402, 403, 404, 405};
  std::vector<std::vector<float>> results;
  for (ModelRunner* r :
       {static_cast<ModelRunner*>(gpu.get()), static_cast<ModelRunner*>(cpu.get())}) {
    SequenceKv a = r->NewSequence(), b = r->NewSequence(), c = r->NewSequence();
    StepOne(*r, a, std::span<const int32_t>(golden_.prompt_ids));
    StepOne(*r, c, long_prompt, false, &snap);
    const int32_t next = golden_.full_sequence[5];
    std::vector<StepSequence> batch = {
        {&a, {&next, 1}, false}, {&b, fresh, true}, {&c, suffix, true}};
    std::vector<float> logits;
    ASSERT_TRUE(r->Step(batch, logits).ok());
    ASSERT_EQ(logits.size(), (1 + fresh.size() + suffix.size()) * kVocab);
    results.push_back(logits);
    for (SequenceKv* kv : {&a, &b, &c}) r->Release(*kv);
  }
  EXPECT_LT(MaxAbsDiff(results[0], results[1]), kTolerance);
  EXPECT_LT(GoldenDiff({results[0].data(), kVocab}, 5), kTolerance);
}

// ---- Compression -------------------------------------------------------------------------------

struct CompressionCase {
  KvMethod method;
  int64_t budget;
  KvPooling pooling;
  bool chunked;  // the prompt's first part in an earlier step without a policy
};

class CudaCompressionTest : public CudaRunnerTest {
 protected:
  // Prefills `prompt` under `policy` (in two steps when chunked); logits of the last row.
  static std::vector<float> Prefill(ModelRunner& r, SequenceKv& kv,
                                    const std::vector<int32_t>& prompt, const KvPolicy& policy,
                                    bool chunked) {
    const size_t tail = chunked ? std::max<size_t>(9, prompt.size() / 3) : prompt.size();
    std::span<const int32_t> all(prompt);
    if (tail < prompt.size()) StepOne(r, kv, all.first(prompt.size() - tail));
    return StepOne(r, kv, all.last(tail), false, &policy);
  }

  // CUDA vs CPU: logits after the compressing prefill, per-layer lengths, kept positions per layer
  // and KV head (derived from the exported keys), the exported K/V, then a decode step and a
  // 5-token suffix over the compressed cache.
  void Check(const std::vector<int32_t>& prompt, const CompressionCase& c) {
    const std::string what =
        absl::StrCat(KvMethodName(c.method), " B=", c.budget, " N=", prompt.size(),
                     c.chunked ? " chunked" : "", c.pooling == KvPooling::kAvg ? " avg" : "");
    KvPolicy policy;
    policy.method = c.method;
    policy.budget = c.budget;
    policy.pooling = c.pooling;
    auto gpu = Cuda(5);
    auto cpu = Cpu(5);
    ASSERT_TRUE(gpu && cpu);
    SequenceKv g = gpu->NewSequence(), k = cpu->NewSequence(), full = cpu->NewSequence();
    const std::vector<float> gl = Prefill(*gpu, g, prompt, policy, c.chunked);
    const std::vector<float> cl = Prefill(*cpu, k, prompt, policy, c.chunked);
    StepOne(*cpu, full, prompt);
    EXPECT_LT(MaxAbsDiff(gl, cl), kTolerance) << what;
    const auto ge = ExportAll(*gpu, g), ce = ExportAll(*cpu, k), fe = ExportAll(*cpu, full);
    const ModelConfig& mc = weights_->config();
    for (int32_t l = 0; l < mc.num_layers; ++l) {
      ASSERT_EQ(g.layer_length(l), k.layer_length(l)) << what << " layer " << l;
      float gpu_worst = 0.0f, cpu_worst = 0.0f;
      const size_t li = static_cast<size_t>(l);
      const auto gk = KeptPositions(ge[li], fe[li], mc.num_kv_heads, mc.head_dim, &gpu_worst);
      const auto ck = KeptPositions(ce[li], fe[li], mc.num_kv_heads, mc.head_dim, &cpu_worst);
      EXPECT_EQ(gk, ck) << what << " layer " << l;
      EXPECT_LT(gpu_worst, kTolerance) << what << " layer " << l;
      EXPECT_LT(cpu_worst, kTolerance) << what << " layer " << l;
      EXPECT_LT(MaxAbsDiff(ge[li], ce[li]), kTolerance) << what << " layer " << l;
    }
    const int32_t next = Argmax(cl);
    EXPECT_LT(MaxAbsDiff(StepOne(*gpu, g, {&next, 1}), StepOne(*cpu, k, {&next, 1})), kTolerance)
        << what << " decode";
    const std::vector<int32_t> suffix = {17, 250, 3, 499, 64};
    EXPECT_LT(MaxAbsDiff(StepOne(*gpu, g, suffix, true), StepOne(*cpu, k, suffix, true)),
              kTolerance)
        << what << " suffix";
    gpu->Release(g);
    cpu->Release(k);
    cpu->Release(full);
    EXPECT_EQ(gpu->pool().num_free(), gpu->pool().num_blocks()) << what;
  }
};

TEST_F(CudaCompressionTest, KeepsTheCpuEntriesAndLogits) {
  const std::vector<int32_t> golden(golden_.full_sequence.begin(),
                                    golden_.full_sequence.begin() + 48);
  for (const std::vector<int32_t>& prompt : {golden, Synthetic(150)}) {
    const int64_t n = static_cast<int64_t>(prompt.size());
    for (KvMethod m : {KvMethod::kPyramidKv, KvMethod::kSnapKv, KvMethod::kStreamingLlm}) {
      // Budgets below the prompt (small, medium, k = N - W), at it, and above it (no compression).
      for (int64_t budget : {int64_t{12}, n / 2 + 1, n, n + 16}) {
        for (bool chunked : {false, true}) {
          Check(prompt, {m, budget, KvPooling::kMax, chunked});
        }
      }
    }
    // h2o scores every prompt query, so its prompt is never chunked.
    for (int64_t budget : {int64_t{12}, n / 2 + 1, n + 16}) {
      Check(prompt, {KvMethod::kH2o, budget, KvPooling::kMax, false});
    }
    Check(prompt, {KvMethod::kPyramidKv, n / 3, KvPooling::kAvg, false});
    Check(prompt, {KvMethod::kSnapKv, n / 3, KvPooling::kAvg, true});
  }
}

// ---- Persistence -------------------------------------------------------------------------------

TEST_F(CudaRunnerTest, ExportImportRoundTrip) {
  auto gpu = Cuda(5);
  auto other = Cuda(16);  // another block size: the export format is independent of it
  auto cpu = Cpu(5);
  ASSERT_TRUE(gpu && other && cpu);
  KvPolicy pyramid;
  pyramid.method = KvMethod::kPyramidKv;
  pyramid.budget = 20;
  const std::vector<int32_t> prompt = Synthetic(60);
  SequenceKv g = gpu->NewSequence(), c = cpu->NewSequence();
  StepOne(*gpu, g, prompt, false, &pyramid);
  StepOne(*cpu, c, prompt, false, &pyramid);
  const auto ge = ExportAll(*gpu, g), ce = ExportAll(*cpu, c);
  for (size_t l = 0; l < ge.size(); ++l) {
    ASSERT_EQ(ge[l].size(), ce[l].size()) << l;
    EXPECT_LT(MaxAbsDiff(ge[l], ce[l]), kTolerance) << l;
  }
  auto imported = other->ImportSequence(ge, g.num_positions());
  ASSERT_TRUE(imported.ok()) << imported.status();
  auto from_cpu = other->ImportSequence(ce, c.num_positions());
  ASSERT_TRUE(from_cpu.ok()) << from_cpu.status();
  EXPECT_EQ(ExportAll(*other, *imported), ge);  // bit-exact round trip
  const int32_t next = 42;
  const std::vector<float> reference = StepOne(*gpu, g, {&next, 1});
  EXPECT_LT(MaxAbsDiff(StepOne(*other, *imported, {&next, 1}), reference), 1e-5f);
  EXPECT_LT(MaxAbsDiff(StepOne(*other, *from_cpu, {&next, 1}), StepOne(*cpu, c, {&next, 1})),
            kTolerance);
  // Shapes that do not fit this model.
  std::vector<std::vector<float>> bad = ge;
  bad[0].push_back(1.0f);
  EXPECT_EQ(other->ImportSequence(bad, g.num_positions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad.pop_back();
  EXPECT_EQ(other->ImportSequence(bad, g.num_positions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  gpu->Release(g);
  cpu->Release(c);
  other->Release(*imported);
  other->Release(*from_cpu);
  EXPECT_EQ(other->pool().num_free(), other->pool().num_blocks());
}

// ---- Errors ------------------------------------------------------------------------------------

TEST_F(CudaRunnerTest, RequestErrorsChangeNothing) {
  // 48 tokens * 5 layers at block size 16 need 15 blocks; give 10.
  auto gpu = Cuda(16, 10 * 2 * 4 * 16 * 8 * 4);
  ASSERT_NE(gpu, nullptr);
  ASSERT_EQ(gpu->pool().num_blocks(), 10);
  SequenceKv kv = gpu->NewSequence();
  std::vector<float> logits;
  StepSequence s{&kv, Fed(), false};
  EXPECT_EQ(gpu->Step({&s, 1}, logits).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(gpu->pool().num_free(), 10);
  EXPECT_EQ(kv.num_positions(), 0);
  const int32_t bad[] = {1, 512};
  s.tokens = bad;
  EXPECT_EQ(gpu->Step({&s, 1}, logits).code(), absl::StatusCode::kInvalidArgument);
  s.tokens = {};
  EXPECT_EQ(gpu->Step({&s, 1}, logits).code(), absl::StatusCode::kInvalidArgument);
  // The runner is still healthy: a sequence that fits runs and matches the golden logits.
  const std::vector<float> ok = StepOne(*gpu, kv, Fed().first(16));
  EXPECT_LT(GoldenDiff(ok, 15), kTolerance);
  gpu->Release(kv);
}

// ---- Other models ------------------------------------------------------------------------------

RunnerOptions SmallPoolOptions() {
  RunnerOptions o;
  o.block_size = 7;
  o.kv_cache_bytes = int64_t{64} << 20;
  return o;
}

// CUDA vs CPU over a prompt (every row's logits) and three decode steps. gpu: null to make the
// CUDA runner from `w`.
void ExpectSameAsCpu(const ModelWeights& w, const std::string& what,
                     absl::StatusOr<std::unique_ptr<CudaModelRunner>> gpu = nullptr) {
  const RunnerOptions o = SmallPoolOptions();
  if (gpu.ok() && *gpu == nullptr) gpu = CudaModelRunner::Create(w, o);
  auto cpu = CpuModelRunner::Create(w, o);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const int32_t vocab = w.config().vocab_size;
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 45; ++i) prompt.push_back((i * 37 + 5) % vocab);
  SequenceKv g = (*gpu)->NewSequence(), c = (*cpu)->NewSequence();
  std::vector<float> gl = StepOne(**gpu, g, prompt, true), cl = StepOne(**cpu, c, prompt, true);
  for (int step = 0; step < 4; ++step) {
    float scale = 1.0f;
    for (float v : cl) scale = std::max(scale, std::fabs(v));
    EXPECT_LT(MaxAbsDiff(gl, cl), 1e-4f * scale + kTolerance) << what << " step " << step;
    const int32_t next =
        Argmax({cl.data() + cl.size() - static_cast<size_t>(vocab), static_cast<size_t>(vocab)});
    gl = StepOne(**gpu, g, {&next, 1});
    cl = StepOne(**cpu, c, {&next, 1});
  }
  (*gpu)->Release(g);
  (*cpu)->Release(c);
}

class CudaModelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FUNNEL_SKIP_WITHOUT_GPU();
    dir_ = std::filesystem::temp_directory_path() /
           ("funnel_cuda_models_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path dir_;
};

// Weight types converted on upload, GQA groups 4 and 8, head_dim 32 and 128, tied output.
TEST_F(CudaModelsTest, RandomModelsOfEveryTypeMatchCpu) {
  struct Shape {
    int32_t dim, heads, kv_heads;
    bool tied;
  };
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0}) {
    for (Shape s : {Shape{256, 8, 2, false}, Shape{512, 4, 1, true}, Shape{256, 8, 1, false}}) {
      RandomModelSpec spec;
      spec.num_layers = 2;
      spec.dim = s.dim;
      spec.num_heads = s.heads;
      spec.num_kv_heads = s.kv_heads;
      spec.ffn_dim = 352;
      spec.vocab_size = 300;
      spec.tied_output = s.tied;
      spec.matrix_type = type;
      const std::string what = GgmlTypeName(type) + " dim " + std::to_string(s.dim) + " heads " +
                               std::to_string(s.heads) + "/" + std::to_string(s.kv_heads);
      const std::string path = (dir_ / "m.gguf").string();
      ASSERT_TRUE(WriteRandomModel(spec, path).ok()) << what;
      auto w = ModelWeights::Open(path);
      ASSERT_TRUE(w.ok()) << w.status();
      ExpectSameAsCpu(**w, what);
    }
  }
}

// CreateRandom makes on the device the F32 weights WriteRandomModel writes for the same shape and
// seed (random_model.h): the CPU runner over the file gives the same logits.
TEST_F(CudaModelsTest, RandomWeightsMadeOnTheDeviceEqualTheRandomModelFile) {
  for (bool tied : {false, true}) {
    RandomModelSpec spec;
    spec.num_layers = 2;
    spec.dim = 256;
    spec.num_heads = 8;
    spec.num_kv_heads = 2;
    spec.ffn_dim = 352;
    spec.vocab_size = 300;
    spec.tied_output = tied;
    spec.seed = 9;
    const std::string path = (dir_ / "r.gguf").string();
    ASSERT_TRUE(WriteRandomModel(spec, path).ok());
    auto w = ModelWeights::Open(path);
    ASSERT_TRUE(w.ok()) << w.status();
    ExpectSameAsCpu(**w, tied ? "random tied" : "random",
                    CudaModelRunner::CreateRandom((*w)->config(), 9, SmallPoolOptions()));
    // 16 bits: both round the same fp32 values to nearest even, so the runners hold the same
    // bits (with a 16-bit KV cache too).
    for (DeviceDtype t : {DeviceDtype::kBf16, DeviceDtype::kF16}) {
      RunnerOptions o = SmallPoolOptions();
      o.device_weights = t;
      o.kv_dtype = t;
      auto made = CudaModelRunner::CreateRandom((*w)->config(), 9, o);
      auto loaded = CudaModelRunner::Create(**w, o);
      ASSERT_TRUE(made.ok()) << made.status();
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      std::vector<int32_t> prompt;
      for (int32_t i = 0; i < 30; ++i) prompt.push_back((i * 53 + 7) % spec.vocab_size);
      SequenceKv a = (*made)->NewSequence(), b = (*loaded)->NewSequence();
      EXPECT_LT(MaxAbsDiff(StepOne(**made, a, prompt, true), StepOne(**loaded, b, prompt, true)),
                1e-5f)
          << (tied ? "tied " : "") << DeviceDtypeName(t);
      (*made)->Release(a);
      (*loaded)->Release(b);
    }
  }
  ModelConfig bad;
  EXPECT_EQ(CudaModelRunner::CreateRandom(bad, 1, SmallPoolOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// An HF directory with q/k/v biases (the rank-1 bias product) and llama3 RoPE scaling (the
// frequencies kernel): the random GGUF converted, then config.json and the weights amended.
TEST_F(CudaModelsTest, HfModelWithBiasesAndLlama3RopeMatchesCpu) {
  RandomModelSpec spec;
  spec.num_layers = 2;
  spec.dim = 128;
  spec.num_heads = 4;
  spec.num_kv_heads = 2;
  spec.ffn_dim = 200;
  spec.vocab_size = 300;
  const std::string gguf = (dir_ / "m.gguf").string(), hf = (dir_ / "hf").string();
  ASSERT_TRUE(WriteRandomModel(spec, gguf).ok());
  ASSERT_TRUE(ConvertGgufToHf(gguf, hf).ok());
  nlohmann::json config = nlohmann::json::parse(std::ifstream(hf + "/config.json"));
  config["attention_bias"] = true;
  config["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 16}};
  std::ofstream(hf + "/config.json", std::ios::trunc) << config.dump();
  auto st = SafetensorsFile::Open(hf + "/model.safetensors");
  ASSERT_TRUE(st.ok()) << st.status();
  std::vector<SafetensorsWriteEntry> entries;
  for (const SafetensorsTensor& t : (*st)->tensors()) {
    entries.push_back(SafetensorsBytesEntry(t.name, t.dtype, t.shape,
                                            {t.data, static_cast<size_t>(t.num_bytes())}));
  }
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  std::vector<std::vector<float>> biases;
  for (int32_t l = 0; l < spec.num_layers; ++l) {
    for (auto [proj, rows] : {std::pair{"q", 128}, std::pair{"k", 64}, std::pair{"v", 64}}) {
      biases.emplace_back(static_cast<size_t>(rows));
      for (float& b : biases.back()) b = u(rng);
      entries.push_back(SafetensorsBytesEntry(
          absl::StrCat("model.layers.", l, ".self_attn.", proj, "_proj.bias"),
          SafetensorsDtype::kF32, {rows},
          {reinterpret_cast<const uint8_t*>(biases.back().data()), biases.back().size() * 4}));
    }
  }
  ASSERT_TRUE(WriteSafetensorsFile(hf + "/model.safetensors", entries, {{"format", "pt"}}).ok());
  auto w = ModelWeights::FromHfDir(hf);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->config().attention_bias);
  ASSERT_EQ((*w)->config().rope_scaling.type, RopeScalingType::kLlama3);
  ExpectSameAsCpu(**w, "hf bias + llama3 rope");
}

// ---- Factory -----------------------------------------------------------------------------------

TEST(ModelRunnerFactory, CudaRunsWithADeviceAndIsRefusedWithout) {
  auto w = ModelWeights::Open(::funnel::testing::Stories260KPath());
  ASSERT_TRUE(w.ok()) << w.status();
  RunnerOptions o;
  o.kv_cache_bytes = 1 << 20;
  int count = 0;
  const bool have_device = cuda::DeviceCount(&count) == 0 && count > 0;
  auto runner = CreateModelRunner(Device::kCuda, **w, o);
  if (!have_device) {
    EXPECT_EQ(runner.status().code(), absl::StatusCode::kFailedPrecondition) << runner.status();
    EXPECT_NE(runner.status().message().find("CUDA device"), absl::string_view::npos);
    EXPECT_EQ(CheckDeviceAvailable(Device::kCuda).code(), absl::StatusCode::kFailedPrecondition);
  } else {
    ASSERT_TRUE(runner.ok()) << runner.status();
    EXPECT_NE(dynamic_cast<CudaModelRunner*>(runner->get()), nullptr);
  }
  auto cpu = CreateModelRunner(Device::kCpu, **w, o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_NE(dynamic_cast<CpuModelRunner*>(cpu->get()), nullptr);
  EXPECT_EQ(ParseDevice("gpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseDevice("cuda"), Device::kCuda);
}

// h2o's O(n^2) scoring kernel takes prompts up to 16384 tokens: a longer one is Unimplemented
// with nothing changed; 16384 itself runs.
TEST_F(CudaModelsTest, H2oRefusesPromptsOver16kTokens) {
  RandomModelSpec spec;
  spec.num_layers = 1;
  spec.dim = 64;
  spec.num_heads = 4;
  spec.num_kv_heads = 2;
  spec.ffn_dim = 96;
  spec.vocab_size = 300;
  spec.context_length = 32768;
  const std::string path = (dir_ / "h2o.gguf").string();
  ASSERT_TRUE(WriteRandomModel(spec, path).ok());
  auto w = ModelWeights::Open(path);
  ASSERT_TRUE(w.ok()) << w.status();
  RunnerOptions o = SmallPoolOptions();
  o.block_size = 16;
  auto gpu = CudaModelRunner::Create(**w, o);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  KvPolicy h2o;
  h2o.method = KvMethod::kH2o;
  h2o.budget = 64;
  for (int64_t n : {int64_t{16385}, int64_t{16384}}) {
    std::vector<int32_t> prompt(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) prompt[static_cast<size_t>(i)] = (i * 31 + 3) % 300;
    SequenceKv kv = (*gpu)->NewSequence();
    StepSequence s{&kv, prompt, false, &h2o};
    std::vector<float> logits;
    const absl::Status st = (*gpu)->Step({&s, 1}, logits);
    if (n > 16384) {
      EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
      EXPECT_EQ(kv.num_positions(), 0);
      EXPECT_EQ((*gpu)->pool().num_free(), (*gpu)->pool().num_blocks());
    } else {
      EXPECT_TRUE(st.ok()) << st;
      EXPECT_EQ(kv.layer_length(0), 64);
    }
    (*gpu)->Release(kv);
  }
}

}  // namespace
}  // namespace funnel
