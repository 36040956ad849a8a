// Q/K row orders of the two RoPE layouts.
//
// Hugging Face Llama-family checkpoints rotate each head's dims as half-split pairs
// (i, i + head_dim/2) ("rotate_half"); GGUF llama rotates adjacent pairs (2i, 2i+1). llama.cpp's
// convert_hf_to_gguf turns one into the other by permuting the rows of W_q and W_k within each
// head:  gguf_row(h, 2i + j) = hf_row(h, j * head_dim/2 + i)   for i < head_dim/2, j in {0, 1}.
// Permuting the rows of W_q/W_k (and of the q/k biases) this way changes nothing else: q·k is a
// sum over dims, so attention scores are the same once both sides use the same order.
//
// Funnel's runner rotates adjacent pairs, so the HF loader applies kHalfSplitToAdjacent to Q/K
// weights and biases, and the GGUF -> HF converter applies kAdjacentToHalfSplit (undoing the
// GGUF permutation exactly).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace funnel {

enum class QkPermutation {
  kHalfSplitToAdjacent,  // HF rows -> GGUF rows (loading an HF checkpoint)
  kAdjacentToHalfSplit,  // GGUF rows -> HF rows (converting GGUF to HF)
};

// The source row of destination row `row` (rows of all heads, head_dim rows per head; head_dim
// even).
int64_t QkSourceRow(QkPermutation permutation, int64_t row, int64_t head_dim);

// dst row r = src row QkSourceRow(r), for `rows` rows of `row_bytes` bytes each (rows a multiple
// of head_dim). src and dst must not overlap.
void PermuteQkRows(QkPermutation permutation, const uint8_t* src, uint8_t* dst, int64_t rows,
                   int64_t row_bytes, int64_t head_dim);

// The same permutation of a vector (a q/k bias, one value per row).
std::vector<float> PermuteQkVector(QkPermutation permutation, std::span<const float> v,
                                   int64_t head_dim);

}  // namespace funnel
