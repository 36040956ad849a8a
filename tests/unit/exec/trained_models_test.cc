// The models trained in this repository (models/<name>/<name>.gguf with golden.json, written by
// tools/train/write_golden.py from PyTorch on the GGUF's own weights): Funnel's tokenizer gives
// the same prompt ids, and the CPU runner the same logits (after the prompt and at the end) and
// the same greedy continuation. Each model is a separate case; none present = skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/exec/cpu_model_runner.h"
#include "runtime/model/model_weights.h"
#include "runtime/text/tokenizer.h"

namespace funnel {
namespace {

namespace fs = std::filesystem;

// PyTorch and the CPU runner sum in different orders; the golden file rounds to 5 decimals.
constexpr float kTolerance = 2e-3f;

std::vector<fs::path> ModelsWithGolden() {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(FUNNEL_SOURCE_DIR) / "models", ec)) {
    const fs::path gguf = e.path() / (e.path().filename().string() + ".gguf");
    if (fs::exists(gguf, ec) && fs::exists(e.path() / "golden.json", ec)) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

float MaxAbsDiff(std::span<const float> a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

int32_t Argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

void CheckModel(const fs::path& dir) {
  const std::string name = dir.filename().string();
  const nlohmann::json golden = nlohmann::json::parse(std::ifstream(dir / "golden.json"));
  auto weights = ModelWeights::Open((dir / (name + ".gguf")).string());
  ASSERT_TRUE(weights.ok()) << name << ": " << weights.status();
  auto tokenizer = Tokenizer::FromGguf((*weights)->gguf());
  ASSERT_TRUE(tokenizer.ok()) << name << ": " << tokenizer.status();
  const auto prompt_ids = golden["prompt_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ((*tokenizer)->Encode(golden["prompt"].get<std::string>()), prompt_ids) << name;

  RunnerOptions options;
  options.kv_cache_bytes = int64_t{64} << 20;
  auto runner = CpuModelRunner::Create(**weights, options);
  ASSERT_TRUE(runner.ok()) << runner.status();
  SequenceKv kv = (*runner)->NewSequence();
  std::vector<float> logits;
  StepSequence step{&kv, prompt_ids};
  ASSERT_TRUE((*runner)->Step({&step, 1}, logits).ok());
  EXPECT_LT(MaxAbsDiff(logits, golden["logits_prompt"].get<std::vector<float>>()), kTolerance)
      << name << " after the prompt";
  const auto greedy = golden["greedy"].get<std::vector<int32_t>>();
  std::vector<int32_t> ours;
  for (size_t i = 0; i < greedy.size(); ++i) {
    ours.push_back(Argmax(logits));
    if (i + 1 == greedy.size()) break;
    StepSequence next{&kv, {&ours.back(), 1}};
    ASSERT_TRUE((*runner)->Step({&next, 1}, logits).ok());
  }
  EXPECT_EQ(ours, greedy) << name << ": " << (*tokenizer)->Decode(ours);
  EXPECT_LT(MaxAbsDiff(logits, golden["logits_last"].get<std::vector<float>>()), kTolerance)
      << name << " at the last greedy token";
  (*runner)->Release(kv);
}

TEST(TrainedModelsTest, MatchTheirPyTorchGoldenRuns) {
  const std::vector<fs::path> models = ModelsWithGolden();
  if (models.empty()) GTEST_SKIP() << "no models/<name>/golden.json";
  for (const fs::path& dir : models) CheckModel(dir);
}

}  // namespace
}  // namespace funnel
