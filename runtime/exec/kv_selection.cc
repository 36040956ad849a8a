#include "runtime/exec/kv_selection.h"

#include <cassert>
#include <cmath>
#include <numeric>

#include "kernels/cpu/kv_compress.h"

namespace funnel {

std::vector<int32_t> SelectKeptIndices(const SelectionInput& in, int64_t kv_head,
                                       SelectionScratch& sc) {
  const int64_t n = in.n, w = in.window, prefix = n - w;
  std::vector<int32_t> kept;
  if (in.method == KvMethod::kFull) {
    kept.resize(static_cast<size_t>(n));
    std::iota(kept.begin(), kept.end(), 0);
    return kept;
  }
  if (in.method == KvMethod::kStreamingLlm) {
    for (int32_t i = 0; i < in.selected; ++i) kept.push_back(i);
  } else if (in.selected > 0) {
    const int64_t group = in.num_heads / in.num_kv_heads;
    const int64_t q_stride = in.num_heads * in.head_dim;
    ScoreArgs args{in.q,
                   in.num_heads,
                   in.num_kv_heads,
                   in.head_dim,
                   in.keys,
                   n,
                   1.0f / std::sqrt(static_cast<float>(in.head_dim))};
    sc.averaged.resize(static_cast<size_t>(prefix));
    if (in.method == KvMethod::kH2o) {
      assert(in.q_rows == n && "h2o scores every prompt query");
      H2oScores(args, kv_head, w, sc.scores);
      AverageRows(sc.scores.data(), group, prefix, sc.averaged.data());
    } else {
      assert(in.q_rows >= w && "the window's queries are needed");
      args.q += (in.q_rows - w) * q_stride;
      WindowScores(args, kv_head, w, sc.scores);
      sc.pooled.resize(static_cast<size_t>(group * prefix));
      const PoolingKind kind =
          in.pooling == KvPooling::kMax ? PoolingKind::kMax : PoolingKind::kAvg;
      for (int64_t h = 0; h < group; ++h) {
        Pool1d(sc.scores.data() + h * prefix, prefix, in.kernel, kind,
               sc.pooled.data() + h * prefix);
      }
      AverageRows(sc.pooled.data(), group, prefix, sc.averaged.data());
    }
    kept = TopKIndices(sc.averaged.data(), prefix, in.selected);
  }
  for (int64_t i = prefix; i < n; ++i) kept.push_back(static_cast<int32_t>(i));
  return kept;
}

}  // namespace funnel
