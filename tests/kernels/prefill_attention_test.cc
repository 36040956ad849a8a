// CUDA paged causal prefill attention vs its CPU twin (PagedAttentionKvHead with n_q = q_len):
// q_len 1/7/64/129, plain prefill and suffixes over a paged prefix, 1 and 3 sequences of
// different lengths, GQA 1/4/8, head_dim 32/40/64/128/256, block sizes 1/5/16, shuffled blocks;
// pools of fp32, bf16 and fp16 (the CPU twin reads the same rounded values).
#include "kernels/cuda/prefill_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/paged_attention.h"
#include "tests/testing/gpu_test.h"

namespace funnel {
namespace {

using testing::DeviceTyped;
using testing::DeviceVector;
using testing::DtypeName;
using testing::kAllDtypes;
using testing::ToleranceRatio;

// fp32 tolerance: 1e-4 relative, plus 1e-5 absolute for outputs near zero.
constexpr double kRtol = 1e-4;
constexpr double kAtol = 1e-5;
constexpr int32_t kPadRows = 2;  // guard rows before and after the queries in q/out
constexpr float kGuard = 12345.0f;

struct Seq {
  int32_t q_len, prefix;  // kv_len = prefix + q_len
};

struct Case {
  int32_t heads, kv_heads, head_dim, block_size;
  std::vector<Seq> seqs;
};

// The inputs of one case, host side; rows [kPadRows, kPadRows + total_q) are the queries.
struct Inputs {
  PagedKvGeometry geometry;
  std::vector<float> q, pool;
  std::vector<int32_t> tables, q_indptr, kv_lens;
  int32_t stride = 0, max_q_len = 0, total_rows = 0;
  float scale = 1.0f;
};

Inputs MakeInputs(const Case& c, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Inputs in;
  in.geometry = PagedKvGeometry{c.block_size, c.kv_heads, c.head_dim};
  in.q_indptr.push_back(kPadRows);
  for (const Seq& s : c.seqs) {
    const int32_t kv_len = s.prefix + s.q_len;
    in.kv_lens.push_back(kv_len);
    in.q_indptr.push_back(in.q_indptr.back() + s.q_len);
    in.max_q_len = std::max(in.max_q_len, s.q_len);
    in.stride = std::max(in.stride, (kv_len + c.block_size - 1) / c.block_size);
  }
  in.total_rows = in.q_indptr.back() + kPadRows;
  const int32_t blocks = in.stride * static_cast<int32_t>(c.seqs.size()) + 5;
  std::vector<int32_t> perm(static_cast<size_t>(blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  in.tables.assign(perm.begin(), perm.begin() + in.stride * static_cast<int32_t>(c.seqs.size()));
  in.pool.resize(static_cast<size_t>(blocks) * in.geometry.BlockFloats());
  for (float& x : in.pool) x = u(rng);
  in.q.resize(static_cast<size_t>(in.total_rows) * c.heads * c.head_dim);
  for (float& x : in.q) x = 2.0f * u(rng);
  in.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  return in;
}

// The CPU twin: PagedAttentionKvHead per (sequence, KV head). Guard rows keep kGuard.
std::vector<float> CpuPrefill(const Case& c, const Inputs& in) {
  const size_t row_floats = static_cast<size_t>(c.heads) * c.head_dim;
  std::vector<float> out(in.q.size(), kGuard);
  AttentionScratch scratch;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    PagedAttentionArgs a;
    a.q = in.q.data() + static_cast<size_t>(in.q_indptr[s]) * row_floats;
    a.out = out.data() + static_cast<size_t>(in.q_indptr[s]) * row_floats;
    a.n_q = c.seqs[s].q_len;
    a.num_heads = c.heads;
    a.pool = in.pool.data();
    a.geometry = in.geometry;
    a.block_table = in.tables.data() + s * static_cast<size_t>(in.stride);
    a.kv_len = in.kv_lens[s];
    a.scale = in.scale;
    for (int32_t h = 0; h < c.kv_heads; ++h) PagedAttentionKvHead(a, h, scratch);
  }
  return out;
}

// Runs the kernel over in.pool stored as `type`; rounds in.pool in place to the stored values.
std::vector<float> GpuPrefill(const Case& c, Inputs& in, cuda::Dtype type, int* error) {
  DeviceVector<float> dq(in.q), dout(std::vector<float>(in.q.size(), kGuard));
  DeviceTyped dpool(in.pool, type);
  DeviceVector<int32_t> dtables(in.tables), dindptr(in.q_indptr), dlens(in.kv_lens);
  cuda::PagedPrefillParams p;
  p.q = dq.get();
  p.out = dout.get();
  p.num_seqs = static_cast<int32_t>(c.seqs.size());
  p.num_heads = c.heads;
  p.num_kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.pool = dpool.get();
  p.kv_dtype = type;
  p.block_size = c.block_size;
  p.block_tables = dtables.get();
  p.max_blocks_per_seq = in.stride;
  p.q_indptr = dindptr.get();
  p.kv_lens = dlens.get();
  p.max_q_len = in.max_q_len;
  p.scale = in.scale;
  *error = cuda::LaunchPagedPrefillAttention(p, nullptr);
  if (*error == 0) *error = cuda::Synchronize();
  return dout.ToHost();
}

std::vector<Case> AwkwardCases() {
  std::vector<Case> cases;
  const std::vector<std::vector<Seq>> batches = {
      {{1, 0}},
      {{7, 0}},
      {{64, 0}},
      {{129, 0}},  // plain prefill
      {{1, 300}},
      {{7, 45}},
      {{64, 17}},
      {{129, 1000}},  // suffix over a prefix
      {{129, 0}, {1, 33}, {7, 0}},
      {{7, 200}, {64, 0}, {129, 3}},  // 3 sequences
  };
  for (int32_t group : {1, 4, 8}) {
    for (int32_t d : {32, 64, 128}) {
      for (int32_t bs : {1, 16}) {
        for (const std::vector<Seq>& batch : batches) cases.push_back({2 * group, 2, d, bs, batch});
      }
    }
  }
  cases.push_back({8, 8, 256, 16, {{129, 40}, {7, 0}}});  // head_dim 256, GQA 1
  cases.push_back({16, 2, 256, 5, {{64, 0}, {1, 9}}});    // head_dim 256, GQA 8
  cases.push_back({6, 2, 40, 5, {{33, 0}, {129, 2}}});    // head_dim 40, GQA 3
  cases.push_back({32, 2, 128, 16, {{129, 0}}});          // GQA 16
  return cases;
}

TEST(CudaPrefillAttention, MatchesCpuTwinOnAwkwardShapes) {
  FUNNEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(29);
  for (const Case& c : AwkwardCases()) {
    const Inputs random = MakeInputs(c, rng);
    for (cuda::Dtype type : kAllDtypes) {
      Inputs in = random;
      int error = -1;
      const std::vector<float> got = GpuPrefill(c, in, type, &error);
      ASSERT_EQ(error, 0);
      const std::vector<float> ref = CpuPrefill(c, in);
      std::string lens;
      for (const Seq& s : c.seqs)
        lens += " " + std::to_string(s.q_len) + "+" + std::to_string(s.prefix);
      EXPECT_LE(ToleranceRatio(got, ref, kAtol, kRtol), 1.0)
          << DtypeName(type) << ", " << c.heads << "/" << c.kv_heads << " heads, d " << c.head_dim
          << ", block " << c.block_size << ", q_len+prefix:" << lens;
    }
  }
}

// The rows after the causal boundary must not leak into earlier rows: changing the last new
// token's K/V changes only the last query's output.
TEST(CudaPrefillAttention, IsCausal) {
  FUNNEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  const Case c{4, 2, 64, 16, {{20, 5}}};
  Inputs in = MakeInputs(c, rng);
  int error = -1;
  const std::vector<float> before = GpuPrefill(c, in, cuda::Dtype::kF32, &error);
  ASSERT_EQ(error, 0);
  const int32_t last = in.kv_lens[0] - 1;
  float* block = in.pool.data() + static_cast<size_t>(in.tables[static_cast<size_t>(last / 16)]) *
                                      in.geometry.BlockFloats();
  for (int32_t h = 0; h < c.kv_heads; ++h) {
    for (int32_t x = 0; x < c.head_dim; ++x) {
      block[in.geometry.KOffset(h, last % 16) + x] += 3.0f;
      block[in.geometry.VOffset(h, last % 16) + x] -= 5.0f;
    }
  }
  const std::vector<float> after = GpuPrefill(c, in, cuda::Dtype::kF32, &error);
  ASSERT_EQ(error, 0);
  const size_t row_floats = static_cast<size_t>(c.heads) * c.head_dim;
  const size_t last_row = static_cast<size_t>(in.q_indptr[1] - 1);
  for (size_t i = 0; i < before.size(); ++i) {
    if (i / row_floats == last_row) continue;
    ASSERT_EQ(before[i], after[i]) << "row " << i / row_floats;
  }
  EXPECT_NE(std::vector<float>(before.begin() + last_row * row_floats,
                               before.begin() + (last_row + 1) * row_floats),
            std::vector<float>(after.begin() + last_row * row_floats,
                               after.begin() + (last_row + 1) * row_floats));
}

TEST(CudaPrefillAttention, RejectsUnsupportedShapes) {
  FUNNEL_SKIP_WITHOUT_GPU();
  DeviceVector<float> buf(16);
  DeviceVector<int32_t> ints(std::vector<int32_t>{0, 1, 1});
  cuda::PagedPrefillParams ok;
  ok.q = buf.get();
  ok.out = buf.get();
  ok.pool = buf.get();
  ok.block_tables = ints.get();
  ok.q_indptr = ints.get();
  ok.kv_lens = ints.get() + 1;
  ok.num_seqs = 1;
  ok.num_heads = 4;
  ok.num_kv_heads = 2;
  ok.head_dim = 64;
  ok.max_q_len = 1;
  auto bad = ok;
  bad.num_heads = 34;  // group 17 > 16
  bad.num_kv_heads = 2;
  EXPECT_NE(cuda::LaunchPagedPrefillAttention(bad, nullptr), 0);
  bad = ok;
  bad.num_heads = 5;  // not a multiple of the KV heads
  EXPECT_NE(cuda::LaunchPagedPrefillAttention(bad, nullptr), 0);
  bad = ok;
  bad.head_dim = 257;
  EXPECT_NE(cuda::LaunchPagedPrefillAttention(bad, nullptr), 0);
  bad = ok;
  bad.block_size = 0;
  EXPECT_NE(cuda::LaunchPagedPrefillAttention(bad, nullptr), 0);
  bad = ok;
  bad.kv_lens = nullptr;
  EXPECT_NE(cuda::LaunchPagedPrefillAttention(bad, nullptr), 0);
  bad = ok;
  bad.num_seqs = 0;  // nothing to do
  EXPECT_EQ(cuda::LaunchPagedPrefillAttention(bad, nullptr), 0);
}

}  // namespace
}  // namespace funnel
