// Reads a SentencePiece model (the `tokenizer.model` of Llama 2 and Mistral v1..v7: a serialized
// sentencepiece.ModelProto) into a Vocabulary for the "llama" algorithm, parsing the protobuf
// wire format directly (no libprotobuf / libsentencepiece: those cannot share a process with
// gRPC's protobuf, see build-notes P1).
//
// Read: pieces (piece, score, type), trainer_spec (model_type, unk/bos/eos/pad ids),
// normalizer_spec (name, add_dummy_prefix, remove_extra_whitespaces, precompiled_charsmap).
// Supported: model_type BPE with the identity normalizer. InvalidArgument for truncated or
// malformed protobuf, other model types (UNIGRAM, WORD, CHAR), a non-identity normalization
// table (ids are range-checked by Tokenizer::FromVocab).
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/text/tokenizer.h"

namespace funnel {

absl::StatusOr<Vocabulary> VocabularyFromSentencePiece(std::string_view model_proto);

// Whether `bytes` starts like a ModelProto (its first field is a `pieces` entry).
bool LooksLikeSentencePiece(std::string_view bytes);

}  // namespace funnel
