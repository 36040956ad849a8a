#include "runtime/text/sentencepiece_model.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

// Protobuf wire types.
constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLengthDelimited = 2;
constexpr int kFixed32 = 5;

// One field of a message: its number, wire type and value (varint / fixed bits, or bytes).
struct Field {
  uint32_t number = 0;
  int wire_type = 0;
  uint64_t value = 0;
  std::string_view bytes;
};

// Sequential reader over one message's bytes; every read is bounds-checked.
class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }

  absl::StatusOr<Field> Next() {
    Field f;
    ASSIGN_OR_RETURN(uint64_t key, Varint());
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire_type = static_cast<int>(key & 7);
    switch (f.wire_type) {
      case kVarint: {
        ASSIGN_OR_RETURN(f.value, Varint());
        break;
      }
      case kFixed64:
      case kFixed32: {
        const size_t n = f.wire_type == kFixed64 ? 8 : 4;
        if (data_.size() - pos_ < n) return Truncated();
        std::memcpy(&f.value, data_.data() + pos_, n);  // little-endian host
        pos_ += n;
        break;
      }
      case kLengthDelimited: {
        ASSIGN_OR_RETURN(uint64_t n, Varint());
        if (n > data_.size() - pos_) return Truncated();
        f.bytes = data_.substr(pos_, n);
        pos_ += n;
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("SentencePiece model: unsupported protobuf wire type ", f.wire_type,
                         " at byte ", pos_));
    }
    return f;
  }

 private:
  absl::Status Truncated() const {
    return absl::InvalidArgumentError(
        absl::StrCat("SentencePiece model: truncated protobuf at byte ", pos_));
  }
  absl::StatusOr<uint64_t> Varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return Truncated();
      const auto b = static_cast<uint8_t>(data_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return v;
    }
    return absl::InvalidArgumentError("SentencePiece model: varint longer than 10 bytes");
  }

  std::string_view data_;
  size_t pos_ = 0;
};

float AsFloat(uint64_t bits) {
  const auto b = static_cast<uint32_t>(bits);
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}

// int32 fields are sign-extended to 64 bits on the wire (-1 is ten bytes).
int32_t AsInt32(uint64_t v) { return static_cast<int32_t>(static_cast<int64_t>(v)); }

absl::Status ReadPiece(std::string_view bytes, Vocabulary& vocab) {
  std::string piece;
  float score = 0;
  int64_t type = 1;  // NORMAL
  WireReader r(bytes);
  while (!r.done()) {
    ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.number == 1 && f.wire_type == kLengthDelimited) piece = std::string(f.bytes);
    if (f.number == 2 && f.wire_type == kFixed32) score = AsFloat(f.value);
    if (f.number == 3 && f.wire_type == kVarint) type = static_cast<int64_t>(f.value);
  }
  if (type < 1 || type > static_cast<int64_t>(TokenType::kByte)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SentencePiece model: piece ", vocab.tokens.size(), " has unknown type ", type));
  }
  vocab.tokens.push_back(std::move(piece));
  vocab.scores.push_back(score);
  vocab.types.push_back(static_cast<TokenType>(type));
  return absl::OkStatus();
}

absl::Status ReadTrainerSpec(std::string_view bytes, Vocabulary& vocab) {
  int64_t model_type = 1;  // UNIGRAM is the proto default
  WireReader r(bytes);
  while (!r.done()) {
    ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.wire_type != kVarint) continue;
    switch (f.number) {
      case 3:
        model_type = static_cast<int64_t>(f.value);
        break;
      case 24:
        if (f.value != 0) {
          return absl::InvalidArgumentError(
              "SentencePiece model: treat_whitespace_as_suffix is not supported");
        }
        break;
      case 40:
        vocab.unk_id = AsInt32(f.value);
        break;
      case 41:
        vocab.bos_id = AsInt32(f.value);
        break;
      case 42:
        vocab.eos_id = AsInt32(f.value);
        break;
      case 43:
        vocab.pad_id = AsInt32(f.value);
        break;
      default:
        break;
    }
  }
  if (model_type != 2) {
    static constexpr const char* kNames[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
    const char* name = model_type >= 1 && model_type <= 4 ? kNames[model_type] : "?";
    return absl::InvalidArgumentError(absl::StrCat("SentencePiece model type ", name, " (",
                                                   model_type, ") is not supported (only BPE)"));
  }
  return absl::OkStatus();
}

absl::Status ReadNormalizerSpec(std::string_view bytes, Vocabulary& vocab) {
  std::string name;
  bool has_table = false;
  WireReader r(bytes);
  while (!r.done()) {
    ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.number == 1 && f.wire_type == kLengthDelimited) name = std::string(f.bytes);
    if (f.number == 2 && f.wire_type == kLengthDelimited) has_table = !f.bytes.empty();
    if (f.number == 3 && f.wire_type == kVarint) vocab.add_space_prefix = f.value != 0;
    if (f.number == 4 && f.wire_type == kVarint) vocab.remove_extra_whitespaces = f.value != 0;
  }
  if (has_table && name != "identity") {
    return absl::InvalidArgumentError(
        absl::StrCat("SentencePiece normalizer '", name, "' is not supported (only 'identity')"));
  }
  return absl::OkStatus();
}

}  // namespace

bool LooksLikeSentencePiece(std::string_view bytes) {
  // Field 1, wire type 2 (0x0A), then a length, then a SentencePiece message starting with its
  // own field 1 (the piece string, 0x0A).
  if (bytes.size() < 3 || bytes[0] != '\x0A') return false;
  WireReader r(bytes);
  auto f = r.Next();
  return f.ok() && f->number == 1 && !f->bytes.empty() && f->bytes[0] == '\x0A';
}

absl::StatusOr<Vocabulary> VocabularyFromSentencePiece(std::string_view model_proto) {
  Vocabulary vocab;
  vocab.model = "llama";
  vocab.unk_id = 0;
  vocab.bos_id = 1;
  vocab.eos_id = 2;
  vocab.pad_id = -1;
  vocab.add_space_prefix = true;          // add_dummy_prefix default
  vocab.remove_extra_whitespaces = true;  // proto default
  bool has_trainer = false;
  WireReader r(model_proto);
  while (!r.done()) {
    ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.wire_type != kLengthDelimited) continue;
    if (f.number == 1) RETURN_IF_ERROR(ReadPiece(f.bytes, vocab));
    if (f.number == 2) {
      RETURN_IF_ERROR(ReadTrainerSpec(f.bytes, vocab));
      has_trainer = true;
    }
    if (f.number == 3) RETURN_IF_ERROR(ReadNormalizerSpec(f.bytes, vocab));
  }
  if (vocab.tokens.empty()) {
    return absl::InvalidArgumentError("SentencePiece model: no pieces");
  }
  if (!has_trainer) {
    return absl::InvalidArgumentError("SentencePiece model: no trainer_spec");
  }
  vocab.add_bos = true;
  vocab.add_eos = false;
  return vocab;
}

}  // namespace funnel
