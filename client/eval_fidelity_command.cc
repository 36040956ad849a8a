// funnel eval fidelity: how closely compressed caches track the full cache, in-process.
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

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "nlohmann/json.hpp"
#include "runtime/exec/generate.h"
#include "runtime/sample/sampler.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

struct Trace {
  std::vector<int32_t> tokens;            // greedy or teacher-forced tokens
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

struct Cell {
  double top1 = 0, kl = 0, prefix = 0;
  int64_t stored = 0;
  int count = 0;
};

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

absl::StatusOr<std::vector<int64_t>> ParseList(const std::string& s) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) return absl::InvalidArgumentError("bad --budgets");
    out.push_back(v);
  }
  return out;
}

absl::Status Fidelity(const std::vector<std::string>& argv) {
  CliSpec spec{{"model", "prompts", "prompt-tokens", "continuation", "methods", "budgets", "threads",
                "json-out", "text-file"},
               {},
               {}};
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  ASSIGN_OR_RETURN(std::string model, args.Require("model"));
  ASSIGN_OR_RETURN(int64_t num_prompts, args.GetInt("prompts", 8, 1, 10000));
  ASSIGN_OR_RETURN(int64_t prompt_tokens, args.GetInt("prompt-tokens", 400, 16, 1 << 20));
  ASSIGN_OR_RETURN(int64_t steps, args.GetInt("continuation", 64, 1, 1 << 16));
  ASSIGN_OR_RETURN(std::vector<int64_t> budgets, ParseList(args.Get("budgets").value_or("32,64,128")));
  std::vector<KvMethod> methods;
  for (absl::string_view m : absl::StrSplit(args.Get("methods").value_or("pyramidkv,snapkv,h2o,streamingllm"), ',')) {
    ASSIGN_OR_RETURN(KvMethod km, ParseKvMethod(std::string_view(m.data(), m.size())));
    methods.push_back(km);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights, ModelWeights::Open(model));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::FromGguf(weights->gguf()));
  RunnerOptions o;
  ASSIGN_OR_RETURN(o.num_threads, args.GetInt("threads", 2, 1, 256));
  o.kv_cache_bytes = int64_t{256} << 20;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuModelRunner> runner, CpuModelRunner::Create(*weights, o));

  std::vector<std::vector<int32_t>> prompts;
  if (auto file = args.Get("text-file")) {
    std::ifstream in(*file);
    if (!in) return absl::InvalidArgumentError("cannot read --text-file");
    std::string line;
    while (std::getline(in, line) && static_cast<int64_t>(prompts.size()) < num_prompts) {
      if (!line.empty()) prompts.push_back(tok->Encode(line));
    }
  } else {
    ASSIGN_OR_RETURN(prompts, SamplePrompts(*runner, *tok, num_prompts, prompt_tokens));
  }

  nlohmann::json out = nlohmann::json::array();
  std::printf("| method | budget | mean stored entries/layer | top-1 agreement | mean KL | greedy prefix match |\n");
  std::printf("|---|---|---|---|---|---|\n");
  std::vector<Trace> refs;
  for (const auto& p : prompts) {
    ASSIGN_OR_RETURN(Trace r, RunTrace(*runner, p, KvPolicy{}, steps, {}));
    refs.push_back(std::move(r));
  }
  for (KvMethod m : methods) {
    for (int64_t b : budgets) {
      KvPolicy policy;
      policy.method = m;
      policy.budget = b;
      if (m == KvMethod::kFull) policy.budget = 0;
      RETURN_IF_ERROR(policy.Validate());
      Cell cell;
      for (size_t i = 0; i < prompts.size(); ++i) {
        const Trace& ref = refs[i];
        ASSIGN_OR_RETURN(Trace forced, RunTrace(*runner, prompts[i], policy, steps, ref.tokens));
        ASSIGN_OR_RETURN(Trace free, RunTrace(*runner, prompts[i], policy, steps, {}));
        double agree = 0, kl = 0;
        for (int64_t j = 0; j < steps; ++j) {
          const auto& pf = ref.probs[j];
          const auto& pc = forced.probs[j];
          agree += std::max_element(pc.begin(), pc.end()) - pc.begin() == ref.tokens[j];
          for (size_t v = 0; v < pf.size(); ++v) {
            if (pf[v] > 0) kl += pf[v] * (std::log(pf[v]) - std::log(std::max(pc[v], 1e-300)));
          }
        }
        int64_t prefix = 0;
        while (prefix < steps && free.tokens[prefix] == ref.tokens[prefix]) ++prefix;
        cell.top1 += agree / steps;
        cell.kl += kl / steps;
        cell.prefix += static_cast<double>(prefix);
        LayerBudgets lb = ComputeLayerBudgets(policy, weights->config().num_layers,
                                              static_cast<int64_t>(prompts[i].size()));
        cell.stored += lb.total_stored();
        ++cell.count;
      }
      const double n = cell.count;
      const double mean_stored = static_cast<double>(cell.stored) / n / weights->config().num_layers;
      const std::string budget_text = m == KvMethod::kFull ? "-" : std::to_string(b);
      std::printf("| %s | %s | %.1f | %.3f | %.4f | %.1f / %lld |\n", KvMethodName(m),
                  budget_text.c_str(), mean_stored, cell.top1 / n, cell.kl / n, cell.prefix / n,
                  static_cast<long long>(steps));
      std::fflush(stdout);
      out.push_back({{"method", KvMethodName(m)},
                     {"budget", m == KvMethod::kFull ? nlohmann::json() : nlohmann::json(b)}, {"mean_stored", mean_stored},
                     {"top1_agreement", cell.top1 / n}, {"mean_kl", cell.kl / n},
                     {"greedy_prefix_match", cell.prefix / n}, {"prompts", cell.count}});
      if (m == KvMethod::kFull) break;
    }
  }
  int64_t total_tokens = 0;
  for (const auto& p : prompts) total_tokens += static_cast<int64_t>(p.size());
  std::printf("\n%zu prompts, mean %.0f tokens, %lld-token greedy continuations\n", prompts.size(),
              static_cast<double>(total_tokens) / prompts.size(), static_cast<long long>(steps));
  if (auto path = args.Get("json-out")) {
    std::ofstream(*path) << out.dump(2) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

int EvalCommand(const std::vector<std::string>& args) {
  if (args.empty() || args[0] != "fidelity") {
    std::fputs("usage: funnel eval fidelity --model PATH [--prompts K --prompt-tokens L | --text-file F]\n"
               "  [--continuation T] [--methods m1,m2] [--budgets 32,64,128] [--threads N] [--json-out F]\n",
               stderr);
    return 2;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (absl::Status st = Fidelity(rest); !st.ok()) return ReportError("eval fidelity", st);
  return 0;
}

}  // namespace funnel
