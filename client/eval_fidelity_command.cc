// funnel eval fidelity: how closely compressed caches track the full cache, in-process, for any
// GGUF model, on self-generated prompts or given texts.
//
// For each prompt and each (method, budget): the full cache's greedy continuation of
// --continuation tokens is the reference. The compressed run is teacher-forced along it; we
// report the share of positions whose argmax equals the reference token (top-1 agreement), the
// mean KL(full || compressed) of the next-token distributions, and how many reference tokens a
// free-running greedy compressed run reproduces before its first divergence.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "client/eval_commands.h"
#include "client/eval_runner.h"
#include "client/remote_args.h"
#include "nlohmann/json.hpp"
#include "runtime/exec/generate.h"
#include "runtime/sample/sampler.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

struct Trace {
  std::vector<int32_t> tokens;             // greedy or teacher-forced tokens
  std::vector<std::vector<double>> probs;  // next-token distribution before each token
};

std::vector<double> SoftmaxD(std::span<const float> logits) {
  std::vector<double> p(logits.begin(), logits.end());
  double mx = -INFINITY, sum = 0.0;
  for (double v : p) mx = std::max(mx, v);
  for (double& v : p) sum += (v = std::exp(v - mx));
  for (double& v : p) v /= sum;
  return p;
}

int32_t Argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Prefills `prompt` under `policy`, then runs `steps` tokens: greedy when `forced` is empty,
// else feeding forced[i] (teacher forcing). Records each step's distribution.
absl::StatusOr<Trace> RunTrace(CpuModelRunner& runner, std::span<const int32_t> prompt,
                               const KvPolicy& policy, int64_t steps,
                               std::span<const int32_t> forced) {
  SequenceKv kv = runner.NewSequence();
  Trace t;
  std::vector<float> logits;
  StepSequence s{&kv, prompt, false, &policy};
  absl::Status st = runner.Step({&s, 1}, logits);
  for (int64_t i = 0; st.ok() && i < steps; ++i) {
    t.probs.push_back(SoftmaxD(logits));
    t.tokens.push_back(forced.empty() ? Argmax(logits) : forced[static_cast<size_t>(i)]);
    if (i + 1 == steps) break;
    StepSequence d{&kv, std::span<const int32_t>(&t.tokens.back(), 1), false};
    st = runner.Step({&d, 1}, logits);
  }
  runner.Release(kv);
  RETURN_IF_ERROR(st);
  return t;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> SamplePrompts(CpuModelRunner& runner,
                                                                const Tokenizer& tok, int64_t count,
                                                                int64_t length) {
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t i = 0; i < count; ++i) {
    SamplingParams p;
    p.temperature = 1.0f;
    p.max_tokens = static_cast<int32_t>(length - 1);
    p.ignore_eos = true;
    p.seed = static_cast<uint64_t>(1000 + i);
    std::vector<int32_t> bos = {tok.bos_id()};
    ASSIGN_OR_RETURN(GenerationResult g, Generate(runner, tok, bos, p, 0));
    bos.insert(bos.end(), g.output_ids.begin(), g.output_ids.end());
    prompts.push_back(std::move(bos));
  }
  return prompts;
}

// The texts of --text-file (one per file, or one per non-empty line with --lines), each cut to
// its first `max_tokens` tokens when max_tokens > 0, at most `max_texts`.
absl::StatusOr<std::vector<std::vector<int32_t>>> ReadTexts(const std::vector<std::string>& files,
                                                            bool lines, const Tokenizer& tok,
                                                            int64_t max_tokens, int64_t max_texts) {
  std::vector<std::string> texts;
  for (const std::string& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read --text-file ", path));
    if (lines) {
      std::string line;
      while (std::getline(in, line)) {
        if (!line.empty()) texts.push_back(line);
      }
    } else {
      std::stringstream buf;
      buf << in.rdbuf();
      texts.push_back(buf.str());
    }
  }
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& t : texts) {
    if (static_cast<int64_t>(prompts.size()) >= max_texts) break;
    std::vector<int32_t> ids = tok.Encode(t);
    if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens)
      ids.resize(static_cast<size_t>(max_tokens));
    if (ids.size() < 2) continue;
    prompts.push_back(std::move(ids));
  }
  if (prompts.empty())
    return absl::InvalidArgumentError("--text-file gave no text of 2 or more tokens");
  return prompts;
}

struct CellResult {
  double top1 = 0, kl = 0, prefix = 0;
};

// Top-1 agreement, mean KL(full || compressed) and greedy prefix match of one prompt.
absl::StatusOr<CellResult> ComparePrompt(CpuModelRunner& runner, std::span<const int32_t> prompt,
                                         const KvPolicy& policy, const Trace& ref, int64_t steps) {
  ASSIGN_OR_RETURN(Trace forced, RunTrace(runner, prompt, policy, steps, ref.tokens));
  ASSIGN_OR_RETURN(Trace free, RunTrace(runner, prompt, policy, steps, {}));
  CellResult r;
  for (int64_t j = 0; j < steps; ++j) {
    const auto& pf = ref.probs[j];
    const auto& pc = forced.probs[j];
    r.top1 += std::max_element(pc.begin(), pc.end()) - pc.begin() == ref.tokens[j];
    for (size_t v = 0; v < pf.size(); ++v) {
      if (pf[v] > 0) r.kl += pf[v] * (std::log(pf[v]) - std::log(std::max(pc[v], 1e-300)));
    }
  }
  r.top1 /= static_cast<double>(steps);
  r.kl /= static_cast<double>(steps);
  while (r.prefix < steps &&
         free.tokens[static_cast<size_t>(r.prefix)] == ref.tokens[static_cast<size_t>(r.prefix)]) {
    ++r.prefix;
  }
  return r;
}

constexpr char kFidelityUsage[] =
    "usage: funnel eval fidelity --model PATH [--prompts K --prompt-tokens L]\n"
    "  [--text-file F]... [--lines] [--continuation T] [--methods m1,m2] [--budgets 32,64,128]\n"
    "  [--kv-window W] [--kv-pooling max|avg] [--kv-kernel K] [--kv-beta B] [--kv-rounding R]\n"
    "  [--threads N] [--json] [--json-out F]\n"
    "Without --text-file: K prompts of L tokens the model writes itself (temperature 1). With\n"
    "--text-file: each file is one text (each non-empty line with --lines), cut to its first L\n"
    "tokens when --prompt-tokens is given, at most K texts when --prompts is given.\n";

absl::Status Fidelity(const std::vector<std::string>& argv) {
  CliSpec spec{{"model", "prompts", "prompt-tokens", "continuation", "methods", "budgets",
                "threads", "json-out"},
               {"lines", "json"},
               {"text-file"}};
  AddEvalKvKnobFlags(spec);
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  ASSIGN_OR_RETURN(std::string model, args.Require("model"));
  const std::vector<std::string> text_files = args.GetAll("text-file");
  ASSIGN_OR_RETURN(int64_t num_prompts,
                   args.GetInt("prompts", text_files.empty() ? 8 : 1 << 30, 1, 1 << 30));
  ASSIGN_OR_RETURN(int64_t prompt_tokens,
                   args.GetInt("prompt-tokens", text_files.empty() ? 400 : 0, 2, 1 << 20));
  ASSIGN_OR_RETURN(int64_t steps, args.GetInt("continuation", 64, 1, 1 << 16));
  if (args.Flag("lines") && text_files.empty())
    return absl::InvalidArgumentError("--lines needs --text-file");
  ASSIGN_OR_RETURN(
      std::vector<EvalPolicy> grid,
      ParsePolicyGrid(args.Get("methods").value_or("full,pyramidkv,snapkv,h2o,streamingllm"),
                      args.Get("budgets").value_or("32,64,128"), args));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights, ModelWeights::Open(model));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::FromGguf(weights->gguf()));
  RunnerOptions o;
  ASSIGN_OR_RETURN(o.num_threads, args.GetInt("threads", 2, 1, 256));
  o.kv_cache_bytes = int64_t{256} << 20;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuModelRunner> runner, CpuModelRunner::Create(*weights, o));

  std::vector<std::vector<int32_t>> prompts;
  if (!text_files.empty()) {
    ASSIGN_OR_RETURN(prompts,
                     ReadTexts(text_files, args.Flag("lines"), *tok, prompt_tokens, num_prompts));
  } else {
    ASSIGN_OR_RETURN(prompts, SamplePrompts(*runner, *tok, num_prompts, prompt_tokens));
  }
  const int64_t context = weights->config().context_length;
  for (const auto& p : prompts) {
    if (context > 0 && static_cast<int64_t>(p.size()) + steps > context) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "a %d-token text plus %d continuation tokens exceeds the model's context of %d; use "
          "--prompt-tokens or --continuation",
          p.size(), steps, context));
    }
  }

  const bool json_stdout = args.Flag("json");
  if (!json_stdout) {
    std::printf(
        "| method | budget | mean stored entries/layer | top-1 agreement | mean KL | greedy prefix "
        "match |\n");
    std::printf("|---|---|---|---|---|---|\n");
  }
  std::vector<Trace> refs;
  for (const auto& p : prompts) {
    ASSIGN_OR_RETURN(Trace r, RunTrace(*runner, p, KvPolicy{}, steps, {}));
    refs.push_back(std::move(r));
  }
  nlohmann::json rows = nlohmann::json::array();
  const int64_t layers = weights->config().num_layers;
  for (const EvalPolicy& e : grid) {
    CellResult sum;
    int64_t stored = 0;
    nlohmann::json per_text = nlohmann::json::array();
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSIGN_OR_RETURN(CellResult r, ComparePrompt(*runner, prompts[i], e.policy, refs[i], steps));
      sum.top1 += r.top1;
      sum.kl += r.kl;
      sum.prefix += r.prefix;
      stored += ComputeLayerBudgets(e.policy, static_cast<int32_t>(layers),
                                    static_cast<int64_t>(prompts[i].size()))
                    .total_stored();
      per_text.push_back({{"prompt_tokens", prompts[i].size()},
                          {"top1_agreement", r.top1},
                          {"mean_kl", r.kl},
                          {"greedy_prefix_match", r.prefix}});
    }
    const double n = static_cast<double>(prompts.size());
    const double mean_stored = static_cast<double>(stored) / n / static_cast<double>(layers);
    const std::string budget_text = e.budget() > 0 ? std::to_string(e.budget()) : "-";
    if (!json_stdout) {
      std::printf("| %s | %s | %.1f | %.3f | %.4f | %.1f / %lld |\n", KvMethodName(e.policy.method),
                  budget_text.c_str(), mean_stored, sum.top1 / n, sum.kl / n, sum.prefix / n,
                  static_cast<long long>(steps));
      std::fflush(stdout);
    }
    rows.push_back({{"method", KvMethodName(e.policy.method)},
                    {"budget", e.budget() > 0 ? nlohmann::json(e.budget()) : nlohmann::json()},
                    {"window", e.policy.window},
                    {"mean_stored", mean_stored},
                    {"top1_agreement", sum.top1 / n},
                    {"mean_kl", sum.kl / n},
                    {"greedy_prefix_match", sum.prefix / n},
                    {"prompts", prompts.size()},
                    {"per_text", per_text}});
  }
  int64_t total_tokens = 0;
  for (const auto& p : prompts) total_tokens += static_cast<int64_t>(p.size());
  const double mean_tokens =
      static_cast<double>(total_tokens) / static_cast<double>(prompts.size());
  nlohmann::json out = {{"model", model},
                        {"prompts", prompts.size()},
                        {"mean_prompt_tokens", mean_tokens},
                        {"continuation", steps},
                        {"rows", rows}};
  if (json_stdout) {
    PrintJson(out);
  } else {
    std::printf("\n%zu prompts, mean %.0f tokens, %lld-token greedy continuations\n",
                prompts.size(), mean_tokens, static_cast<long long>(steps));
  }
  if (auto path = args.Get("json-out")) {
    std::ofstream f(*path);
    f << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    if (!f) return absl::InvalidArgumentError(absl::StrCat("cannot write --json-out ", *path));
  }
  return absl::OkStatus();
}

}  // namespace

int EvalFidelityCommand(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kFidelityUsage, stdout);
      return 0;
    }
  }
  if (absl::Status st = Fidelity(args); !st.ok()) return ReportError("eval fidelity", st);
  return 0;
}

}  // namespace funnel
