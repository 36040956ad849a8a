// Forked sequences share blocks; appending copies a shared partial block first (copy-on-write).
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/exec/cpu_model_runner.h"
#include "tests/testing/golden.h"

namespace funnel {
namespace {

class ForkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = ModelWeights::Open(::funnel::testing::Stories260KPath());
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = std::move(*w);
    RunnerOptions o;
    o.block_size = 4;
    o.kv_cache_bytes = 4 << 20;
    auto r = CpuModelRunner::Create(*weights_, o);
    ASSERT_TRUE(r.ok());
    runner_ = std::move(*r);
  }

  // Logits of the last token of `ids` run as one fresh prefill.
  std::vector<float> Solo(const std::vector<int32_t>& ids) {
    SequenceKv kv = runner_->NewSequence();
    std::vector<float> logits;
    StepSequence s{&kv, ids, false};
    EXPECT_TRUE(runner_->Step({&s, 1}, logits).ok());
    runner_->Release(kv);
    return logits;
  }

  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<CpuModelRunner> runner_;
};

float MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

TEST_F(ForkTest, ForksShareBlocksAndDivergeCorrectly) {
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 432, 383};  // 7: last block partial
  BlockPool& pool = runner_->pool();
  SequenceKv a = runner_->NewSequence();
  std::vector<float> logits;
  StepSequence s{&a, prompt, false};
  ASSERT_TRUE(runner_->Step({&s, 1}, logits).ok());
  const int32_t used_before = pool.num_used();

  SequenceKv b = a.Fork(pool);
  EXPECT_EQ(pool.num_used(), used_before);  // no copy
  for (int32_t l = 0; l < a.num_layers(); ++l) {
    for (BlockId blk : a.block_table(l)) EXPECT_EQ(pool.ref_count(blk), 2);
    EXPECT_TRUE(a.NeedsCopyOnWrite(pool, l));
  }
  EXPECT_EQ(b.num_positions(), 7);

  // Different continuations in one batched step: each copies its shared last block.
  const int32_t ta = 286, tb = 300;
  StepSequence batch[2] = {{&a, std::span<const int32_t>(&ta, 1), false},
                           {&b, std::span<const int32_t>(&tb, 1), false}};
  ASSERT_TRUE(runner_->Step(batch, logits).ok());
  const size_t vocab = 512;
  std::vector<float> la(logits.begin(), logits.begin() + vocab), lb(logits.begin() + vocab, logits.end());
  std::vector<int32_t> pa = prompt, pb = prompt;
  pa.push_back(ta);
  pb.push_back(tb);
  EXPECT_LT(MaxDiff(la, Solo(pa)), 1e-4f);
  EXPECT_LT(MaxDiff(lb, Solo(pb)), 1e-4f);
  for (int32_t l = 0; l < a.num_layers(); ++l) {
    // Full blocks stay shared; the partial last blocks were copied.
    EXPECT_EQ(pool.ref_count(a.block_table(l)[0]), 2);
    EXPECT_EQ(pool.ref_count(a.block_table(l).back()), 1);
    EXPECT_NE(a.block_table(l).back(), b.block_table(l).back());
  }
  runner_->Release(a);
  // b still reads the shared blocks correctly after a is gone.
  const int32_t tb2 = 261;
  StepSequence more{&b, std::span<const int32_t>(&tb2, 1), false};
  ASSERT_TRUE(runner_->Step({&more, 1}, logits).ok());
  pb.push_back(tb2);
  EXPECT_LT(MaxDiff(logits, Solo(pb)), 1e-4f);
  runner_->Release(b);
  EXPECT_EQ(pool.num_free(), pool.num_blocks());
}

TEST_F(ForkTest, CopyOnWriteCountsTowardAdmission) {
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};  // 5 entries: 2 blocks per layer
  BlockPool& pool = runner_->pool();
  SequenceKv a = runner_->NewSequence();
  std::vector<float> logits;
  StepSequence s{&a, prompt, false};
  ASSERT_TRUE(runner_->Step({&s, 1}, logits).ok());
  SequenceKv b = a.Fork(pool);
  // Exhaust the pool except fewer blocks than the 5 layers' copies need.
  std::vector<BlockId> hog;
  while (pool.num_free() > 3) hog.push_back(*pool.Allocate());
  const int32_t t = 286;
  StepSequence d{&b, std::span<const int32_t>(&t, 1), false};
  EXPECT_EQ(runner_->Step({&d, 1}, logits).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.num_free(), 3);
  for (BlockId h : hog) pool.Unref(h);
  EXPECT_TRUE(runner_->Step({&d, 1}, logits).ok());
  runner_->Release(a);
  runner_->Release(b);
  EXPECT_EQ(pool.num_free(), pool.num_blocks());
}

}  // namespace
}  // namespace funnel
