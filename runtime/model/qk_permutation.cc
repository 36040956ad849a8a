#include "runtime/model/qk_permutation.h"

#include <cstring>

namespace funnel {

int64_t QkSourceRow(QkPermutation permutation, int64_t row, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  const int64_t head = row / head_dim, r = row % head_dim;
  int64_t src;
  if (permutation == QkPermutation::kHalfSplitToAdjacent) {
    src = (r % 2) * half + r / 2;  // r = 2i + j  <-  j * half + i
  } else {
    src = (r % half) * 2 + r / half;  // r = j * half + i  <-  2i + j
  }
  return head * head_dim + src;
}

void PermuteQkRows(QkPermutation permutation, const uint8_t* src, uint8_t* dst, int64_t rows,
                   int64_t row_bytes, int64_t head_dim) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * row_bytes, src + QkSourceRow(permutation, r, head_dim) * row_bytes,
                static_cast<size_t>(row_bytes));
  }
}

std::vector<float> PermuteQkVector(QkPermutation permutation, std::span<const float> v,
                                   int64_t head_dim) {
  std::vector<float> out(v.size());
  PermuteQkRows(permutation, reinterpret_cast<const uint8_t*>(v.data()),
                reinterpret_cast<uint8_t*>(out.data()), static_cast<int64_t>(v.size()),
                sizeof(float), head_dim);
  return out;
}

}  // namespace funnel
