// libFuzzer target: the GGUF reader and everything that reads a GGUF's contents (the model
// config, the weight loader, the tokenizer and the chat template), fed whole files.
//
// Input: the bytes of a GGUF file (GgufFile::FromBytes; Open maps the same parser onto a file).
// Checked: nothing crashes or trips ASan/UBSan (every tensor byte the file claims is read, so a
// range outside the input is caught), every error has a message, typed getters agree with Find,
// tensors have 1-4 dims and a positive size, a loaded model passes ModelConfig::Validate with
// every matrix readable, a loaded tokenizer encodes a fixed text to ids inside its vocabulary
// and decodes them, and a recognised chat template renders a short conversation to in-vocabulary
// ids. tests/unit/model/gguf_fuzz_test.cc is the bounded gtest counterpart (fixed-seed mutants).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_weights.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"
#include "spdlog/spdlog.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/model_fuzz_util.h"

namespace funnel::fuzz {
namespace {

void CheckError(const absl::Status& status) {
  FUZZ_LOG(absl::StrCat("rejected: ", status.ToString()));
  FUZZ_CHECK(!status.ok() && !status.message().empty(), "an error without a message");
}

// A getter's result: any error must have a message (most keys have other types: not logged).
template <typename T>
void CheckResult(const absl::StatusOr<T>& r) {
  FUZZ_CHECK(r.ok() || !r.status().message().empty(), "an error without a message");
}

void CheckIdsInVocab(const std::vector<int32_t>& ids, const Tokenizer& tok) {
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "id outside the vocab");
}

void ExerciseTokenizer(const GgufFile& g) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromGguf(g);
  if (!tok.ok()) return CheckError(tok.status());
  const Tokenizer& t = **tok;
  const std::vector<int32_t> ids =
      t.Encode("Hello world, <s> [INST] <|im_start|>\xC3\xA9\xE6\x97\xA5 1234");
  CheckIdsInVocab(ids, t);
  (void)t.Decode(ids);
  for (int32_t id : {-1, 0, t.vocab_size() - 1, t.vocab_size()}) (void)t.TokenToPiece(id);
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::FromGguf(g, t);
  if (!tmpl.ok()) return CheckError(tmpl.status());
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi <|im_start|>"}};
  absl::StatusOr<std::vector<int32_t>> rendered = tmpl->Apply(chat);
  if (!rendered.ok()) return CheckError(rendered.status());
  CheckIdsInVocab(*rendered, t);
  FUZZ_LOG(absl::StrCat("tokenizer: ", t.vocab_size(), " tokens; chat template ", tmpl->name(),
                        " rendered ", rendered->size(), " ids"));
}

void Exercise(std::span<const uint8_t> bytes) {
  absl::StatusOr<std::unique_ptr<GgufFile>> parsed = GgufFile::FromBytes(bytes);
  if (!parsed.ok()) return CheckError(parsed.status());
  std::shared_ptr<const GgufFile> g(std::move(*parsed));
  for (const auto& [key, value] : g->metadata()) {
    FUZZ_CHECK(g->Find(key) == &value, "Find disagrees with metadata()");
    CheckResult(g->GetInt(key));
    CheckResult(g->GetFloat(key));
    CheckResult(g->GetBool(key));
    CheckResult(g->GetString(key));
    CheckResult(g->GetStringArray(key));
    CheckResult(g->GetFloatArray(key));
    CheckResult(g->GetIntArray(key));
  }
  FUZZ_CHECK(g->alignment() >= 1, "alignment 0");
  uint64_t sum = 0;
  for (const GgufTensorInfo& t : g->tensors()) {
    FUZZ_CHECK(g->FindTensor(t.name) == &t, "FindTensor disagrees with tensors()");
    FUZZ_CHECK(!t.dims.empty() && t.dims.size() <= 4 && t.num_elements >= 1, "tensor shape");
    if (t.data != nullptr) sum += Touch(t.data, t.num_bytes);
  }
  absl::StatusOr<ModelConfig> config = ModelConfigFromGguf(*g);
  if (config.ok()) {
    FUZZ_CHECK(config->Validate().ok(), "ModelConfigFromGguf gave an invalid config");
  } else {
    CheckError(config.status());
  }
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = ModelWeights::FromGguf(g);
  if (weights.ok()) {
    sum += TouchWeights(**weights);
    FUZZ_LOG(absl::StrCat("weights loaded: ", (*weights)->config().Summary()));
  } else {
    CheckError(weights.status());
  }
  ExerciseTokenizer(*g);
  volatile uint64_t sink = sum;  // keeps the reads
  (void)sink;
}

}  // namespace
}  // namespace funnel::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // loader warnings about odd files: not findings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  funnel::fuzz::Exercise(std::span<const uint8_t>(data, size));
  return 0;
}
