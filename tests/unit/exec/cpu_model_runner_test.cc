// The CPU forward pass against llama2.c's fp32 golden logits for stories260K, alone and batched.
#include "runtime/exec/cpu_model_runner.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "runtime/model/random_model.h"
#include "tests/testing/golden.h"

namespace funnel {
namespace {

using ::funnel::testing::GoldenRun;

constexpr float kLogitTolerance = 1e-3f;

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = ModelWeights::Open(::funnel::testing::Stories260KPath());
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = std::move(*w);
    golden_ = ::funnel::testing::LoadStories260KGolden();
    ASSERT_EQ(golden_.logits.size(), 48u);
  }

  std::unique_ptr<CpuModelRunner> MakeRunner(int threads, int block_size,
                                             int64_t kv_bytes = int64_t{64} << 20) {
    RunnerOptions o;
    o.num_threads = threads;
    o.block_size = block_size;
    o.kv_cache_bytes = kv_bytes;
    auto r = CpuModelRunner::Create(*weights_, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return std::move(*r);
  }

  // Max |ours - golden| over the vocab at `pos`.
  float MaxDiff(std::span<const float> ours, int64_t pos) const {
    const auto& ref = golden_.logits[static_cast<size_t>(pos)];
    EXPECT_EQ(ours.size(), ref.size());
    float m = 0.0f;
    for (size_t i = 0; i < ref.size(); ++i) m = std::max(m, std::fabs(ours[i] - ref[i]));
    return m;
  }

  std::span<const int32_t> Fed() const {
    return std::span<const int32_t>(golden_.full_sequence).first(48);
  }

  std::unique_ptr<ModelWeights> weights_;
  GoldenRun golden_;
};

size_t Argmax(std::span<const float> v) {
  return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Whole 48-token sequence as one prefill: every position's logits match.
TEST_F(RunnerTest, PrefillMatchesGoldenLogitsAtEveryPosition) {
  for (int block_size : {1, 5, 16}) {
    auto runner = MakeRunner(2, block_size);
    SequenceKv kv = runner->NewSequence();
    std::vector<float> logits;
    StepSequence s{&kv, Fed(), true};
    ASSERT_TRUE(runner->Step({&s, 1}, logits).ok());
    const size_t vocab = 512;
    ASSERT_EQ(logits.size(), 48 * vocab);
    for (int64_t p = 0; p < 48; ++p) {
      std::span<const float> row(logits.data() + p * vocab, vocab);
      EXPECT_LT(MaxDiff(row, p), kLogitTolerance) << "position " << p << " block " << block_size;
      EXPECT_EQ(static_cast<int32_t>(Argmax(row)), golden_.full_sequence[p + 1]) << p;
    }
    runner->Release(kv);
    EXPECT_EQ(runner->pool().num_free(), runner->pool().num_blocks());
  }
}

// Prompt prefill, then one decode step per token: the golden greedy path.
TEST_F(RunnerTest, DecodeStepsReproduceGreedyIdsAndLogits) {
  auto runner = MakeRunner(3, 16);
  SequenceKv kv = runner->NewSequence();
  std::vector<float> logits;
  std::span<const int32_t> prompt = std::span<const int32_t>(golden_.prompt_ids);
  StepSequence s{&kv, prompt, false};
  ASSERT_TRUE(runner->Step({&s, 1}, logits).ok());
  for (int64_t pos = 4; pos < 48; ++pos) {
    EXPECT_LT(MaxDiff(logits, pos), kLogitTolerance) << pos;
    const int32_t next = static_cast<int32_t>(Argmax(logits));
    ASSERT_EQ(next, golden_.full_sequence[pos + 1]) << "position " << pos;
    if (pos == 47) break;
    StepSequence d{&kv, std::span<const int32_t>(&golden_.full_sequence[pos + 1], 1), false};
    ASSERT_TRUE(runner->Step({&d, 1}, logits).ok());
  }
  EXPECT_EQ(kv.num_positions(), 48);
  runner->Release(kv);
}

// The golden sequence decoded while other sequences (prefills of different lengths and other
// decodes) share every step: results equal the solo run up to float noise.
TEST_F(RunnerTest, BatchingDoesNotChangeResults) {
  auto runner = MakeRunner(2, 4);
  SequenceKv golden_kv = runner->NewSequence();
  std::vector<SequenceKv> others;
  for (int i = 0; i < 3; ++i) others.push_back(runner->NewSequence());
  const std::vector<std::vector<int32_t>> other_prompts = {
      {1, 20, 30},
      {1,   400, 401, 402, 403, 404, 405, 406, 407, 408, 409,
       410, 411, 412, 413, 414, 415, 416, 417, 418, 419},
      {1}};
  std::vector<float> logits;
  std::vector<int32_t> other_next = {0, 0, 0};
  const size_t vocab = 512;
  for (int64_t pos = 4; pos < 48; ++pos) {
    std::vector<StepSequence> batch;
    // Other sequences first, so the golden one sits at varying row offsets.
    for (size_t i = 0; i < others.size(); ++i) {
      if (others[i].num_positions() == 0) {
        if (static_cast<size_t>(pos - 4) % 3 != i) continue;  // staggered joins
        batch.push_back({&others[i], other_prompts[i], false});
      } else {
        batch.push_back({&others[i], std::span<const int32_t>(&other_next[i], 1), false});
      }
    }
    StepSequence g;
    if (pos == 4) {
      g = {&golden_kv, std::span<const int32_t>(golden_.prompt_ids), false};
    } else {
      g = {&golden_kv, std::span<const int32_t>(&golden_.full_sequence[pos], 1), false};
    }
    batch.push_back(g);
    ASSERT_TRUE(runner->Step(batch, logits).ok());
    ASSERT_EQ(logits.size(), batch.size() * vocab);
    std::span<const float> mine(logits.data() + (batch.size() - 1) * vocab, vocab);
    EXPECT_LT(MaxDiff(mine, pos), kLogitTolerance) << pos;
    EXPECT_EQ(static_cast<int32_t>(Argmax(mine)), golden_.full_sequence[pos + 1]) << pos;
    size_t row = 0;
    for (size_t i = 0; i < others.size(); ++i) {
      if (row < batch.size() - 1 && batch[row].kv == &others[i]) {
        other_next[i] = static_cast<int32_t>(Argmax({logits.data() + row * vocab, vocab}));
        ++row;
      }
    }
  }
  runner->Release(golden_kv);
  for (auto& o : others) runner->Release(o);
  EXPECT_EQ(runner->pool().num_free(), runner->pool().num_blocks());
}

TEST_F(RunnerTest, ExhaustedPoolFailsWithoutSideEffects) {
  // 48 tokens * 5 layers at block size 16 need 15 blocks; give 10.
  auto runner = MakeRunner(1, 16, 10 * 2 * 4 * 16 * 8 * 4);
  ASSERT_EQ(runner->pool().num_blocks(), 10);
  SequenceKv kv = runner->NewSequence();
  std::vector<float> logits;
  StepSequence s{&kv, Fed(), false};
  absl::Status st = runner->Step({&s, 1}, logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(runner->pool().num_free(), 10);
  EXPECT_EQ(kv.num_positions(), 0);
  EXPECT_EQ(kv.num_blocks(), 0);
  // A shorter sequence still fits afterwards.
  StepSequence ok{&kv, Fed().first(16), false};
  EXPECT_TRUE(runner->Step({&ok, 1}, logits).ok());
  runner->Release(kv);
}

TEST_F(RunnerTest, RejectsBadTokensAndEmptyInput) {
  auto runner = MakeRunner(1, 16);
  SequenceKv kv = runner->NewSequence();
  std::vector<float> logits;
  const int32_t bad[] = {1, 512};
  StepSequence s{&kv, bad, false};
  EXPECT_EQ(runner->Step({&s, 1}, logits).code(), absl::StatusCode::kInvalidArgument);
  const int32_t negative[] = {-1};
  s.tokens = negative;
  EXPECT_EQ(runner->Step({&s, 1}, logits).code(), absl::StatusCode::kInvalidArgument);
  s.tokens = {};
  EXPECT_EQ(runner->Step({&s, 1}, logits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner->pool().num_free(), runner->pool().num_blocks());
}

// Every weight type of the random-model writer runs, and F16/BF16/Q8_0 stay close to F32
// versions of the same model (quantization noise only).
// 16-bit device weights and KV caches are the CUDA backend's; the CPU backend refuses them, and
// the names parse (and print back).
TEST_F(RunnerTest, Refuses16BitDeviceWeightsAndKv) {
  for (DeviceDtype t : {DeviceDtype::kBf16, DeviceDtype::kF16}) {
    RunnerOptions weights16, kv16;
    weights16.device_weights = t;
    kv16.kv_dtype = t;
    for (const RunnerOptions& o : {weights16, kv16}) {
      auto r = CpuModelRunner::Create(*weights_, o);
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    }
  }
  for (DeviceDtype t : {DeviceDtype::kF32, DeviceDtype::kBf16, DeviceDtype::kF16}) {
    EXPECT_EQ(*ParseDeviceDtype(DeviceDtypeName(t)), t);
  }
  EXPECT_STREQ(DeviceDtypeName(DeviceDtype::kBf16), "bf16");
  EXPECT_STREQ(DeviceDtypeName(DeviceDtype::kF16), "f16");
  for (const char* bad : {"fp16", "BF16", "", "f8"}) {
    EXPECT_EQ(ParseDeviceDtype(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(RunnerTypes, RandomModelsOfEveryTypeAgreeWithF32) {
  const auto dir = std::filesystem::temp_directory_path() / "funnel_runner_types";
  std::filesystem::create_directories(dir);
  std::vector<std::vector<float>> results;
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0}) {
    RandomModelSpec spec;
    spec.num_layers = 2;
    spec.dim = 64;
    spec.num_heads = 8;
    spec.num_kv_heads = 2;
    spec.ffn_dim = 96;
    spec.vocab_size = 300;
    spec.matrix_type = type;
    const std::string path = (dir / ("m" + GgmlTypeName(type) + ".gguf")).string();
    ASSERT_TRUE(WriteRandomModel(spec, path).ok());
    auto w = ModelWeights::Open(path);
    ASSERT_TRUE(w.ok()) << w.status();
    RunnerOptions o;
    o.kv_cache_bytes = 1 << 20;
    auto runner = CpuModelRunner::Create(**w, o);
    ASSERT_TRUE(runner.ok());
    SequenceKv kv = (*runner)->NewSequence();
    std::vector<int32_t> ids(40);
    for (int i = 0; i < 40; ++i) ids[i] = (i * 37) % 300;
    std::vector<float> logits;
    StepSequence s{&kv, ids, false};
    ASSERT_TRUE((*runner)->Step({&s, 1}, logits).ok());
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
    results.push_back(logits);
    (*runner)->Release(kv);
  }
  for (size_t t = 1; t < results.size(); ++t) {
    double num = 0, den = 0;
    for (size_t i = 0; i < results[0].size(); ++i) {
      num += std::pow(results[t][i] - results[0][i], 2);
      den += std::pow(results[0][i], 2);
    }
    EXPECT_LT(std::sqrt(num / den), 0.05) << "type index " << t;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace funnel
