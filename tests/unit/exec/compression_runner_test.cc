// KV compression at the end of prefill in the CPU runner, end to end (DESIGN.md section 4):
// exactness of the uncompressed paths, what the blocks hold afterwards (against a naive
// double-precision forward pass and the brute-force selection reference), positions, block
// accounting and admission, and Generate's kv stats.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/norm_rope_act.h"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/exec/generate.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/model/random_model.h"
#include "tests/testing/golden.h"
#include "tests/testing/kv_selection_reference.h"

namespace funnel {
namespace {

using ::funnel::testing::RefBoundaryScore;
using ::funnel::testing::RefSelection;
using ::funnel::testing::RefSelectionArgs;
using ::funnel::testing::RefSelectKept;

// kept[layer][kv_head] = prompt indices held by that head's cache, in cache order.
using KeptIndices = std::vector<std::vector<std::vector<int32_t>>>;

// ---------------------------------------------------------------------------------------------
// A naive forward pass (double accumulation, per-KV-head caches of explicit rows), independent
// of the runner's batching, paging and attention kernels.

class RefModel {
 public:
  explicit RefModel(const ModelWeights& w) : w_(w), c_(w.config()) {
    cache_k_.assign(static_cast<size_t>(c_.num_layers),
                    std::vector<std::vector<float>>(c_.num_kv_heads));
    cache_v_ = cache_k_;
    q_.resize(static_cast<size_t>(c_.num_layers));
    k_.resize(static_cast<size_t>(c_.num_layers));
    v_.resize(static_cast<size_t>(c_.num_layers));
  }

  // Runs `tokens` at positions next_position() onward; returns the last token's logits.
  // Keeps each layer's Q/K/V rows of this step ([t][heads][d]) for inspection.
  std::vector<float> Step(const std::vector<int32_t>& tokens) {
    const int64_t t_n = static_cast<int64_t>(tokens.size()), dim = c_.dim, d = c_.head_dim;
    const int64_t hq = c_.num_heads, hk = c_.num_kv_heads, group = hq / hk;
    std::vector<int32_t> pos(tokens.size());
    for (int64_t i = 0; i < t_n; ++i)
      pos[static_cast<size_t>(i)] = static_cast<int32_t>(position_ + i);
    std::vector<float> x(static_cast<size_t>(t_n * dim)), xn(x.size());
    for (int64_t i = 0; i < t_n; ++i) {
      const WeightMatrix& e = w_.token_embedding();
      DequantizeRow(e.type, e.Row(tokens[static_cast<size_t>(i)]), x.data() + i * dim, dim);
    }
    for (int32_t l = 0; l < c_.num_layers; ++l) {
      const LayerWeights& lw = w_.layer(l);
      RmsNorm(x.data(), lw.attn_norm.data(), xn.data(), t_n, dim, c_.rms_norm_eps);
      std::vector<float>& q = q_[l];
      std::vector<float>& k = k_[l];
      std::vector<float>& v = v_[l];
      q.assign(static_cast<size_t>(t_n * hq * d), 0.0f);
      k.assign(static_cast<size_t>(t_n * hk * d), 0.0f);
      v.assign(k.size(), 0.0f);
      MatMulReference(lw.wq, xn.data(), t_n, q.data());
      MatMulReference(lw.wk, xn.data(), t_n, k.data());
      MatMulReference(lw.wv, xn.data(), t_n, v.data());
      ApplyRope(q.data(), pos.data(), t_n, hq, d, c_.rope_dim, c_.rope_theta, c_.rope_style);
      ApplyRope(k.data(), pos.data(), t_n, hk, d, c_.rope_dim, c_.rope_theta, c_.rope_style);
      const size_t base = cache_k_[l][0].size() / static_cast<size_t>(d);
      for (int64_t h = 0; h < hk; ++h) {
        for (int64_t i = 0; i < t_n; ++i) {
          auto& ck = cache_k_[l][h];
          auto& cv = cache_v_[l][h];
          ck.insert(ck.end(), k.begin() + (i * hk + h) * d, k.begin() + (i * hk + h + 1) * d);
          cv.insert(cv.end(), v.begin() + (i * hk + h) * d, v.begin() + (i * hk + h + 1) * d);
        }
      }
      std::vector<float> attn(static_cast<size_t>(t_n * hq * d));
      const double scale = 1.0 / std::sqrt(static_cast<double>(d));
      for (int64_t i = 0; i < t_n; ++i) {
        const size_t visible = base + static_cast<size_t>(i) + 1;
        for (int64_t h = 0; h < hq; ++h) {
          const float* qr = q.data() + (i * hq + h) * d;
          const auto& ck = cache_k_[l][h / group];
          const auto& cv = cache_v_[l][h / group];
          std::vector<double> p(visible);
          double mx = -INFINITY;
          for (size_t j = 0; j < visible; ++j) {
            double dot = 0.0;
            for (int64_t t = 0; t < d; ++t) dot += double{qr[t]} * ck[j * d + t];
            p[j] = dot * scale;
            mx = std::max(mx, p[j]);
          }
          double sum = 0.0;
          for (double& e : p) sum += (e = std::exp(e - mx));
          for (int64_t t = 0; t < d; ++t) {
            double o = 0.0;
            for (size_t j = 0; j < visible; ++j) o += p[j] * cv[j * d + t];
            attn[static_cast<size_t>((i * hq + h) * d + t)] = static_cast<float>(o / sum);
          }
        }
      }
      std::vector<float> o(x.size());
      MatMulReference(lw.wo, attn.data(), t_n, o.data());
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      RmsNorm(x.data(), lw.ffn_norm.data(), xn.data(), t_n, dim, c_.rms_norm_eps);
      std::vector<float> gate(static_cast<size_t>(t_n * c_.ffn_dim)), up(gate.size());
      MatMulReference(lw.w_gate, xn.data(), t_n, gate.data());
      MatMulReference(lw.w_up, xn.data(), t_n, up.data());
      SwiGlu(gate.data(), up.data(), gate.data(), static_cast<int64_t>(gate.size()));
      MatMulReference(lw.w_down, gate.data(), t_n, o.data());
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    }
    position_ += t_n;
    std::vector<float> last(static_cast<size_t>(dim)), logits(static_cast<size_t>(c_.vocab_size));
    RmsNorm(x.data() + (t_n - 1) * dim, w_.output_norm().data(), last.data(), 1, dim,
            c_.rms_norm_eps);
    MatMulReference(w_.output(), last.data(), 1, logits.data());
    return logits;
  }

  // Keeps only `kept[l][h]` of each head's cache (the compression at the end of prefill).
  void Compress(const KeptIndices& kept) {
    const size_t d = static_cast<size_t>(c_.head_dim);
    for (size_t l = 0; l < cache_k_.size(); ++l) {
      for (size_t h = 0; h < cache_k_[l].size(); ++h) {
        std::vector<float> nk, nv;
        for (int32_t j : kept[l][h]) {
          nk.insert(nk.end(), cache_k_[l][h].begin() + j * d, cache_k_[l][h].begin() + (j + 1) * d);
          nv.insert(nv.end(), cache_v_[l][h].begin() + j * d, cache_v_[l][h].begin() + (j + 1) * d);
        }
        cache_k_[l][h] = std::move(nk);
        cache_v_[l][h] = std::move(nv);
      }
    }
  }

  const std::vector<float>& q(int32_t layer) const { return q_[static_cast<size_t>(layer)]; }
  const std::vector<float>& k(int32_t layer) const { return k_[static_cast<size_t>(layer)]; }

 private:
  const ModelWeights& w_;
  const ModelConfig& c_;
  int64_t position_ = 0;
  std::vector<std::vector<std::vector<float>>> cache_k_, cache_v_;  // [layer][kv_head][entry*d]
  std::vector<std::vector<float>> q_, k_, v_;                       // last step's rows
};

// ---------------------------------------------------------------------------------------------

float MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

int32_t Argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// One layer's stored K (or V) rows of one KV head, in cache order: [entries][d].
std::vector<float> StoredRows(CpuModelRunner& r, const SequenceKv& kv, int32_t layer, int64_t head,
                              bool values) {
  const PagedKvGeometry& g = r.geometry();
  std::vector<float> out;
  for (int64_t e = 0; e < kv.layer_length(layer); ++e) {
    const float* block = r.block_data(kv.block_table(layer)[static_cast<size_t>(e / g.block_size)]);
    const float* row =
        block + (values ? g.VOffset(head, e % g.block_size) : g.KOffset(head, e % g.block_size));
    out.insert(out.end(), row, row + g.head_dim);
  }
  return out;
}

// For each stored row, the index of the identical (within tol) row of `full`; -1 if none.
std::vector<int32_t> MatchRows(const std::vector<float>& stored, const std::vector<float>& full,
                               int64_t d, float tol) {
  std::vector<int32_t> idx;
  const int64_t n_full = static_cast<int64_t>(full.size()) / d;
  for (size_t e = 0; e < stored.size() / static_cast<size_t>(d); ++e) {
    int32_t best = -1;
    float best_diff = tol;
    for (int64_t j = 0; j < n_full; ++j) {
      float diff = 0.0f;
      for (int64_t t = 0; t < d; ++t)
        diff = std::max(diff, std::fabs(stored[e * d + t] - full[j * d + t]));
      if (diff <= best_diff) {
        best = static_cast<int32_t>(j);
        best_diff = diff;
        if (diff == 0.0f) break;
      }
    }
    idx.push_back(best);
  }
  return idx;
}

class CompressionRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = ModelWeights::Open(::funnel::testing::Stories260KPath());
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = std::move(*w);
    auto t = Tokenizer::FromGguf(weights_->gguf());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
    golden_ = ::funnel::testing::LoadStories260KGolden();
    fed_.assign(golden_.full_sequence.begin(), golden_.full_sequence.begin() + 48);
    const std::string dir = ::funnel::testing::SharedDataPath("models/stories260K/");
    const std::string text = ReadFile(dir + "stories260K.sample.t1.p0.9.s133742.n256.txt") + "\n" +
                             ReadFile(dir + "stories260K.greedy.t0.n256.txt");
    long_ = tokenizer_->Encode(text);
    ASSERT_GE(long_.size(), 300u);
    long_.resize(300);
  }

  std::unique_ptr<CpuModelRunner> MakeRunner(int32_t block_size = 16,
                                             int64_t kv_bytes = int64_t{16} << 20,
                                             const ModelWeights* weights = nullptr) {
    RunnerOptions o;
    o.num_threads = 2;
    o.block_size = block_size;
    o.kv_cache_bytes = kv_bytes;
    auto r = CpuModelRunner::Create(weights != nullptr ? *weights : *weights_, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return std::move(*r);
  }

  static KvPolicy Policy(KvMethod m, int64_t budget, int32_t window = 8) {
    KvPolicy p;
    p.method = m;
    p.budget = budget;
    p.window = window;
    return p;
  }

  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ::funnel::testing::GoldenRun golden_;
  std::vector<int32_t> fed_;   // the golden run's 48 fed tokens
  std::vector<int32_t> long_;  // 300 tokens of story text
};

struct RunOutput {
  std::vector<float> prefill_logits;              // every prompt position
  std::vector<std::vector<float>> decode_logits;  // one row per decode step
};

// Prefill (all logits) then decode `decode` tokens one at a time.
RunOutput RunSequence(CpuModelRunner& r, SequenceKv& kv, const std::vector<int32_t>& prompt,
                      const KvPolicy* policy, const std::vector<int32_t>& decode) {
  RunOutput out;
  StepSequence s{&kv, prompt, true, policy};
  absl::Status st = r.Step({&s, 1}, out.prefill_logits);
  EXPECT_TRUE(st.ok()) << st;
  for (int32_t t : decode) {
    std::vector<float> logits;
    StepSequence d{&kv, std::span<const int32_t>(&t, 1), false};
    st = r.Step({&d, 1}, logits);
    EXPECT_TRUE(st.ok()) << st;
    out.decode_logits.push_back(std::move(logits));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

TEST_F(CompressionRunnerTest, FullAndBudgetsAtLeastNAreIdenticalToTheUncompressedPath) {
  for (const std::vector<int32_t>* prompt : {&fed_, &long_}) {
    const int64_t n = static_cast<int64_t>(prompt->size());
    SCOPED_TRACE(n);
    auto r = MakeRunner();
    SequenceKv base_kv = r->NewSequence();
    const std::vector<int32_t> decode = {golden_.full_sequence[5], 42, 300, 7, 1, 99};
    const RunOutput base = RunSequence(*r, base_kv, *prompt, nullptr, decode);
    r->Release(base_kv);
    std::vector<KvPolicy> policies = {KvPolicy{}};
    for (KvMethod m :
         {KvMethod::kPyramidKv, KvMethod::kSnapKv, KvMethod::kH2o, KvMethod::kStreamingLlm}) {
      policies.push_back(Policy(m, n + 1));  // N < B: nothing compressed
      policies.push_back(Policy(m, n + 1000));
      policies.push_back(Policy(m, n));  // N == B: compresses, but keeps all N in order
      KvPolicy ratio;
      ratio.method = m;
      ratio.ratio = 1.0;  // B = N
      policies.push_back(ratio);
    }
    for (const KvPolicy& p : policies) {
      SCOPED_TRACE(::testing::Message()
                   << KvMethodName(p.method) << " B=" << p.budget << " r=" << p.ratio);
      SequenceKv kv = r->NewSequence();
      const RunOutput got = RunSequence(*r, kv, *prompt, &p, decode);
      EXPECT_LE(MaxAbsDiff(got.prefill_logits, base.prefill_logits), 1e-6f);
      ASSERT_EQ(got.decode_logits.size(), base.decode_logits.size());
      for (size_t i = 0; i < decode.size(); ++i) {
        EXPECT_LE(MaxAbsDiff(got.decode_logits[i], base.decode_logits[i]), 1e-6f) << "decode " << i;
      }
      for (int32_t l = 0; l < 5; ++l)
        EXPECT_EQ(kv.layer_length(l), n + static_cast<int64_t>(decode.size()));
      EXPECT_EQ(kv.num_positions(), n + static_cast<int64_t>(decode.size()));
      r->Release(kv);
      EXPECT_EQ(r->pool().num_free(), r->pool().num_blocks());
    }
  }
}

// Compresses the long prompt with `policy` and checks the result against an uncompressed run
// and the naive forward pass: prefill logits, per-layer lengths, stored K/V rows (a subset of
// the full rows in ascending position order, window included, exactly the reference's choice),
// positions and the decode steps after compression. Returns the kept indices.
KeptIndices CheckCompressedRun(const ModelWeights& weights, CpuModelRunner& r,
                               const std::vector<int32_t>& prompt, const KvPolicy& policy,
                               int64_t* near_ties) {
  const ModelConfig& c = weights.config();
  const int64_t n = static_cast<int64_t>(prompt.size()), d = c.head_dim;
  const LayerBudgets budgets = ComputeLayerBudgets(policy, c.num_layers, n);
  EXPECT_TRUE(budgets.compress);
  const std::vector<int32_t> decode = {5, 77, 200, 13};

  SequenceKv full_kv = r.NewSequence();
  StepSequence fs{&full_kv, prompt, true};
  std::vector<float> full_logits;
  EXPECT_TRUE(r.Step({&fs, 1}, full_logits).ok());

  SequenceKv kv = r.NewSequence();
  StepSequence cs{&kv, prompt, true, &policy};
  std::vector<float> logits;
  const int32_t free_before = r.pool().num_free();
  absl::Status st = r.Step({&cs, 1}, logits);
  EXPECT_TRUE(st.ok()) << st;
  // The prefill's attention saw the full K/V: every position's logits equal the full run's.
  EXPECT_LE(MaxAbsDiff(logits, full_logits), 1e-6f);
  EXPECT_EQ(kv.num_positions(), n);
  int64_t blocks = 0;
  for (int32_t l = 0; l < c.num_layers; ++l) {
    EXPECT_EQ(kv.layer_length(l), budgets.stored(l)) << l;
    EXPECT_EQ(static_cast<int64_t>(kv.block_table(l).size()),
              (budgets.stored(l) + r.geometry().block_size - 1) / r.geometry().block_size);
    blocks += static_cast<int64_t>(kv.block_table(l).size());
  }
  EXPECT_EQ(free_before - r.pool().num_free(), blocks);

  RefModel ref(weights);
  const std::vector<float> ref_logits = ref.Step(prompt);
  EXPECT_LE(MaxAbsDiff(ref_logits,
                       std::span<const float>(logits).last(static_cast<size_t>(c.vocab_size))),
            1e-3f);

  KeptIndices kept(static_cast<size_t>(c.num_layers));
  for (int32_t l = 0; l < c.num_layers; ++l) {
    // The naive pass reproduces the runner's keys (so its queries are the runner's too).
    std::vector<std::vector<float>> full_k(static_cast<size_t>(c.num_kv_heads));
    for (int64_t h = 0; h < c.num_kv_heads; ++h) {
      full_k[h] = StoredRows(r, full_kv, l, h, false);
      const std::vector<float> full_v = StoredRows(r, full_kv, l, h, true);
      float kdiff = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t x = 0; x < d; ++x) {
          kdiff = std::max(
              kdiff, std::fabs(full_k[h][j * d + x] - ref.k(l)[(j * c.num_kv_heads + h) * d + x]));
        }
      }
      EXPECT_LT(kdiff, 1e-3f) << "layer " << l;
      const std::vector<float> stored_k = StoredRows(r, kv, l, h, false);
      const std::vector<float> stored_v = StoredRows(r, kv, l, h, true);
      std::vector<int32_t> idx = MatchRows(stored_k, full_k[h], d, 1e-5f);
      SCOPED_TRACE(::testing::Message() << "layer " << l << " kv head " << h);
      EXPECT_EQ(static_cast<int64_t>(idx.size()), budgets.stored(l));
      EXPECT_EQ(std::count(idx.begin(), idx.end(), -1), 0) << "stored rows that are no prompt row";
      EXPECT_TRUE(std::is_sorted(idx.begin(), idx.end())) << "not in ascending position order";
      EXPECT_EQ(std::adjacent_find(idx.begin(), idx.end()), idx.end()) << "a row stored twice";
      for (int64_t j = n - budgets.window; j < n; ++j) {
        EXPECT_TRUE(std::binary_search(idx.begin(), idx.end(), static_cast<int32_t>(j)))
            << "window " << j;
      }
      // V rows come from the same positions as the K rows.
      for (size_t e = 0; e < idx.size(); ++e) {
        if (idx[e] < 0) continue;
        for (int64_t x = 0; x < d; ++x) {
          EXPECT_NEAR(stored_v[e * d + x], full_v[idx[e] * d + x], 1e-5f) << e;
        }
      }
      // Exactly the brute-force reference's choice, from the runner's keys and the naive queries.
      RefSelectionArgs a;
      a.method = KvMethodName(policy.method);
      a.max_pool = policy.pooling == KvPooling::kMax;
      a.kernel = policy.kernel;
      a.q = ref.q(l).data();
      a.keys = full_k[h].data();
      a.n = n;
      a.num_heads = c.num_heads;
      a.num_kv_heads = c.num_kv_heads;
      a.head_dim = d;
      a.kv_head = h;
      a.window = budgets.window;
      a.selected = budgets.selected[static_cast<size_t>(l)];
      const RefSelection want = RefSelectKept(a);
      if (idx != want.kept) {
        // Only a near-tie (fp32 runner vs fp64 reference, queries from a second forward pass).
        std::vector<int32_t> diff;
        std::set_symmetric_difference(idx.begin(), idx.end(), want.kept.begin(), want.kept.end(),
                                      std::back_inserter(diff));
        const double boundary = RefBoundaryScore(want, a.selected);
        for (int32_t i : diff) {
          EXPECT_FALSE(want.scores.empty()) << "index " << i;
          EXPECT_LT(i, n - budgets.window);
          if (want.scores.empty() || i < 0 || i >= n - budgets.window) continue;
          EXPECT_NEAR(want.scores[static_cast<size_t>(i)], boundary, 1e-4 * std::fabs(boundary))
              << "index " << i << " is no near-tie";
        }
        ++*near_ties;
      }
      kept[l].push_back(idx);
    }
  }

  // Decode after compression: positions continue at N, each step appends one entry per layer,
  // and attention sees exactly the kept entries (the naive pass with the same cache agrees).
  ref.Compress(kept);
  for (size_t i = 0; i < decode.size(); ++i) {
    StepSequence ds{&kv, std::span<const int32_t>(&decode[i], 1), false};
    st = r.Step({&ds, 1}, logits);
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(kv.num_positions(), n + static_cast<int64_t>(i) + 1);
    for (int32_t l = 0; l < c.num_layers; ++l)
      EXPECT_EQ(kv.layer_length(l), budgets.stored(l) + static_cast<int64_t>(i) + 1);
    const std::vector<float> want = ref.Step({decode[i]});
    EXPECT_LE(MaxAbsDiff(logits, want), 1e-3f) << "decode step " << i;
  }
  // The newest entry of each layer is the decoded token's K at position N + steps - 1.
  const std::vector<float> last_k = ref.k(0);
  const std::vector<float> stored0 = StoredRows(r, kv, 0, 0, false);
  for (int64_t x = 0; x < d; ++x) {
    EXPECT_NEAR(stored0[stored0.size() - static_cast<size_t>(d) + static_cast<size_t>(x)],
                last_k[x], 1e-4f);
  }

  r.Release(kv);
  r.Release(full_kv);
  EXPECT_EQ(r.pool().num_free(), r.pool().num_blocks());
  return kept;
}

TEST_F(CompressionRunnerTest, PyramidKvOnALongPromptKeepsTheReferenceSelection) {
  int64_t near_ties = 0;
  for (int32_t block_size : {16, 5}) {
    for (BudgetRounding rounding : {BudgetRounding::kExact, BudgetRounding::kOfficial}) {
      SCOPED_TRACE(::testing::Message()
                   << "block " << block_size << " " << BudgetRoundingName(rounding));
      auto r = MakeRunner(block_size);
      KvPolicy p = Policy(KvMethod::kPyramidKv, 32);
      p.rounding = rounding;
      const KeptIndices kept = CheckCompressedRun(*weights_, *r, long_, p, &near_ties);
      // The pyramid: layer 0 keeps the most.
      ASSERT_EQ(kept.size(), 5u);
      EXPECT_GT(kept[0][0].size(), kept[4][0].size());
    }
  }
  EXPECT_LE(near_ties, 2);
}

TEST_F(CompressionRunnerTest, OtherMethodsKeepTheReferenceSelection) {
  int64_t near_ties = 0;
  auto r = MakeRunner(16);
  KvPolicy snap_avg = Policy(KvMethod::kSnapKv, 48, 16);
  snap_avg.pooling = KvPooling::kAvg;
  snap_avg.kernel = 5;
  KvPolicy pyramid_k1 = Policy(KvMethod::kPyramidKv, 100, 4);
  pyramid_k1.kernel = 1;
  KvPolicy ratio;
  ratio.method = KvMethod::kPyramidKv;
  ratio.ratio = 0.2;
  for (const KvPolicy& p : {Policy(KvMethod::kSnapKv, 40), Policy(KvMethod::kH2o, 40), snap_avg,
                            pyramid_k1, Policy(KvMethod::kH2o, 64, 1), ratio}) {
    SCOPED_TRACE(::testing::Message()
                 << KvMethodName(p.method) << " B=" << p.budget << " r=" << p.ratio);
    CheckCompressedRun(*weights_, *r, long_, p, &near_ties);
  }
  EXPECT_LE(near_ties, 2);
}

TEST_F(CompressionRunnerTest, StreamingLlmKeepsFourSinksAndTheLastBMinus4) {
  int64_t near_ties = 0;
  for (int64_t budget : {32, 5, 77}) {
    auto r = MakeRunner(16);
    const KeptIndices kept = CheckCompressedRun(
        *weights_, *r, long_, Policy(KvMethod::kStreamingLlm, budget), &near_ties);
    std::vector<int32_t> want = {0, 1, 2, 3};
    for (int32_t i = 300 - static_cast<int32_t>(budget - 4); i < 300; ++i) want.push_back(i);
    for (const auto& layer : kept) {
      for (const auto& head : layer) EXPECT_EQ(head, want) << budget;
    }
  }
  EXPECT_EQ(near_ties, 0);
}

TEST_F(CompressionRunnerTest, GoldenPromptCompressed) {
  // The 48 fed golden tokens, snapkv B = 24: the first predicted token is unchanged.
  int64_t near_ties = 0;
  auto r = MakeRunner(16);
  CheckCompressedRun(*weights_, *r, fed_, Policy(KvMethod::kSnapKv, 24), &near_ties);
  SequenceKv kv = r->NewSequence();
  const KvPolicy p = Policy(KvMethod::kPyramidKv, 24);
  StepSequence s{&kv, fed_, false, &p};
  std::vector<float> logits;
  ASSERT_TRUE(r->Step({&s, 1}, logits).ok());
  EXPECT_EQ(Argmax(logits), golden_.full_sequence[48]);
  float m = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i)
    m = std::max(m, std::fabs(logits[i] - golden_.logits[47][i]));
  EXPECT_LT(m, 1e-3f);
  r->Release(kv);
  EXPECT_LE(near_ties, 1);
}

TEST_F(CompressionRunnerTest, BatchedWithOtherSequencesGivesTheSoloResults) {
  // A compressing prefill, an uncompressed prefill, a second compressing prefill with another
  // method and a decode share one step; each matches its solo run bit for bit (within 1e-6).
  auto r = MakeRunner(8);
  const KvPolicy pyr = Policy(KvMethod::kPyramidKv, 32);
  const KvPolicy h2o = Policy(KvMethod::kH2o, 20, 4);
  const std::vector<int32_t> short_prompt(long_.begin(), long_.begin() + 90);
  struct Solo {
    std::vector<float> logits;
    std::vector<std::vector<std::vector<float>>> k;  // [layer][head] rows
  };
  auto snapshot = [&](const SequenceKv& kv) {
    std::vector<std::vector<std::vector<float>>> k(5);
    for (int32_t l = 0; l < 5; ++l) {
      for (int64_t h = 0; h < 4; ++h) k[l].push_back(StoredRows(*r, kv, l, h, false));
    }
    return k;
  };
  SequenceKv dec = r->NewSequence();
  StepSequence warm{&dec, std::span<const int32_t>(fed_).first(47), false};
  std::vector<float> logits;
  ASSERT_TRUE(r->Step({&warm, 1}, logits).ok());
  const int32_t next = fed_[47];

  std::vector<Solo> solo;
  for (int i = 0; i < 3; ++i) {
    SequenceKv kv = r->NewSequence();
    const KvPolicy* p = i == 0 ? &pyr : i == 1 ? nullptr : &h2o;
    const std::vector<int32_t>& prompt = i == 2 ? short_prompt : long_;
    StepSequence s{&kv, prompt, false, p};
    ASSERT_TRUE(r->Step({&s, 1}, logits).ok());
    solo.push_back({logits, snapshot(kv)});
    r->Release(kv);
  }

  std::vector<SequenceKv> kvs;
  for (int i = 0; i < 3; ++i) kvs.push_back(r->NewSequence());
  std::vector<StepSequence> batch = {{&kvs[1], long_, false, nullptr},
                                     {&kvs[0], long_, false, &pyr},
                                     {&dec, std::span<const int32_t>(&next, 1), false, nullptr},
                                     {&kvs[2], short_prompt, false, &h2o}};
  ASSERT_TRUE(r->Step(batch, logits).ok());
  const size_t vocab = 512;
  ASSERT_EQ(logits.size(), 4 * vocab);
  const size_t row_of[3] = {1, 0, 3};
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    EXPECT_LE(MaxAbsDiff({logits.data() + row_of[i] * vocab, vocab}, solo[i].logits), 1e-6f);
    const auto k = snapshot(kvs[i]);
    for (int32_t l = 0; l < 5; ++l) {
      for (int64_t h = 0; h < 4; ++h) {
        ASSERT_EQ(k[l][h].size(), solo[i].k[l][h].size()) << l;
        EXPECT_LE(MaxAbsDiff(k[l][h], solo[i].k[l][h]), 1e-6f) << l << " " << h;
      }
    }
  }
  EXPECT_EQ(kvs[2].layer_length(0), 20);
  EXPECT_EQ(kvs[1].layer_length(3), 300);
  for (int32_t l = 0; l < 5; ++l)
    EXPECT_EQ(dec.layer_length(l), 48);  // the decode appended one entry
  // The decode step matches the golden logits.
  float m = 0.0f;
  for (size_t i = 0; i < vocab; ++i)
    m = std::max(m, std::fabs(logits[2 * vocab + i] - golden_.logits[47][i]));
  EXPECT_LT(m, 1e-3f);
  for (auto& kv : kvs) r->Release(kv);
  r->Release(dec);
  EXPECT_EQ(r->pool().num_free(), r->pool().num_blocks());
}

TEST_F(CompressionRunnerTest, AdmissionUsesTheCompressedFootprint) {
  const int32_t bs = 16;
  const KvPolicy p = Policy(KvMethod::kPyramidKv, 32);
  const LayerBudgets b = ComputeLayerBudgets(p, 5, 300);
  int64_t compressed_blocks = 0;
  for (int32_t l = 0; l < 5; ++l) compressed_blocks += (b.stored(l) + bs - 1) / bs;
  const int64_t full_blocks = 5 * ((300 + bs - 1) / bs);
  ASSERT_LT(compressed_blocks, full_blocks);
  const int64_t block_bytes = 2 * 4 * bs * 8 * 4;

  {  // One block short of the compressed size: ResourceExhausted, nothing changed.
    auto r = MakeRunner(bs, (compressed_blocks - 1) * block_bytes);
    ASSERT_EQ(r->pool().num_blocks(), compressed_blocks - 1);
    SequenceKv kv = r->NewSequence();
    StepSequence s{&kv, long_, false, &p};
    std::vector<float> logits;
    const absl::Status st = r->Step({&s, 1}, logits);
    EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
    EXPECT_EQ(r->pool().num_free(), r->pool().num_blocks());
    EXPECT_EQ(kv.num_positions(), 0);
    EXPECT_EQ(kv.num_blocks(), 0);
    for (int32_t l = 0; l < 5; ++l) EXPECT_EQ(kv.layer_length(l), 0);
  }
  {  // Exactly the compressed size: fits, though the full cache would not.
    auto r = MakeRunner(bs, compressed_blocks * block_bytes);
    ASSERT_EQ(r->pool().num_blocks(), compressed_blocks);
    SequenceKv full = r->NewSequence();
    StepSequence fs{&full, long_, false};
    std::vector<float> logits;
    EXPECT_EQ(r->Step({&fs, 1}, logits).code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(r->pool().num_free(), r->pool().num_blocks());
    SequenceKv kv = r->NewSequence();
    StepSequence s{&kv, long_, false, &p};
    const absl::Status st = r->Step({&s, 1}, logits);
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(r->pool().num_free(), 0);
    EXPECT_EQ(kv.num_blocks(), compressed_blocks);
    r->Release(kv);
    EXPECT_EQ(r->pool().num_free(), r->pool().num_blocks());
  }
  {  // Two compressed prefills in one step are admitted (or refused) together.
    auto r = MakeRunner(bs, (2 * compressed_blocks - 1) * block_bytes);
    SequenceKv a = r->NewSequence(), c = r->NewSequence();
    std::vector<StepSequence> batch = {{&a, long_, false, &p}, {&c, long_, false, &p}};
    std::vector<float> logits;
    EXPECT_EQ(r->Step(batch, logits).code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(r->pool().num_free(), r->pool().num_blocks());
    EXPECT_EQ(a.num_blocks() + c.num_blocks(), 0);
  }
}

TEST_F(CompressionRunnerTest, GenerateReportsKvStats) {
  auto r = MakeRunner(16);
  SamplingParams sp;
  sp.temperature = 0.0f;
  sp.max_tokens = 6;
  sp.ignore_eos = true;
  const int64_t n = 300, block_bytes = r->block_bytes(), entry_bytes = r->entry_bytes();
  ASSERT_EQ(block_bytes, 2 * 4 * 16 * 8 * 4);
  ASSERT_EQ(entry_bytes, block_bytes / 16);
  KvPolicy official = Policy(KvMethod::kPyramidKv, 32);
  official.rounding = BudgetRounding::kOfficial;
  KvPolicy ratio;
  ratio.method = KvMethod::kSnapKv;
  ratio.ratio = 0.1;
  auto full = Generate(*r, *tokenizer_, long_, sp, 0, KvPolicy{});
  ASSERT_TRUE(full.ok()) << full.status();
  for (const KvPolicy& p :
       {KvPolicy{}, Policy(KvMethod::kPyramidKv, 32), official, Policy(KvMethod::kSnapKv, 64),
        Policy(KvMethod::kH2o, 50, 2), Policy(KvMethod::kStreamingLlm, 40), ratio,
        Policy(KvMethod::kSnapKv, 1000)}) {
    SCOPED_TRACE(::testing::Message()
                 << KvMethodName(p.method) << " B=" << p.budget << " r=" << p.ratio);
    auto res = Generate(*r, *tokenizer_, long_, sp, 0, p);
    ASSERT_TRUE(res.ok()) << res.status();
    EXPECT_EQ(res->output_ids.size(), 6u);
    const LayerBudgets b = ComputeLayerBudgets(p, 5, n);
    const KvStats& kv = res->kv;
    EXPECT_EQ(kv.method, KvMethodName(p.method));
    ASSERT_EQ(kv.per_layer_tokens.size(), 5u);
    int64_t blocks = 0, stored = 0;
    for (int32_t l = 0; l < 5; ++l) {
      EXPECT_EQ(kv.per_layer_tokens[l], b.stored(l)) << l;
      blocks += (b.stored(l) + 15) / 16;
      stored += b.stored(l);
    }
    EXPECT_EQ(kv.kv_bytes, blocks * block_bytes);
    EXPECT_GE(kv.kv_bytes, stored * entry_bytes);
    EXPECT_LT(kv.kv_bytes - stored * entry_bytes, 5 * block_bytes);  // under one block per layer
    EXPECT_EQ(kv.full_kv_bytes, n * 5 * entry_bytes);
    EXPECT_EQ(kv.budget, b.budget);
    if (b.compress) {
      EXPECT_EQ(kv.window, b.window);
      EXPECT_LT(kv.kv_bytes, kv.full_kv_bytes);
    } else {
      EXPECT_EQ(kv.budget, n);
      EXPECT_GT(kv.kv_bytes, kv.full_kv_bytes);  // 300 is no block multiple: 19 blocks of 16
      EXPECT_EQ(res->output_ids, full->output_ids);
    }
    EXPECT_EQ(r->pool().num_free(), r->pool().num_blocks());
  }
}

// Feeds `prompt` in chunks of `chunks` tokens; the last chunk carries `policy`. Returns the logits
// of every prompt position.
std::vector<float> RunChunked(CpuModelRunner& r, SequenceKv& kv, const std::vector<int32_t>& prompt,
                              const KvPolicy& policy, const std::vector<int64_t>& chunks) {
  std::vector<float> all, logits;
  int64_t at = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const bool last = i + 1 == chunks.size();
    StepSequence s{&kv,
                   std::span<const int32_t>(prompt).subspan(static_cast<size_t>(at),
                                                            static_cast<size_t>(chunks[i])),
                   true, last ? &policy : nullptr};
    const absl::Status st = r.Step({&s, 1}, logits);
    EXPECT_TRUE(st.ok()) << st;
    all.insert(all.end(), logits.begin(), logits.end());
    at += chunks[i];
  }
  EXPECT_EQ(at, static_cast<int64_t>(prompt.size()));
  return all;
}

TEST_F(CompressionRunnerTest, ChunkedPrefillKeepsWhatTheOneStepPrefillKeeps) {
  // Earlier chunks write full K/V to the pool; the last chunk scores every entry and keeps the
  // same rows as compressing the whole prompt in one step, then frees the temporary blocks.
  const std::vector<std::vector<int64_t>> schedules = {
      {100, 100, 100}, {7, 150, 143}, {292, 8}, {1, 299}};
  KvPolicy snap_avg = Policy(KvMethod::kSnapKv, 48, 16);
  snap_avg.pooling = KvPooling::kAvg;
  for (int32_t bs : {16, 5}) {
    auto r = MakeRunner(bs);
    for (const KvPolicy& p : {Policy(KvMethod::kPyramidKv, 32), Policy(KvMethod::kSnapKv, 40),
                              snap_avg, Policy(KvMethod::kStreamingLlm, 40)}) {
      SequenceKv one = r->NewSequence();
      StepSequence s{&one, long_, true, &p};
      std::vector<float> one_logits;
      ASSERT_TRUE(r->Step({&s, 1}, one_logits).ok());
      const int32_t used_one = r->pool().num_used();
      for (const std::vector<int64_t>& chunks : schedules) {
        if (chunks.back() < p.window && p.method != KvMethod::kStreamingLlm) continue;
        SCOPED_TRACE(::testing::Message()
                     << "block " << bs << " " << KvMethodName(p.method) << " B=" << p.budget
                     << " chunks " << chunks.size() << " last " << chunks.back());
        SequenceKv kv = r->NewSequence();
        const std::vector<float> logits = RunChunked(*r, kv, long_, p, chunks);
        EXPECT_LE(MaxAbsDiff(logits, one_logits), 1e-4f);
        EXPECT_EQ(r->pool().num_used(), 2 * used_one)
            << "the temporary full-K/V blocks are returned";
        EXPECT_EQ(kv.num_positions(), 300);
        for (int32_t l = 0; l < 5; ++l) {
          ASSERT_EQ(kv.layer_length(l), one.layer_length(l)) << l;
          for (int64_t h = 0; h < 4; ++h) {
            for (bool values : {false, true}) {
              EXPECT_LE(
                  MaxAbsDiff(StoredRows(*r, kv, l, h, values), StoredRows(*r, one, l, h, values)),
                  1e-5f)
                  << "layer " << l << " head " << h;
            }
          }
        }
        // Decoding continues identically.
        for (int32_t t : {5, 77}) {
          std::vector<float> a, b;
          StepSequence da{&one, std::span<const int32_t>(&t, 1), false};
          StepSequence db{&kv, std::span<const int32_t>(&t, 1), false};
          ASSERT_TRUE(r->Step({&da, 1}, a).ok());
          ASSERT_TRUE(r->Step({&db, 1}, b).ok());
          EXPECT_LE(MaxAbsDiff(a, b), 1e-4f);
        }
        r->Release(kv);
        // Roll `one` back to its compressed prompt for the next schedule.
        for (int32_t l = 0; l < 5; ++l) one.Truncate(r->pool(), l, one.layer_length(l) - 2);
        one.set_num_positions(300);
      }
      r->Release(one);
      EXPECT_EQ(r->pool().num_free(), r->pool().num_blocks());
    }
  }
}

TEST_F(CompressionRunnerTest, ChunkedCompressionRefusesStepsItCannotScore) {
  auto r = MakeRunner(16);
  std::vector<float> logits;
  const std::span<const int32_t> prompt(long_);
  SequenceKv kv = r->NewSequence();
  StepSequence first{&kv, prompt.first(200), false};
  ASSERT_TRUE(r->Step({&first, 1}, logits).ok());
  const int32_t used = r->pool().num_used();
  const auto expect_refused = [&](const KvPolicy& p, std::span<const int32_t> tokens) {
    StepSequence s{&kv, tokens, false, &p};
    const absl::Status st = r->Step({&s, 1}, logits);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_EQ(r->pool().num_used(), used);
    EXPECT_EQ(kv.num_positions(), 200);
    for (int32_t l = 0; l < 5; ++l) EXPECT_EQ(kv.layer_length(l), 200);
  };
  expect_refused(Policy(KvMethod::kH2o, 40), prompt.subspan(200));  // h2o needs every query
  expect_refused(Policy(KvMethod::kSnapKv, 40, 16),
                 prompt.subspan(200, 15));  // less than the window
  StepSequence rest{&kv, prompt.subspan(200), false, nullptr};
  const KvPolicy p = Policy(KvMethod::kSnapKv, 40);
  rest.policy = &p;
  ASSERT_TRUE(r->Step({&rest, 1}, logits).ok());
  // A compressed cache is no uncompressed prefix: compressing again is refused.
  const int32_t t = 9;
  StepSequence again{&kv, std::span<const int32_t>(&t, 1), false, &p};
  EXPECT_EQ(r->Step({&again, 1}, logits).code(), absl::StatusCode::kInvalidArgument);
  r->Release(kv);
}

// Other GQA shapes and head sizes, on random-weight models.
TEST(CompressionRandomModelTest, GqaShapesKeepTheReferenceSelection) {
  const auto dir = std::filesystem::temp_directory_path() / "funnel_compression_runner_test";
  std::filesystem::create_directories(dir);
  struct Shape {
    int32_t dim, heads, kv_heads;
  };
  int64_t near_ties = 0;
  for (const Shape sh : {Shape{96, 8, 2}, Shape{64, 4, 1}, Shape{48, 4, 4}}) {
    SCOPED_TRACE(::testing::Message()
                 << sh.heads << "/" << sh.kv_heads << " heads, dim " << sh.dim);
    RandomModelSpec spec;
    spec.num_layers = 3;
    spec.dim = sh.dim;
    spec.num_heads = sh.heads;
    spec.num_kv_heads = sh.kv_heads;
    spec.ffn_dim = 80;
    spec.seed = static_cast<uint64_t>(sh.dim + sh.heads);
    const std::string path =
        (dir / ("m" + std::to_string(sh.dim) + "_" + std::to_string(sh.kv_heads) + ".gguf"))
            .string();
    ASSERT_TRUE(WriteRandomModel(spec, path).ok());
    auto w = ModelWeights::Open(path);
    ASSERT_TRUE(w.ok()) << w.status();
    std::mt19937 rng(7);
    std::vector<int32_t> prompt(157);
    for (int32_t& t : prompt) t = static_cast<int32_t>(3 + rng() % 500);
    RunnerOptions o;
    o.num_threads = 2;
    o.block_size = 7;
    o.kv_cache_bytes = int64_t{8} << 20;
    auto r = CpuModelRunner::Create(**w, o);
    ASSERT_TRUE(r.ok()) << r.status();
    KvPolicy avg;
    avg.method = KvMethod::kSnapKv;
    avg.budget = 41;
    avg.window = 11;
    avg.pooling = KvPooling::kAvg;
    avg.kernel = 3;
    KvPolicy pyr;
    pyr.method = KvMethod::kPyramidKv;
    pyr.budget = 30;
    KvPolicy h2o;
    h2o.method = KvMethod::kH2o;
    h2o.budget = 25;
    h2o.window = 3;
    for (const KvPolicy& p : {avg, pyr, h2o}) {
      SCOPED_TRACE(KvMethodName(p.method));
      CheckCompressedRun(**w, **r, prompt, p, &near_ties);
    }
  }
  EXPECT_LE(near_ties, 2);
}

}  // namespace
}  // namespace funnel
