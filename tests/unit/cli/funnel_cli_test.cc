// The `funnel` binary's contract: run/tokenize/model random, JSON output, logits dumps, errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"
#include "tests/testing/golden.h"
#include "tests/unit/cli/client_test_util.h"

namespace funnel {
namespace {

namespace fs = std::filesystem;

using Result = ::funnel::testing::CommandResult;
using ::funnel::testing::RunFunnelBinary;

class CliTest : public ::testing::Test {
 protected:
  const std::string model_ = ::funnel::testing::Stories260KPath();
};

TEST_F(CliTest, RunJsonReproducesGoldenGreedyRun) {
  auto golden = ::funnel::testing::LoadStories260KGolden();
  Result r = RunFunnelBinary(
      {"run", "--model", model_, "--prompt", "Once upon a time", "--max-tokens", "44", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);  // stdout holds only the JSON
  std::vector<int32_t> all = j["prompt_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(all, golden.prompt_ids);
  auto out = j["output_ids"].get<std::vector<int32_t>>();
  all.insert(all.end(), out.begin(), out.end());
  EXPECT_EQ(all, golden.full_sequence);
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_EQ(j["text"],
            ", there was a little girl named Lily. She loved to play outside in the park. One day, "
            "she saw a big, red ball. She wanted to");
  for (const char* k : {"prefill_ms", "decode_ms", "prefill_tok_s", "decode_tok_s"}) {
    EXPECT_TRUE(j["timings"][k].is_number()) << k;
  }
}

TEST_F(CliTest, PromptIdsAreFedExactly) {
  Result r = RunFunnelBinary({"run", "--model", model_, "--prompt-ids", "1,403,407,261,378",
                              "--max-tokens", "5", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt_ids"].get<std::vector<int32_t>>(),
            (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(j["output_ids"].get<std::vector<int32_t>>(),
            (std::vector<int32_t>{432, 383, 286, 261, 376}));
  // Without BOS the model sees a different sequence.
  Result nobos = RunFunnelBinary(
      {"run", "--model", model_, "--prompt-ids", "403,407,261,378", "--max-tokens", "1", "--json"});
  ASSERT_EQ(nobos.exit_code, 0) << nobos.err;
  EXPECT_EQ(nlohmann::json::parse(nobos.out)["prompt_ids"].size(), 4u);
}

TEST_F(CliTest, DumpLogitsMatchesGoldenAtAll48Positions) {
  auto golden = ::funnel::testing::LoadStories260KGolden();
  const fs::path dump = fs::temp_directory_path() / "funnel_cli_logits.jsonl";
  Result r = RunFunnelBinary({"run", "--model", model_, "--prompt", "Once upon a time",
                              "--max-tokens", "44", "--json", "--dump-logits", dump.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(dump);
  std::string line;
  int64_t expected_pos = 0;
  while (std::getline(in, line)) {
    nlohmann::json l = nlohmann::json::parse(line);
    ASSERT_EQ(l["pos"].get<int64_t>(), expected_pos);
    auto logits = l["logits"].get<std::vector<float>>();
    const auto& ref = golden.logits[static_cast<size_t>(expected_pos)];
    ASSERT_EQ(logits.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(logits[i], ref[i], 1e-3) << "pos " << expected_pos << " id " << i;
    }
    ++expected_pos;
  }
  EXPECT_EQ(expected_pos, 48);
  fs::remove(dump);
}

TEST_F(CliTest, TokenizePrintsJsonArray) {
  Result r = RunFunnelBinary({"tokenize", "--model", model_, "--text", "Once upon a time"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).get<std::vector<int32_t>>(),
            (std::vector<int32_t>{1, 403, 407, 261, 378}));
  Result nobos =
      RunFunnelBinary({"tokenize", "--model", model_, "--text", "Once upon a time", "--no-bos"});
  EXPECT_EQ(nlohmann::json::parse(nobos.out).get<std::vector<int32_t>>(),
            (std::vector<int32_t>{403, 407, 261, 378}));
  Result empty = RunFunnelBinary({"tokenize", "--model", model_, "--text", ""});
  ASSERT_EQ(empty.exit_code, 0) << empty.err;
  EXPECT_EQ(empty.out, "[]\n");
}

TEST_F(CliTest, SeededSamplingIsReproducible) {
  std::vector<std::string> args = {"run",
                                   "--model",
                                   model_,
                                   "--prompt",
                                   "Once upon a time",
                                   "--max-tokens",
                                   "30",
                                   "--temperature",
                                   "1.0",
                                   "--top-p",
                                   "0.9",
                                   "--top-k",
                                   "40",
                                   "--seed",
                                   "42",
                                   "--json"};
  Result a = RunFunnelBinary(args), b = RunFunnelBinary(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(nlohmann::json::parse(a.out)["output_ids"], nlohmann::json::parse(b.out)["output_ids"]);
}

TEST_F(CliTest, BadInputGivesClearErrors) {
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"run", "--model", model_}, 2, "exactly one of --prompt and --prompt-ids"},
      {{"run", "--model", model_, "--prompt", "x", "--prompt-ids", "1"}, 2, "exactly one"},
      {{"run", "--model", model_, "--prompt", "x", "--bogus"}, 2, "unknown option --bogus"},
      {{"run", "--model", model_, "--prompt-ids", "1,x"}, 2, "'x' is not an integer"},
      {{"run", "--model", model_, "--prompt-ids", "1,512"}, 2, "outside the vocabulary"},
      {{"run", "--model", model_, "--prompt", "x", "--top-p", "1.5"}, 2, "--top-p"},
      {{"run", "--model", model_, "--prompt", "x", "--max-tokens"}, 2, "needs a value"},
      {{"run", "--model", "/nonexistent.gguf", "--prompt", "x"}, 1, "cannot open model file"},
      {{"tokenize", "--model",
        ::funnel::testing::SharedDataPath("models/stories260K/tok512.test.out"), "--text", "x"},
       2,
       "not a GGUF file"},
      {{"frobnicate"}, 2, "unknown command"},
  };
  for (const Case& c : cases) {
    Result r = RunFunnelBinary(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args.back() << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << "stderr: " << r.err;
    EXPECT_TRUE(r.out.empty() || r.out == "\n") << r.out;
  }
}

TEST_F(CliTest, RandomModelToolWritesRunnableModels) {
  const fs::path dir = fs::temp_directory_path() / "funnel_cli_random";
  fs::create_directories(dir);
  for (const char* type : {"F32", "F16"}) {
    const std::string path = (dir / (std::string(type) + ".gguf")).string();
    Result w = RunFunnelBinary({"model", "random", "--out", path, "--layers", "2", "--dim", "64",
                                "--heads", "4", "--kv-heads", "1", "--ffn", "128", "--vocab", "600",
                                "--type", type});
    ASSERT_EQ(w.exit_code, 0) << w.err;
    Result r = RunFunnelBinary({"run", "--model", path, "--prompt", "hello world", "--max-tokens",
                                "8", "--ignore-eos", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["output_ids"].size(), 8u);
    EXPECT_EQ(j["finish_reason"], "length");
  }
  Result bad = RunFunnelBinary(
      {"model", "random", "--out", (dir / "x.gguf").string(), "--dim", "60", "--heads", "7"});
  EXPECT_EQ(bad.exit_code, 2);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace funnel
