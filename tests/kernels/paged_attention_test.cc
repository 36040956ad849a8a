// CUDA paged decode attention, KV append and entry read-back vs the CPU twins: GQA 1/4/8, lengths
// that are not block multiples, different lengths per sequence, shuffled block tables, split
// counts; each over an fp32, bf16 and fp16 pool (the CPU twin reads the same rounded values, so
// the fp32 tolerances hold for every format).
#include "kernels/cuda/paged_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "kernels/cpu/paged_attention.h"
#include "tests/testing/gpu_test.h"

namespace funnel {
namespace {

using testing::DeviceTyped;
using testing::DeviceVector;
using testing::DtypeName;
using testing::kAllDtypes;
using testing::ToleranceRatio;

struct Case {
  int32_t seqs, heads, kv_heads, head_dim, block_size, splits;
  std::vector<int32_t> lens;
};

// The shape of one decode launch (PagedDecodeParams): `rows` query rows, their tables at
// `table_stride` (0: one shared table).
struct DecodeShape {
  int32_t rows, heads, kv_heads, head_dim, block_size, table_stride, splits, max_kv_len;
  float scale;
};

// Runs the decode kernel over `pool` (stored as `type`); returns its output.
std::vector<float> RunDecode(const DecodeShape& s, const std::vector<float>& q,
                             const DeviceTyped& pool, cuda::Dtype type,
                             const std::vector<int32_t>& tables, const std::vector<int32_t>& lens) {
  DeviceVector<float> dq(q), dout(q.size());
  DeviceVector<int32_t> dtables(tables), dlens(lens);
  cuda::PagedDecodeParams p;
  p.q = dq.get();
  p.out = dout.get();
  p.num_seqs = s.rows;
  p.num_heads = s.heads;
  p.num_kv_heads = s.kv_heads;
  p.head_dim = s.head_dim;
  p.pool = pool.get();
  p.kv_dtype = type;
  p.block_size = s.block_size;
  p.block_tables = dtables.get();
  p.max_blocks_per_seq = s.table_stride;
  p.kv_lens = dlens.get();
  p.scale = s.scale;
  p.num_splits = s.splits;
  p.max_kv_len = s.max_kv_len;
  DeviceVector<float> ws(static_cast<size_t>(cuda::PagedDecodeWorkspaceFloats(p)));
  p.workspace = ws.get();
  EXPECT_EQ(cuda::LaunchPagedDecodeAttention(p, nullptr), 0);
  EXPECT_EQ(cuda::Synchronize(), 0);
  return dout.ToHost();
}

TEST(CudaPagedAttention, DecodeMatchesCpu) {
  FUNNEL_SKIP_WITHOUT_GPU();
  const std::vector<Case> cases = {
      {1, 4, 4, 64, 16, 1, {1}},
      {3, 8, 2, 64, 16, 2, {17, 1, 100}},
      {5, 32, 4, 128, 16, 4, {1000, 33, 4097, 7, 512}},
      {2, 8, 1, 128, 5, 3, {77, 6}},
      {4, 16, 2, 96, 32, 8, {8191, 2000, 31, 300}},
      {1, 64, 8, 128, 16, 16, {8192}},
  };
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const Case& c : cases) {
    PagedKvGeometry g{c.block_size, c.kv_heads, c.head_dim};
    const int32_t max_len = *std::max_element(c.lens.begin(), c.lens.end());
    const int32_t max_blocks = (max_len + c.block_size - 1) / c.block_size;
    const int32_t total_blocks = max_blocks * c.seqs + 3;
    std::vector<int32_t> perm(total_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> tables(static_cast<size_t>(c.seqs) * max_blocks);
    for (size_t i = 0; i < tables.size(); ++i) tables[i] = perm[i];
    std::vector<float> random_pool(static_cast<size_t>(total_blocks) * g.BlockFloats());
    for (float& x : random_pool) x = u(rng);
    std::vector<float> q(static_cast<size_t>(c.seqs) * c.heads * c.head_dim);
    for (float& x : q) x = u(rng) * 2.0f;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    for (cuda::Dtype type : kAllDtypes) {
      std::vector<float> pool = random_pool;
      DeviceTyped dpool(pool, type);  // rounds `pool` to what the device holds
      std::vector<float> ref(q.size());
      AttentionScratch scratch;
      for (int32_t s = 0; s < c.seqs; ++s) {
        PagedAttentionArgs a;
        a.q = q.data() + static_cast<size_t>(s) * c.heads * c.head_dim;
        a.out = ref.data() + static_cast<size_t>(s) * c.heads * c.head_dim;
        a.n_q = 1;
        a.num_heads = c.heads;
        a.pool = pool.data();
        a.geometry = g;
        a.block_table = tables.data() + static_cast<size_t>(s) * max_blocks;
        a.kv_len = c.lens[s];
        a.scale = scale;
        for (int32_t h = 0; h < c.kv_heads; ++h) PagedAttentionKvHead(a, h, scratch);
      }

      const DecodeShape shape{c.seqs,     c.heads,  c.kv_heads, c.head_dim, c.block_size,
                              max_blocks, c.splits, max_len,    scale};
      EXPECT_LE(ToleranceRatio(RunDecode(shape, q, dpool, type, tables, c.lens), ref, 2e-5, 1e-4),
                1.0)
          << DtypeName(type) << ", " << c.seqs << " seqs, " << c.heads << "/" << c.kv_heads
          << " heads, d " << c.head_dim << ", splits " << c.splits;
    }
  }
}

// Prefill as decode rows (the CUDA runner's prefill path): the n new tokens of one sequence are
// rows sharing its block table (max_blocks_per_seq = 0), row i with kv_len = base + i + 1. Equals
// the CPU's causal multi-query attention (PagedAttentionKvHead with n_q = n).
TEST(CudaPagedAttention, SharedTableRowsMatchCausalPrefill) {
  FUNNEL_SKIP_WITHOUT_GPU();
  struct Prefill {
    int32_t heads, kv_heads, head_dim, block_size, base, n, splits;
  };
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const Prefill& c : {Prefill{4, 4, 64, 16, 0, 1, 1}, Prefill{8, 2, 8, 5, 0, 37, 2},
                           Prefill{8, 4, 64, 16, 45, 19, 3}, Prefill{16, 2, 128, 32, 1000, 70, 8},
                           Prefill{8, 1, 256, 1, 3, 9, 1}}) {
    PagedKvGeometry g{c.block_size, c.kv_heads, c.head_dim};
    const int32_t len = c.base + c.n;
    const int32_t blocks = (len + c.block_size - 1) / c.block_size;
    std::vector<int32_t> table(static_cast<size_t>(blocks));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    for (int32_t& b : table) b += 2;  // blocks 0 and 1 unused
    std::vector<float> random_pool(static_cast<size_t>(blocks + 2) * g.BlockFloats());
    for (float& x : random_pool) x = u(rng);
    std::vector<float> q(static_cast<size_t>(c.n) * c.heads * c.head_dim);
    for (float& x : q) x = u(rng) * 2.0f;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    for (cuda::Dtype type : kAllDtypes) {
      std::vector<float> pool = random_pool;
      DeviceTyped dpool(pool, type);
      std::vector<float> ref(q.size());
      PagedAttentionArgs a;
      a.q = q.data();
      a.out = ref.data();
      a.n_q = c.n;
      a.num_heads = c.heads;
      a.pool = pool.data();
      a.geometry = g;
      a.block_table = table.data();
      a.kv_len = len;
      a.scale = scale;
      AttentionScratch scratch;
      for (int32_t h = 0; h < c.kv_heads; ++h) PagedAttentionKvHead(a, h, scratch);

      std::vector<int32_t> lens(static_cast<size_t>(c.n));
      for (int32_t i = 0; i < c.n; ++i) lens[static_cast<size_t>(i)] = c.base + i + 1;
      const DecodeShape shape{c.n, c.heads,  c.kv_heads, c.head_dim, c.block_size,
                              0,   c.splits, len,        scale};  // one shared table
      EXPECT_LE(ToleranceRatio(RunDecode(shape, q, dpool, type, table, lens), ref, 2e-5, 1e-4), 1.0)
          << DtypeName(type) << ", " << c.n << " rows after " << c.base << ", " << c.heads << "/"
          << c.kv_heads << " heads, d " << c.head_dim << ", block " << c.block_size;
    }
  }
}

TEST(CudaPagedAttention, RejectsUnsupportedShapes) {
  FUNNEL_SKIP_WITHOUT_GPU();
  cuda::PagedDecodeParams p;
  p.num_seqs = 1;
  p.num_heads = 32;
  p.num_kv_heads = 2;  // group 16 > 8
  p.head_dim = 64;
  p.max_kv_len = 1;
  float dummy = 0;
  p.workspace = &dummy;
  EXPECT_NE(cuda::LaunchPagedDecodeAttention(p, nullptr), 0);
}

// Appends land where the CPU layout puts them, rounded to the pool's format (-7 is exact in all).
TEST(CudaPagedAttention, AppendKvWritesTheCpuLayout) {
  FUNNEL_SKIP_WITHOUT_GPU();
  const int32_t kv_heads = 3, head_dim = 40, block_size = 5, blocks = 6;
  PagedKvGeometry g{block_size, kv_heads, head_dim};
  const std::vector<int64_t> slots = {0, 4, 13, 29, 17};
  const int64_t rows = static_cast<int64_t>(slots.size());
  std::vector<float> k(rows * kv_heads * head_dim), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = 1.0f + 0.001f * static_cast<float>(i);  // most of these are not exact in 16 bits
    v[i] = -static_cast<float>(i) / 3.0f;
  }
  DeviceVector<float> dk(k), dv(v);
  DeviceVector<int64_t> dslots(slots);
  for (cuda::Dtype type : kAllDtypes) {
    std::vector<float> pool(static_cast<size_t>(blocks) * g.BlockFloats(), -7.0f);
    DeviceTyped dpool(pool, type);
    ASSERT_EQ(cuda::LaunchAppendKv(dk.get(), dv.get(), dslots.get(), rows, kv_heads, head_dim,
                                   block_size, dpool.get(), type, nullptr),
              0);
    std::vector<float> kr = k, vr = v;
    testing::RoundInPlace(kr, type);
    testing::RoundInPlace(vr, type);
    std::vector<float> expect = pool;
    for (int64_t r = 0; r < rows; ++r) {
      float* block = expect.data() + (slots[r] / block_size) * g.BlockFloats();
      for (int32_t h = 0; h < kv_heads; ++h) {
        for (int32_t x = 0; x < head_dim; ++x) {
          block[g.KOffset(h, slots[r] % block_size) + x] = kr[(r * kv_heads + h) * head_dim + x];
          block[g.VOffset(h, slots[r] % block_size) + x] = vr[(r * kv_heads + h) * head_dim + x];
        }
      }
    }
    EXPECT_EQ(dpool.ToHost(), expect) << DtypeName(type);
  }
}

// The first `count` entries of a shuffled table, widened into the [2][kv_heads][n][d] workspace;
// the rest of the workspace is untouched.
TEST(CudaPagedAttention, ReadEntriesFillsTheWorkspace) {
  FUNNEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  struct Read {
    int32_t kv_heads, head_dim, block_size;
    int64_t count, n;
  };
  for (const Read& c : {Read{1, 8, 1, 1, 1}, Read{2, 64, 16, 33, 40}, Read{3, 40, 5, 17, 17},
                        Read{8, 128, 16, 200, 257}}) {
    PagedKvGeometry g{c.block_size, c.kv_heads, c.head_dim};
    const int32_t blocks = static_cast<int32_t>((c.count + c.block_size - 1) / c.block_size);
    std::vector<int32_t> table(static_cast<size_t>(blocks));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    for (int32_t& b : table) b += 1;  // block 0 unused
    DeviceVector<int32_t> dtable(table);
    for (cuda::Dtype type : kAllDtypes) {
      std::vector<float> pool(static_cast<size_t>(blocks + 1) * g.BlockFloats());
      for (float& x : pool) x = u(rng);
      DeviceTyped dpool(pool, type);
      const int64_t plane = int64_t{c.kv_heads} * c.n * c.head_dim;
      std::vector<float> expect(static_cast<size_t>(2 * plane), 99.0f);
      for (int64_t e = 0; e < c.count; ++e) {
        const float* block =
            pool.data() + table[static_cast<size_t>(e / c.block_size)] * g.BlockFloats();
        for (int32_t h = 0; h < c.kv_heads; ++h) {
          for (int32_t x = 0; x < c.head_dim; ++x) {
            const int64_t at = (int64_t{h} * c.n + e) * c.head_dim + x;
            expect[static_cast<size_t>(at)] = block[g.KOffset(h, e % c.block_size) + x];
            expect[static_cast<size_t>(plane + at)] = block[g.VOffset(h, e % c.block_size) + x];
          }
        }
      }
      DeviceVector<float> ws(std::vector<float>(expect.size(), 99.0f));
      ASSERT_EQ(cuda::LaunchReadEntries(dpool.get(), type, dtable.get(), c.block_size, c.count,
                                        c.kv_heads, c.head_dim, c.n, ws.get(), nullptr),
                0);
      EXPECT_EQ(ws.ToHost(), expect) << DtypeName(type) << " count " << c.count;
    }
  }
  // More entries than the workspace holds is an error.
  DeviceVector<float> ws(16);
  DeviceVector<int32_t> table(std::vector<int32_t>{0});
  EXPECT_NE(cuda::LaunchReadEntries(ws.get(), cuda::Dtype::kF32, table.get(), 4, 3, 1, 2, 2,
                                    ws.get(), nullptr),
            0);
}

}  // namespace
}  // namespace funnel
