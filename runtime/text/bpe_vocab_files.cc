#include "runtime/text/bpe_vocab_files.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

constexpr int64_t kMaxTokenId = 1 << 22;

// Streams {"token": id, ...} into the vocabulary without building a JSON tree (vocab.json files
// hold 50k-200k entries). Errors stop the parse and are kept in `error`.
class VocabJsonSax : public nlohmann::json_sax<Json> {
 public:
  explicit VocabJsonSax(Vocabulary& v) : v_(v) {}

  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool number_integer(number_integer_t id) override { return Place(id); }
  bool number_unsigned(number_unsigned_t id) override {
    return Place(id > static_cast<number_unsigned_t>(kMaxTokenId) ? -1 : static_cast<int64_t>(id));
  }
  bool start_object(std::size_t) override { return Enter(); }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool null() override { return NotAnId(); }
  bool boolean(bool) override { return NotAnId(); }
  bool number_float(number_float_t, const string_t&) override { return NotAnId(); }
  bool string(string_t&) override { return NotAnId(); }
  bool binary(binary_t&) override { return NotAnId(); }
  bool start_array(std::size_t) override { return NotAnId(); }
  bool end_array() override { return true; }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& e) override {
    error = absl::InvalidArgumentError(
        absl::StrCat("vocab.json: parse error at byte ", position, ": ", e.what()));
    return false;
  }

  absl::Status error;

 private:
  bool Enter() {
    if (++depth_ == 1) return true;
    error = absl::InvalidArgumentError(
        absl::StrCat("vocab.json: the id of '", key_, "' is not an integer"));
    return false;
  }
  bool NotAnId() {
    error = depth_ == 0 ? absl::InvalidArgumentError("vocab.json: not a JSON object")
                        : absl::InvalidArgumentError(
                              absl::StrCat("vocab.json: the id of '", key_, "' is not an integer"));
    return false;
  }
  bool Place(int64_t id) {
    if (depth_ != 1) return NotAnId();
    if (id < 0 || id > kMaxTokenId) {
      error = absl::InvalidArgumentError(
          absl::StrCat("vocab.json: id ", id, " of '", key_, "' is out of range"));
      return false;
    }
    while (static_cast<int64_t>(v_.tokens.size()) <= id) {
      v_.tokens.push_back(absl::StrCat("[PAD", v_.tokens.size(), "]"));
      v_.types.push_back(TokenType::kControl);
    }
    v_.tokens[id] = key_;
    v_.types[id] = TokenType::kNormal;
    return true;
  }

  Vocabulary& v_;
  std::string key_;
  int depth_ = 0;
};

absl::Status ReadVocabJson(std::string_view text, Vocabulary& v) {
  VocabJsonSax sax(v);
  const bool ok = Json::sax_parse(text.begin(), text.end(), &sax);
  if (!sax.error.ok()) return sax.error;
  if (!ok) return absl::InvalidArgumentError("vocab.json: malformed JSON");
  if (v.tokens.empty()) return absl::InvalidArgumentError("vocab.json: no tokens");
  return absl::OkStatus();
}

absl::Status ReadMergesTxt(std::string_view text, Vocabulary& v) {
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const size_t space = line.find(' ', 1);
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("merges.txt: line ", line_no, " is not 'left right'"));
    }
    v.merges.emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Vocabulary> VocabularyFromVocabAndMerges(std::string_view vocab_json,
                                                        std::string_view merges_txt) {
  Vocabulary v;
  v.model = "gpt2";
  v.bos_id = v.eos_id = v.unk_id = v.pad_id = -1;
  v.add_bos = v.add_eos = v.add_space_prefix = false;
  RETURN_IF_ERROR(ReadVocabJson(vocab_json, v));
  RETURN_IF_ERROR(ReadMergesTxt(merges_txt, v));
  return v;
}

}  // namespace funnel
