#include "runtime/text/bpe_merges.h"

#include <algorithm>
#include <array>
#include <limits>
#include <queue>

namespace funnel {
namespace {

constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();
// Words up to this many symbols use the quadratic scan, which is faster for short words.
constexpr size_t kShortWord = 48;

}  // namespace

void BpeMerges::Add(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  auto [it, inserted] = merges_.try_emplace(Key(left, right), Merge{rank, merged});
  if (!inserted && rank < it->second.rank) it->second = Merge{rank, merged};
}

const BpeMerges::Merge* BpeMerges::Find(int32_t left, int32_t right) const {
  if (left < 0 || right < 0) return nullptr;
  const auto it = merges_.find(Key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeMerges::MergeWord(std::vector<int32_t>& symbols) const {
  if (symbols.size() < 2) return;
  if (symbols.size() <= kShortWord) {
    MergeShort(symbols);
  } else {
    MergeLong(symbols);
  }
}

// O(n^2) on stack arrays: ranks[i] / merged[i] describe the pair (symbols[i], symbols[i+1]).
void BpeMerges::MergeShort(std::vector<int32_t>& symbols) const {
  std::array<int32_t, kShortWord> ids;
  std::array<int32_t, kShortWord> ranks;
  std::array<int32_t, kShortWord> merged;
  size_t n = symbols.size();
  std::copy(symbols.begin(), symbols.end(), ids.begin());
  auto pair_at = [&](size_t i) {
    const Merge* m = Find(ids[i], ids[i + 1]);
    ranks[i] = m ? m->rank : kNoRank;
    merged[i] = m ? m->merged : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) pair_at(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (ranks[i] < ranks[best]) best = i;
    }
    if (ranks[best] == kNoRank) break;
    ids[best] = merged[best];
    // Drop symbol best+1 and pair best; pairs after it shift left by one.
    for (size_t i = best + 1; i + 1 < n; ++i) ids[i] = ids[i + 1];
    for (size_t i = best; i + 2 < n; ++i) {
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best > 0) pair_at(best - 1);
    if (best + 1 < n) pair_at(best);
  }
  symbols.assign(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n));
}

// O(n log n): a doubly linked list of symbols and a heap of candidate pairs; entries whose
// symbols changed since they were queued are skipped when popped.
void BpeMerges::MergeLong(std::vector<int32_t>& symbols) const {
  const size_t n = symbols.size();
  constexpr size_t kNone = std::numeric_limits<size_t>::max();
  std::vector<size_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = i == 0 ? kNone : i - 1;
    next[i] = i + 1 == n ? kNone : i + 1;
  }
  struct Candidate {
    int32_t rank;
    size_t left;
    int32_t left_id;
    int32_t right_id;
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
  auto push = [&](size_t left) {
    if (left == kNone || next[left] == kNone) return;
    const int32_t l = symbols[left];
    const int32_t r = symbols[next[left]];
    if (const Merge* m = Find(l, r)) heap.push({m->rank, left, l, r});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> dead(n, false);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (dead[c.left] || next[c.left] == kNone) continue;
    const size_t right = next[c.left];
    if (symbols[c.left] != c.left_id || symbols[right] != c.right_id) continue;  // stale
    symbols[c.left] = Find(c.left_id, c.right_id)->merged;
    dead[right] = true;
    next[c.left] = next[right];
    if (next[right] != kNone) prev[next[right]] = c.left;
    push(prev[c.left]);
    push(c.left);
  }
  size_t out = 0;
  for (size_t i = 0; i != kNone; i = next[i]) symbols[out++] = symbols[i];
  symbols.resize(out);
}

}  // namespace funnel
