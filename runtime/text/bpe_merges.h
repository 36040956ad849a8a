// Rank-ordered BPE merges over token ids, and the merge loop shared by the BPE encoders.
//
// A merge (left id, right id) → (rank, merged id) says that two adjacent symbols whose tokens
// are `left` and `right` may be replaced by `merged`; lower ranks merge first. MergeWord applies
// them the way Hugging Face's BPE, tiktoken and llama.cpp do: repeatedly merge the adjacent pair
// of lowest rank, the leftmost one on ties, until no adjacent pair has a merge.
//
// Immutable after construction; safe to share between threads.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace funnel {

class BpeMerges {
 public:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };

  // Adds a merge; a pair that already has one keeps the lower rank.
  void Add(int32_t left, int32_t right, int32_t rank, int32_t merged);
  // The merge for (left, right), or null. Negative ids never have merges.
  const Merge* Find(int32_t left, int32_t right) const;
  size_t size() const { return merges_.size(); }
  void Reserve(size_t n) { merges_.reserve(n); }

  // Merges `symbols` (token ids; negative ids are symbols that never merge) in place.
  void MergeWord(std::vector<int32_t>& symbols) const;

 private:
  static uint64_t Key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  void MergeShort(std::vector<int32_t>& symbols) const;
  void MergeLong(std::vector<int32_t>& symbols) const;

  absl::flat_hash_map<uint64_t, Merge> merges_;
};

}  // namespace funnel
