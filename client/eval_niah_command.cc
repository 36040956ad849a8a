// funnel eval niah: needle-in-a-haystack accuracy of KV policies against a running funnel-server
// (see kUsage). Contexts are built and scored as the PyramidKV harness does
// (client/niah_haystack.h); every (length, depth, sample) prompt is sent once per policy of the
// method × budget grid, greedy, with the policy in the request.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "client/eval_commands.h"
#include "client/eval_runner.h"
#include "client/funnel_client.h"
#include "client/heatmap_png.h"
#include "client/niah_format.h"
#include "client/niah_haystack.h"
#include "client/remote_args.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer.h"
#include "runtime/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

constexpr char kUsage[] =
    "usage: funnel eval niah --server HOST:PORT --tokenizer MODEL.gguf [options]\n"
    "  --lengths 1000,2000        context lengths in tokens\n"
    "  --depths 0,11,...,100      needle depths in percent (default round(linspace(0,100,10)))\n"
    "  --methods full,pyramidkv,snapkv,h2o,streamingllm  --budgets 32,64,128,256\n"
    "  [--kv-window W] [--kv-pooling max|avg] [--kv-kernel K] [--kv-beta B] [--kv-rounding R]\n"
    "  needle (default: the classic San Francisco needle in the reference prompt):\n"
    "    [--needle TEXT | --needle-file F] [--question TEXT | --question-file F]\n"
    "    [--answer TEXT | --answer-file F] [--template TEXT | --template-file F] ({context},\n"
    "    {question}) [--buffer N (200)] [--max-tokens N (30)] [--stop STR (newline)]\n"
    "  or a fixture's format: --format models/NAME/niah_format.json [--kind "
    "passkey|kv|city|classic]\n"
    "  [--haystack PATH]... (files or folders of .txt; default the Paul Graham essays)\n"
    "  [--haystack-skip N] (drop the first N sorted files; --format default 40: held-out essays)\n"
    "  [--samples N (1)] [--seed S] [--concurrency N (4)] [--out-dir DIR (niah_out)]\n"
    "  [--no-heatmaps] [--json] [--api-key KEY | --api-key-file F] [--timeout SECONDS]\n"
    "Writes DIR/results.json (every cell), DIR/summary.md and DIR/niah_<method>[_<budget>].png;\n"
    "prints the summary table (or the results JSON with --json). The tokenizer must be the\n"
    "server model's (the client builds and trims contexts in tokens).\n";

struct NiahArgs {
  ClientOptions client;
  std::string tokenizer_path;
  std::vector<int64_t> lengths;
  std::vector<double> depths;
  std::vector<EvalPolicy> grid;
  NiahFormat format;
  std::vector<std::string> haystack_paths;
  int64_t samples = 1;
  uint64_t seed = 0;
  int64_t concurrency = 4;
  std::string out_dir = "niah_out";
  bool heatmaps = true;
  bool json = false;
};

// --NAME TEXT or --NAME-file F; `fallback` when neither.
absl::StatusOr<std::string> TextOrFile(const CliArgs& args, const std::string& name,
                                       const std::string& fallback) {
  const std::string file_flag = name + "-file";
  if (args.Has(name) && args.Has(file_flag)) {
    return absl::InvalidArgumentError(
        absl::StrCat("give at most one of --", name, " and --", file_flag));
  }
  if (auto v = args.Get(name)) return *v;
  if (auto path = args.Get(file_flag)) {
    std::ifstream in(*path, std::ios::binary);
    if (!in)
      return absl::InvalidArgumentError(absl::StrCat("cannot read --", file_flag, " ", *path));
    std::stringstream buf;
    buf << in.rdbuf();
    std::string s = buf.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();  // trailing newline
    return s;
  }
  return fallback;
}

absl::StatusOr<NiahFormat> ParseFormat(const CliArgs& args) {
  if (auto path = args.Get("format")) {
    for (const char* f :
         {"needle", "needle-file", "question", "question-file", "answer", "answer-file"}) {
      if (args.Has(f))
        return absl::InvalidArgumentError(absl::StrCat("--", f, " conflicts with --format"));
    }
    ASSIGN_OR_RETURN(NiahFormat f,
                     LoadFixtureNiahFormat(*path, args.Get("kind").value_or("passkey")));
    return f;
  }
  if (args.Has("kind")) return absl::InvalidArgumentError("--kind needs --format");
  NiahFact fact;
  ASSIGN_OR_RETURN(fact.needle, TextOrFile(args, "needle", kClassicNeedle));
  ASSIGN_OR_RETURN(fact.question, TextOrFile(args, "question", kClassicQuestion));
  // A custom needle without an answer is scored against the needle itself (as the reference
  // scores against its needle).
  const bool custom = args.Has("needle") || args.Has("needle-file");
  ASSIGN_OR_RETURN(fact.answer, TextOrFile(args, "answer", custom ? fact.needle : kClassicAnswer));
  if (fact.needle.empty()) return absl::InvalidArgumentError("the needle is empty");
  return ReferenceNiahFormat(std::move(fact));
}

absl::Status ApplyFormatOverrides(const CliArgs& args, NiahFormat& f) {
  ASSIGN_OR_RETURN(f.prompt_template, TextOrFile(args, "template", f.prompt_template));
  if (f.prompt_template.find("{context}") == std::string::npos) {
    return absl::InvalidArgumentError("the prompt template has no {context}");
  }
  ASSIGN_OR_RETURN(f.buffer_tokens, args.GetInt("buffer", f.buffer_tokens, -1, 1 << 24));
  ASSIGN_OR_RETURN(int64_t max_tokens, args.GetInt("max-tokens", f.max_new_tokens, 1, 1 << 20));
  f.max_new_tokens = static_cast<int32_t>(max_tokens);
  if (auto stop = args.Get("stop")) f.stop = *stop;
  ASSIGN_OR_RETURN(int64_t skip, args.GetInt("haystack-skip", f.haystack_skip_files, 0, 1 << 20));
  f.haystack_skip_files = static_cast<int>(skip);
  return absl::OkStatus();
}

absl::StatusOr<NiahArgs> ParseNiahArgs(const std::vector<std::string>& argv,
                                       const std::string& shared_dir) {
  CliSpec spec{
      {"tokenizer",     "lengths",  "depths",        "methods",     "budgets",     "needle",
       "needle-file",   "question", "question-file", "answer",      "answer-file", "template",
       "template-file", "buffer",   "max-tokens",    "stop",        "format",      "kind",
       "haystack-skip", "samples",  "seed",          "concurrency", "out-dir"},
      {"no-heatmaps", "json"},
      {"haystack"}};
  AddConnectionFlags(spec);
  AddEvalKvKnobFlags(spec);
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  NiahArgs a;
  ASSIGN_OR_RETURN(a.client, ParseConnectionFlags(args));
  ASSIGN_OR_RETURN(a.tokenizer_path, args.Require("tokenizer"));
  ASSIGN_OR_RETURN(a.lengths,
                   ParsePositiveList(args.Get("lengths").value_or("1000,2000"), "--lengths"));
  ASSIGN_OR_RETURN(a.depths,
                   ParseNumberList(args.Get("depths").value_or("0,11,22,33,44,56,67,78,89,100"),
                                   "--depths", 0.0, 100.0));
  ASSIGN_OR_RETURN(
      a.grid,
      ParsePolicyGrid(args.Get("methods").value_or("full,pyramidkv,snapkv,h2o,streamingllm"),
                      args.Get("budgets").value_or("32,64,128,256"), args));
  ASSIGN_OR_RETURN(a.format, ParseFormat(args));
  RETURN_IF_ERROR(ApplyFormatOverrides(args, a.format));
  a.haystack_paths = args.GetAll("haystack");
  if (a.haystack_paths.empty())
    a.haystack_paths.push_back(shared_dir + "/eval/niah/PaulGrahamEssays");
  ASSIGN_OR_RETURN(a.samples, args.GetInt("samples", 1, 1, 1 << 20));
  ASSIGN_OR_RETURN(int64_t seed, args.GetInt("seed", 0, 0, INT64_MAX));
  a.seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(a.concurrency, args.GetInt("concurrency", 4, 1, 4096));
  a.out_dir = args.Get("out-dir").value_or(a.out_dir);
  a.heatmaps = !args.Flag("no-heatmaps");
  a.json = args.Flag("json");
  return a;
}

// One (length, depth, sample) prompt.
struct NiahPrompt {
  int64_t length = 0;
  double depth = 0;
  int64_t sample = 0;
  NiahFact fact;
  std::string text;
  // The needle's first token in the prompt: BOS + template head + offset in the context.
  int64_t needle_start = 0;
  int64_t needle_tokens = 0;
  int64_t local_tokens = 0;  // prompt tokens by the local tokenizer, BOS included
  int32_t max_tokens = 0;    // format.max_new_tokens, capped by the model's context
};

// One request's outcome.
struct NiahCell {
  size_t prompt = 0;
  size_t policy = 0;
  bool ok = false;
  std::string error;
  std::string response;  // the continuation as text, stop string included
  double score = 0;      // word overlap
  bool exact = false;
  int64_t prompt_tokens = 0;
  double kv_entries_mean = 0;  // entries kept per layer, mean over layers
};

std::vector<int32_t> EncodePiece(const Tokenizer& tok, const std::string& text) {
  EncodeOptions o;
  o.add_bos = false;
  o.add_eos = false;
  o.add_space_prefix = text.empty() || (text[0] != ' ' && text[0] != '\n');
  return tok.Encode(text, o);
}

// One prompt: a needle (drawn for this cell and sample) in the haystack at `depth`.
absl::StatusOr<NiahPrompt> BuildPrompt(const NiahArgs& a, const Tokenizer& tok,
                                       const std::vector<int32_t>& haystack, int64_t length,
                                       size_t depth_index, int64_t sample) {
  NiahPrompt p;
  p.length = length;
  p.depth = a.depths[depth_index];
  p.sample = sample;
  std::mt19937_64 rng(a.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(sample) * 1000003u +
                      static_cast<uint64_t>(length) * 131u + depth_index);
  p.fact = DrawNiahFact(a.format, rng);
  const std::vector<int32_t> needle = EncodePiece(tok, p.fact.needle);
  const int64_t buffer = a.format.buffer_tokens >= 0
                             ? a.format.buffer_tokens
                             : 1 + static_cast<int64_t>(EncodePiece(tok, p.fact.question).size() +
                                                        EncodePiece(tok, p.fact.answer).size());
  const int64_t context_tokens = length - buffer;
  if (context_tokens < static_cast<int64_t>(needle.size()) + 8) {
    return absl::InvalidArgumentError(
        absl::StrFormat("context length %d is too short for the needle (%d tokens) and buffer (%d)",
                        length, needle.size(), buffer));
  }
  const NeedleContext ctx = InsertNeedle(haystack, needle, context_tokens, p.depth,
                                         [&tok](int32_t id) { return IsPeriodToken(tok, id); });
  p.text = RenderNiahPrompt(a.format, ReplaceInvalidUtf8(tok.Decode(ctx.ids)), p.fact.question);
  // The template up to {context} precedes the context's tokens.
  NiahFormat head = a.format;
  head.prompt_template =
      a.format.prompt_template.substr(0, a.format.prompt_template.find("{context}"));
  const std::string head_text = RenderNiahPrompt(head, "", p.fact.question);
  const int64_t head_tokens =
      head_text.empty() ? 0 : static_cast<int64_t>(EncodePiece(tok, head_text).size());
  p.needle_start = 1 + head_tokens + ctx.needle_start;
  p.needle_tokens = static_cast<int64_t>(needle.size());
  p.local_tokens = static_cast<int64_t>(tok.Encode(p.text).size());
  return p;
}

absl::StatusOr<std::vector<NiahPrompt>> BuildPrompts(const NiahArgs& a, const Tokenizer& tok,
                                                     const std::vector<int32_t>& haystack,
                                                     int64_t model_context) {
  std::vector<NiahPrompt> prompts;
  for (int64_t length : a.lengths) {
    for (size_t d = 0; d < a.depths.size(); ++d) {
      for (int64_t s = 0; s < a.samples; ++s) {
        ASSIGN_OR_RETURN(NiahPrompt p, BuildPrompt(a, tok, haystack, length, d, s));
        // Output is capped by the model's context (the fixture's longest prompts leave exactly
        // room for their answer).
        p.max_tokens = a.format.max_new_tokens;
        if (model_context > 0) {
          p.max_tokens =
              static_cast<int32_t>(std::min<int64_t>(p.max_tokens, model_context - p.local_tokens));
        }
        if (p.max_tokens < 1) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "a %d-token context gives a %d-token prompt, which leaves no output position in the "
              "model's context of %d",
              length, p.local_tokens, model_context));
        }
        prompts.push_back(std::move(p));
      }
    }
  }
  return prompts;
}

v1::GenerateRequest MakeRequest(const NiahArgs& a, const NiahPrompt& p, const EvalPolicy& policy) {
  v1::GenerateRequest r;
  r.set_prompt(p.text);
  v1::SamplingParams* s = r.mutable_sampling();
  s->set_temperature(0.0f);
  s->set_max_tokens(p.max_tokens);
  if (!a.format.stop.empty()) s->add_stop(a.format.stop);
  *r.mutable_kv_policy() = policy.proto;
  return r;
}

void ScoreCell(const NiahArgs& a, const NiahPrompt& p, NiahCell& c) {
  const std::string& answer = p.fact.answer;
  if (a.format.fixture) {
    const std::string cut = CutAfterStop(c.response, a.format.stop);
    c.score = WordOverlapScore(cut, answer);
    c.exact = ExactAnswerMatch(c.response, answer, a.format.stop);
  } else {
    c.score = WordOverlapScore(c.response, answer);
    c.exact = ContainsAnswer(CutAfterStop(c.response, a.format.stop), answer);
  }
}

std::vector<NiahCell> RunCells(const NiahArgs& a, FunnelClient& client, const Tokenizer& tok,
                               const std::vector<NiahPrompt>& prompts) {
  std::vector<NiahCell> cells(prompts.size() * a.grid.size());
  for (size_t i = 0; i < cells.size(); ++i) {
    // Policy-major inside each prompt: one prompt's policies run close together.
    cells[i].prompt = i / a.grid.size();
    cells[i].policy = i % a.grid.size();
  }
  RunConcurrently(static_cast<int64_t>(cells.size()), a.concurrency, "niah", [&](int64_t i) {
    NiahCell& c = cells[static_cast<size_t>(i)];
    const NiahPrompt& p = prompts[c.prompt];
    absl::StatusOr<GenerateResult> g = client.Generate(MakeRequest(a, p, a.grid[c.policy]));
    if (!g.ok()) {
      c.error = WithCodeName(g.status()).ToString();
      return;
    }
    c.ok = true;
    c.response = ContinuationText(tok, g->output_ids);
    c.prompt_tokens = g->final.usage().prompt_tokens();
    const auto& kv = g->final.usage().kv_entries_per_layer();
    if (!kv.empty()) {
      double sum = 0;
      for (int64_t e : kv) sum += static_cast<double>(e);
      c.kv_entries_mean = sum / kv.size();
    }
    ScoreCell(a, p, c);
  });
  return cells;
}

// Per policy: score grid [depth][length] (mean over samples), totals.
struct PolicySummary {
  std::vector<std::vector<double>> grid;
  std::vector<double> by_length;
  double score = 0, exact = 0, kv_entries = 0;
  int64_t ok = 0, failed = 0;
};

PolicySummary Summarize(const NiahArgs& a, const std::vector<NiahCell>& cells, size_t policy) {
  const size_t nl = a.lengths.size(), nd = a.depths.size();
  std::vector<std::vector<double>> sum(nd, std::vector<double>(nl, 0.0)), cnt = sum;
  std::vector<double> len_sum(nl, 0.0), len_cnt(nl, 0.0);
  PolicySummary s;
  for (const NiahCell& c : cells) {
    if (c.policy != policy) continue;
    if (!c.ok) {
      ++s.failed;
      continue;
    }
    const size_t pi = c.prompt;
    const size_t li = pi / (nd * static_cast<size_t>(a.samples));
    const size_t di = (pi / static_cast<size_t>(a.samples)) % nd;
    sum[di][li] += c.score;
    cnt[di][li] += 1;
    len_sum[li] += c.score;
    len_cnt[li] += 1;
    s.score += c.score;
    s.exact += c.exact ? 1 : 0;
    s.kv_entries += c.kv_entries_mean;
    ++s.ok;
  }
  s.grid.assign(nd, std::vector<double>(nl, std::nan("")));
  for (size_t d = 0; d < nd; ++d) {
    for (size_t l = 0; l < nl; ++l) {
      if (cnt[d][l] > 0) s.grid[d][l] = sum[d][l] / cnt[d][l];
    }
  }
  for (size_t l = 0; l < nl; ++l)
    s.by_length.push_back(len_cnt[l] > 0 ? len_sum[l] / len_cnt[l] : std::nan(""));
  if (s.ok > 0) {
    s.score /= static_cast<double>(s.ok);
    s.exact /= static_cast<double>(s.ok);
    s.kv_entries /= static_cast<double>(s.ok);
  }
  return s;
}

std::string FormatDepth(double d) {
  return std::fabs(d - std::round(d)) < 1e-9 ? absl::StrCat(static_cast<int64_t>(std::round(d)))
                                             : absl::StrFormat("%.1f", d);
}

std::string SummaryMarkdown(const NiahArgs& a, const std::vector<PolicySummary>& summaries) {
  std::string md = "| method | budget | acc | exact % | mean KV entries/layer |";
  std::string rule = "|---|---|---|---|---|";
  for (int64_t l : a.lengths) {
    absl::StrAppend(&md, " acc @", l, " |");
    rule += "---|";
  }
  md += "\n" + rule + "\n";
  for (size_t i = 0; i < a.grid.size(); ++i) {
    const PolicySummary& s = summaries[i];
    const EvalPolicy& p = a.grid[i];
    absl::StrAppend(&md, "| ", KvMethodName(p.policy.method), " | ",
                    p.budget() > 0 ? absl::StrCat(p.budget()) : std::string("-"), " | ",
                    absl::StrFormat("%.1f", 100 * s.score), " | ",
                    absl::StrFormat("%.1f", 100 * s.exact), " | ",
                    absl::StrFormat("%.1f", s.kv_entries), " |");
    for (double v : s.by_length) absl::StrAppend(&md, " ", absl::StrFormat("%.1f", 100 * v), " |");
    if (s.failed > 0) absl::StrAppend(&md, " (", s.failed, " failed)");
    md += "\n";
  }
  absl::StrAppend(&md,
                  "\nacc: mean word overlap with the answer x100 (the reference's visualize.py); ",
                  "exact %: ",
                  a.format.fixture ? "response through the first stop equals the answer"
                                   : "the answer occurs in the response",
                  "; ", a.depths.size(), " depths x ", a.samples, " sample(s) per length\n");
  return md;
}

nlohmann::json ResultsJson(const NiahArgs& a, const std::string& model,
                           const std::vector<NiahPrompt>& prompts,
                           const std::vector<NiahCell>& cells,
                           const std::vector<PolicySummary>& summaries) {
  nlohmann::json policies = nlohmann::json::array();
  for (size_t i = 0; i < a.grid.size(); ++i) {
    const PolicySummary& s = summaries[i];
    nlohmann::json grid = nlohmann::json::array();
    for (const auto& row : s.grid) {
      nlohmann::json r = nlohmann::json::array();
      for (double v : row) r.push_back(std::isnan(v) ? nlohmann::json() : nlohmann::json(v));
      grid.push_back(r);
    }
    policies.push_back(
        {{"label", a.grid[i].label},
         {"method", KvMethodName(a.grid[i].policy.method)},
         {"budget", a.grid[i].budget() > 0 ? nlohmann::json(a.grid[i].budget()) : nlohmann::json()},
         {"window", a.grid[i].policy.window},
         {"acc", 100 * s.score},
         {"exact", 100 * s.exact},
         {"mean_kv_entries_per_layer", s.kv_entries},
         {"ok", s.ok},
         {"failed", s.failed},
         {"grid_depth_by_length", grid}});
  }
  nlohmann::json out_cells = nlohmann::json::array();
  for (const NiahCell& c : cells) {
    const NiahPrompt& p = prompts[c.prompt];
    nlohmann::json j = {{"length", p.length},
                        {"depth", p.depth},
                        {"sample", p.sample},
                        {"policy", a.grid[c.policy].label},
                        {"needle", p.fact.needle},
                        {"answer", p.fact.answer},
                        {"needle_start_token", p.needle_start},
                        {"needle_tokens", p.needle_tokens},
                        {"ok", c.ok}};
    if (c.ok) {
      j.update({{"response", c.response},
                {"score", c.score},
                {"exact", c.exact},
                {"prompt_tokens", c.prompt_tokens},
                {"mean_kv_entries_per_layer", c.kv_entries_mean}});
    } else {
      j["error"] = c.error;
    }
    out_cells.push_back(std::move(j));
  }
  nlohmann::json depths = nlohmann::json::array();
  for (double d : a.depths) depths.push_back(d);
  return {{"model", model},
          {"format", a.format.fixture ? "fixture:" + a.format.kind : "reference"},
          {"lengths", a.lengths},
          {"depths", depths},
          {"samples", a.samples},
          {"seed", a.seed},
          {"policies", policies},
          {"cells", out_cells}};
}

absl::Status WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status WriteOutputs(const NiahArgs& a, const nlohmann::json& results, const std::string& md,
                          const std::vector<PolicySummary>& summaries) {
  std::error_code ec;
  std::filesystem::create_directories(a.out_dir, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot create --out-dir ", a.out_dir));
  RETURN_IF_ERROR(
      WriteFile(a.out_dir + "/results.json",
                results.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
  RETURN_IF_ERROR(WriteFile(a.out_dir + "/summary.md", md));
  if (!a.heatmaps) return absl::OkStatus();
  for (size_t i = 0; i < a.grid.size(); ++i) {
    Heatmap hm;
    const EvalPolicy& p = a.grid[i];
    hm.title = absl::StrCat(KvMethodName(p.policy.method),
                            p.budget() > 0 ? absl::StrCat(" B=", p.budget()) : std::string(""),
                            absl::StrFormat("  ACC %.1f", 100 * summaries[i].score));
    for (double d : a.depths) hm.row_labels.push_back(FormatDepth(d));
    for (int64_t l : a.lengths) hm.column_labels.push_back(absl::StrCat(l));
    hm.values = summaries[i].grid;
    const std::string name =
        absl::StrCat(a.out_dir, "/niah_", KvMethodName(p.policy.method),
                     p.budget() > 0 ? absl::StrCat("_", p.budget()) : std::string(""), ".png");
    RETURN_IF_ERROR(WriteFile(name, EncodePng(RenderHeatmap(hm))));
  }
  return absl::OkStatus();
}

absl::Status Execute(const NiahArgs& a) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, LoadEvalTokenizer(a.tokenizer_path));
  ASSIGN_OR_RETURN(std::unique_ptr<FunnelClient> client, FunnelClient::Create(a.client));
  ASSIGN_OR_RETURN(v1::ServerInfo info, client->GetServerInfo());
  RETURN_IF_ERROR(CheckTokenizerMatchesServer(*tok, info));
  ASSIGN_OR_RETURN(
      std::string hay_text,
      LoadHaystack(a.haystack_paths, a.format.haystack_skip_files, a.format.collapse_whitespace));
  const std::vector<int32_t> haystack = EncodePiece(*tok, hay_text);
  ASSIGN_OR_RETURN(std::vector<NiahPrompt> prompts,
                   BuildPrompts(a, *tok, haystack, info.model().context_length()));
  spdlog::info("niah: {} prompts x {} policies", prompts.size(), a.grid.size());
  const std::vector<NiahCell> cells = RunCells(a, *client, *tok, prompts);
  std::vector<PolicySummary> summaries;
  int64_t ok = 0;
  for (size_t i = 0; i < a.grid.size(); ++i) {
    summaries.push_back(Summarize(a, cells, i));
    ok += summaries.back().ok;
  }
  const std::string md = SummaryMarkdown(a, summaries);
  const nlohmann::json results = ResultsJson(a, info.model().id(), prompts, cells, summaries);
  RETURN_IF_ERROR(WriteOutputs(a, results, md, summaries));
  if (a.json) {
    PrintJson(results);
  } else {
    std::fputs(md.c_str(), stdout);
    std::printf("results: %s/results.json\n", a.out_dir.c_str());
  }
  std::fflush(stdout);
  for (const NiahCell& c : cells) {
    if (!c.ok) {
      spdlog::warn("niah: some requests failed, e.g. {}", c.error);
      break;
    }
  }
  if (ok == 0) return absl::UnavailableError("every request failed");
  return absl::OkStatus();
}

}  // namespace

int EvalNiahCommand(const std::vector<std::string>& args) {
  for (const auto& s : args) {
    if (s == "--help" || s == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  absl::StatusOr<NiahArgs> parsed = ParseNiahArgs(args, SharedDataDir());
  if (!parsed.ok()) return ReportError("eval niah", parsed.status());
  if (absl::Status st = Execute(*parsed); !st.ok()) return ReportError("eval niah", st);
  return 0;
}

}  // namespace funnel
