// libFuzzer target: the Hugging Face model readers: safetensors files and config.json.
//
// Input: byte 0 selects what the rest is:
//   even: a .safetensors file → SafetensorsFile::FromBytes, every tensor byte read,
//         SafetensorsCheckpoint::FromFiles, ModelWeights::FromHf with the fixed tiny config below
//         (the committed seeds are checkpoints of that config, so mutants reach the loader)
//   odd:  config.json, then optionally a NUL byte and generation_config.json →
//         ModelConfigFromHfJson; an accepted config must validate, give rope_dim / 2 inverse
//         frequencies, and survive HfConfigJson → ModelConfigFromHfJson with the same shape
// Checked: nothing crashes or trips ASan/UBSan, every error has a message, a parsed file's
// tensors tile its data section exactly, and loaded weights are valid and readable.
// tests/unit/model/safetensors_fuzz_test.cc is the bounded gtest counterpart.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/hf_config.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/safetensors_checkpoint.h"
#include "runtime/model/safetensors_file.h"
#include "spdlog/spdlog.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/model_fuzz_util.h"

namespace funnel::fuzz {
namespace {

// The model of the safetensors seeds (tests/fuzz/make_corpus.py writes them).
constexpr char kTinyConfig[] = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 8,
  "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
  "num_key_value_heads": 1, "vocab_size": 16, "max_position_embeddings": 64,
  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
  "bos_token_id": 1, "eos_token_id": 2})";

const ModelConfig& TinyConfig() {
  static const ModelConfig* config = [] {
    absl::StatusOr<ModelConfig> c = ModelConfigFromHfJson(kTinyConfig, "", "tiny");
    FUZZ_CHECK(c.ok(), c.status().ToString());
    return new ModelConfig(*std::move(c));
  }();
  return *config;
}

void CheckError(const absl::Status& status) {
  FUZZ_LOG(absl::StrCat("rejected: ", status.ToString()));
  FUZZ_CHECK(!status.ok() && !status.message().empty(), "an error without a message");
}

void ExerciseFile(std::span<const uint8_t> bytes) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::FromBytes(bytes, "fuzz.safetensors");
  if (!file.ok()) return CheckError(file.status());
  std::shared_ptr<const SafetensorsFile> f(std::move(*file));
  uint64_t covered = 0;
  uint64_t sum = 0;
  for (const SafetensorsTensor& t : f->tensors()) {
    FUZZ_CHECK(f->Find(t.name) == &t, "Find disagrees with tensors()");
    FUZZ_CHECK(t.begin <= t.end, "tensor range reversed");
    covered += t.end - t.begin;
    sum += Touch(t.data, t.num_bytes());
  }
  FUZZ_CHECK(f->data_offset() + covered == bytes.size(), "tensors do not tile the data section");
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> ckpt =
      SafetensorsCheckpoint::FromFiles({f});
  if (!ckpt.ok()) return CheckError(ckpt.status());
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = ModelWeights::FromHf(
      TinyConfig(), std::shared_ptr<const SafetensorsCheckpoint>(std::move(*ckpt)));
  if (!w.ok()) return CheckError(w.status());
  sum += TouchWeights(**w);
  FUZZ_LOG("weights loaded");
  volatile uint64_t sink = sum;
  (void)sink;
}

void ExerciseConfig(std::string_view text) {
  const size_t nul = text.find('\0');
  const std::string_view config_json = text.substr(0, nul);
  const std::string_view generation_json =
      nul == std::string_view::npos ? std::string_view() : text.substr(nul + 1);
  absl::StatusOr<ModelConfig> c = ModelConfigFromHfJson(config_json, generation_json, "fuzz");
  if (!c.ok()) return CheckError(c.status());
  FUZZ_CHECK(c->Validate().ok(), "ModelConfigFromHfJson gave an invalid config");
  FUZZ_CHECK(RopeInverseFrequencies(*c).size() == static_cast<size_t>(c->rope_dim / 2),
             "rope frequencies");
  absl::StatusOr<std::string> json = HfConfigJson(*c, "float32");
  if (!json.ok()) return CheckError(json.status());
  absl::StatusOr<ModelConfig> again = ModelConfigFromHfJson(*json, "", "fuzz");
  FUZZ_CHECK(
      again.ok(),
      absl::StrCat("HfConfigJson output does not parse: ", again.status().ToString(), "\n", *json));
  FUZZ_CHECK(again->dim == c->dim && again->num_layers == c->num_layers &&
                 again->num_heads == c->num_heads && again->num_kv_heads == c->num_kv_heads &&
                 again->ffn_dim == c->ffn_dim && again->vocab_size == c->vocab_size &&
                 again->head_dim == c->head_dim && again->tied_output == c->tied_output,
             absl::StrCat("HfConfigJson changed the shape:\n", *json));
  FUZZ_LOG(absl::StrCat("config accepted: ", c->Summary()));
}

}  // namespace
}  // namespace funnel::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // loader warnings (unused tensors): not findings
  funnel::fuzz::TinyConfig();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if ((data[0] & 1) == 0) {
    funnel::fuzz::ExerciseFile(std::span<const uint8_t>(data + 1, size - 1));
  } else {
    funnel::fuzz::ExerciseConfig(
        std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  }
  return 0;
}
