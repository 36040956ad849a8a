// funnel eval longbench: LongBench v1 scores of KV policies against a running funnel-server (see
// kUsage). Prompts follow LongBench's pred.py (client/longbench_prompt.h), scores its
// metrics.py / eval.py (client/longbench_metrics.h); every sample is sent once per policy of the
// method × budget grid, greedy, with the policy in the request.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "client/eval_commands.h"
#include "client/eval_runner.h"
#include "client/funnel_client.h"
#include "client/longbench_metrics.h"
#include "client/longbench_prompt.h"
#include "client/remote_args.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer.h"
#include "runtime/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

constexpr char kUsage[] =
    "usage: funnel eval longbench --server HOST:PORT --tokenizer MODEL.gguf --tasks a,b [options]\n"
    "  --data DIR                 task files DIR/<task>.jsonl, dataset2prompt.json and\n"
    "                             dataset2maxlen.json (default ../shared/data/eval/longbench)\n"
    "  --max-prompt-tokens N      middle-truncate prompts to N tokens (default: the model's\n"
    "                             context - the task's generation length - 64)\n"
    "  --methods full,pyramidkv   --budgets 128,2048   (default: full only)\n"
    "  [--kv-window W] [--kv-pooling max|avg] [--kv-kernel K] [--kv-beta B] [--kv-rounding R]\n"
    "  [--chat-template auto|on|off] (auto: on where LongBench uses it, when the server has a\n"
    "                             template; never for trec, triviaqa, samsum, lsht, lcc, "
    "repobench-p)\n"
    "  [--limit N] (first N samples of each task) [--concurrency N (4)]\n"
    "  [--out-dir DIR (longbench_out)] [--json] [--api-key KEY | --api-key-file F] [--timeout S]\n"
    "Writes DIR/results.json, DIR/summary.md and DIR/predictions.jsonl; prints the summary table\n"
    "(or the results JSON with --json). Scores are x100; Avg is the unweighted task mean.\n";

enum class ChatMode { kAuto, kOn, kOff };

struct LongBenchArgs {
  ClientOptions client;
  std::string tokenizer_path;
  std::string data_dir;
  std::vector<std::string> tasks;
  int64_t max_prompt_tokens = 0;  // 0: from the model's context
  std::vector<EvalPolicy> grid;
  ChatMode chat = ChatMode::kAuto;
  int64_t limit = 0;
  int64_t concurrency = 4;
  std::string out_dir = "longbench_out";
  bool json = false;
};

absl::StatusOr<LongBenchArgs> ParseLongBenchArgs(const std::vector<std::string>& argv) {
  CliSpec spec{{"tokenizer", "data", "tasks", "max-prompt-tokens", "methods", "budgets",
                "chat-template", "limit", "concurrency", "out-dir"},
               {"json"},
               {}};
  AddConnectionFlags(spec);
  AddEvalKvKnobFlags(spec);
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  LongBenchArgs a;
  ASSIGN_OR_RETURN(a.client, ParseConnectionFlags(args));
  ASSIGN_OR_RETURN(a.tokenizer_path, args.Require("tokenizer"));
  a.data_dir = args.Get("data").value_or(SharedDataDir() + "/eval/longbench");
  ASSIGN_OR_RETURN(std::string tasks, args.Require("tasks"));
  for (absl::string_view t : absl::StrSplit(tasks, ',', absl::SkipWhitespace())) {
    a.tasks.emplace_back(t.data(), t.size());
    RETURN_IF_ERROR(MetricForTask(a.tasks.back()).status());
  }
  if (a.tasks.empty()) return absl::InvalidArgumentError("--tasks is empty");
  ASSIGN_OR_RETURN(a.max_prompt_tokens, args.GetInt("max-prompt-tokens", 0, 16, 1 << 24));
  ASSIGN_OR_RETURN(a.grid, ParsePolicyGrid(args.Get("methods").value_or("full"),
                                           args.Get("budgets").value_or(""), args));
  const std::string chat = args.Get("chat-template").value_or("auto");
  if (chat == "auto") {
    a.chat = ChatMode::kAuto;
  } else if (chat == "on") {
    a.chat = ChatMode::kOn;
  } else if (chat == "off") {
    a.chat = ChatMode::kOff;
  } else {
    return absl::InvalidArgumentError("--chat-template must be auto, on or off");
  }
  ASSIGN_OR_RETURN(a.limit, args.GetInt("limit", 0, 1, 1 << 30));
  ASSIGN_OR_RETURN(a.concurrency, args.GetInt("concurrency", 4, 1, 4096));
  a.out_dir = args.Get("out-dir").value_or(a.out_dir);
  a.json = args.Flag("json");
  return a;
}

// One sample of one task, ready to send.
struct LongBenchItem {
  size_t task = 0;
  LongBenchSample sample;
  std::string prompt;  // truncated, before any chat template
  bool chat = false;
  int32_t max_tokens = 0;
};

struct LongBenchPrediction {
  size_t item = 0;
  size_t policy = 0;
  bool ok = false;
  std::string error;
  std::string text;
  double score = 0;
  int64_t prompt_tokens = 0;
};

absl::StatusOr<std::vector<LongBenchItem>> BuildItems(const LongBenchArgs& a, const Tokenizer& tok,
                                                      const v1::ServerInfo& info) {
  ASSIGN_OR_RETURN(auto prompts, LoadStringMap(a.data_dir + "/dataset2prompt.json"));
  ASSIGN_OR_RETURN(auto maxlens, LoadIntMap(a.data_dir + "/dataset2maxlen.json"));
  // "plain" is the server's stand-in for models without a template ("User: ...\nAssistant:");
  // LongBench's build_chat leaves such models' prompts as they are.
  const bool server_has_template = !info.chat_template().empty() && info.chat_template() != "plain";
  if (a.chat == ChatMode::kAuto && !server_has_template) {
    spdlog::warn("longbench: the model has no chat template; prompts go without one");
  }
  int64_t context = info.model().context_length();
  if (info.max_prompt_tokens() > 0 && (context <= 0 || info.max_prompt_tokens() < context)) {
    context = info.max_prompt_tokens();
  }
  std::vector<LongBenchItem> items;
  for (size_t t = 0; t < a.tasks.size(); ++t) {
    const std::string& task = a.tasks[t];
    if (!prompts.contains(task) || !maxlens.contains(task)) {
      return absl::InvalidArgumentError(absl::StrCat(
          task, " is not in ", a.data_dir, "/dataset2prompt.json or dataset2maxlen.json"));
    }
    const int64_t max_gen = maxlens[task];
    int64_t max_prompt = a.max_prompt_tokens;
    if (max_prompt == 0) max_prompt = context - max_gen - 64;
    if (max_prompt < 16) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the model's context (%d) leaves no room for a prompt; give --max-prompt-tokens",
          task, context));
    }
    ASSIGN_OR_RETURN(std::vector<LongBenchSample> samples,
                     LoadLongBenchTask(a.data_dir + "/" + task + ".jsonl", a.limit));
    for (LongBenchSample& s : samples) {
      LongBenchItem item;
      item.task = t;
      ASSIGN_OR_RETURN(std::string prompt, FormatLongBenchPrompt(prompts[task], s.fields));
      item.prompt = TruncateMiddle(tok, prompt, max_prompt);
      item.chat = LongBenchUsesChatTemplate(task) &&
                  (a.chat == ChatMode::kOn || (a.chat == ChatMode::kAuto && server_has_template));
      item.max_tokens = static_cast<int32_t>(max_gen);
      item.sample = std::move(s);
      items.push_back(std::move(item));
    }
  }
  return items;
}

v1::GenerateRequest MakeRequest(const LongBenchItem& item, const EvalPolicy& policy) {
  v1::GenerateRequest r;
  if (item.chat) {
    v1::ChatMessage* m = r.mutable_messages()->add_messages();
    m->set_role("user");
    m->set_content(item.prompt);
  } else {
    r.set_prompt(item.prompt);
  }
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_sampling()->set_max_tokens(item.max_tokens);
  *r.mutable_kv_policy() = policy.proto;
  return r;
}

std::vector<LongBenchPrediction> RunPredictions(const LongBenchArgs& a, FunnelClient& client,
                                                const std::vector<LongBenchItem>& items) {
  std::vector<LongBenchPrediction> preds(items.size() * a.grid.size());
  for (size_t i = 0; i < preds.size(); ++i) {
    preds[i].item = i / a.grid.size();
    preds[i].policy = i % a.grid.size();
  }
  RunConcurrently(static_cast<int64_t>(preds.size()), a.concurrency, "longbench", [&](int64_t i) {
    LongBenchPrediction& p = preds[static_cast<size_t>(i)];
    const LongBenchItem& item = items[p.item];
    absl::StatusOr<GenerateResult> g = client.Generate(MakeRequest(item, a.grid[p.policy]));
    if (!g.ok()) {
      p.error = WithCodeName(g.status()).ToString();
      return;
    }
    p.ok = true;
    p.text = g->text;
    p.prompt_tokens = g->final.usage().prompt_tokens();
    const std::string& task = a.tasks[item.task];
    p.score = ScoreLongBenchSample(task, *MetricForTask(task), p.text, item.sample.answers,
                                   item.sample.all_classes);
  });
  return preds;
}

// scores[policy][task]: eval.py's round(100 * mean, 2); NaN when every request failed.
std::vector<std::vector<double>> TaskScores(const LongBenchArgs& a,
                                            const std::vector<LongBenchItem>& items,
                                            const std::vector<LongBenchPrediction>& preds) {
  std::vector<std::vector<double>> sum(a.grid.size(), std::vector<double>(a.tasks.size(), 0.0));
  auto ok = sum, all = sum;
  for (const LongBenchPrediction& p : preds) {
    const size_t t = items[p.item].task;
    all[p.policy][t] += 1;
    if (!p.ok) continue;
    sum[p.policy][t] += p.score;
    ok[p.policy][t] += 1;
  }
  for (size_t i = 0; i < a.grid.size(); ++i) {
    for (size_t t = 0; t < a.tasks.size(); ++t) {
      // Failed requests count as 0, as a missing prediction would in eval.py's mean.
      sum[i][t] = ok[i][t] > 0 ? std::round(10000.0 * sum[i][t] / all[i][t]) / 100.0 : std::nan("");
    }
  }
  return sum;
}

double Average(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? std::nan("") : s / static_cast<double>(v.size());
}

std::string SummaryMarkdown(const LongBenchArgs& a,
                            const std::vector<std::vector<double>>& scores) {
  std::string md = "| method | budget |", rule = "|---|---|";
  for (const auto& t : a.tasks) {
    absl::StrAppend(&md, " ", t, " |");
    rule += "---|";
  }
  md += " Avg |\n" + rule + "---|\n";
  for (size_t i = 0; i < a.grid.size(); ++i) {
    const EvalPolicy& p = a.grid[i];
    absl::StrAppend(&md, "| ", KvMethodName(p.policy.method), " | ",
                    p.budget() > 0 ? absl::StrCat(p.budget()) : std::string("-"), " |");
    for (double s : scores[i]) absl::StrAppend(&md, " ", absl::StrFormat("%.2f", s), " |");
    absl::StrAppend(&md, " ", absl::StrFormat("%.2f", Average(scores[i])), " |\n");
  }
  return md;
}

nlohmann::json Num(double v) { return std::isnan(v) ? nlohmann::json() : nlohmann::json(v); }

nlohmann::json ResultsJson(const LongBenchArgs& a, const std::string& model,
                           const std::vector<LongBenchItem>& items,
                           const std::vector<LongBenchPrediction>& preds,
                           const std::vector<std::vector<double>>& scores) {
  nlohmann::json policies = nlohmann::json::array();
  for (size_t i = 0; i < a.grid.size(); ++i) {
    nlohmann::json by_task = nlohmann::json::object();
    for (size_t t = 0; t < a.tasks.size(); ++t) by_task[a.tasks[t]] = Num(scores[i][t]);
    int64_t failed = 0;
    for (const auto& p : preds) failed += (p.policy == i && !p.ok) ? 1 : 0;
    policies.push_back(
        {{"label", a.grid[i].label},
         {"method", KvMethodName(a.grid[i].policy.method)},
         {"budget", a.grid[i].budget() > 0 ? nlohmann::json(a.grid[i].budget()) : nlohmann::json()},
         {"scores", by_task},
         {"average", Num(Average(scores[i]))},
         {"failed_requests", failed}});
  }
  nlohmann::json tasks = nlohmann::json::array();
  for (size_t t = 0; t < a.tasks.size(); ++t) {
    int64_t n = 0, chat = 0;
    for (const auto& item : items) {
      if (item.task != t) continue;
      ++n;
      chat += item.chat ? 1 : 0;
    }
    tasks.push_back({{"task", a.tasks[t]},
                     {"metric", LongBenchMetricName(*MetricForTask(a.tasks[t]))},
                     {"samples", n},
                     {"chat_template", chat > 0}});
  }
  return {{"model", model},
          {"tasks", tasks},
          {"policies", policies},
          {"chinese_segmentation", "characters (jieba not available)"}};
}

absl::Status WriteOutputs(const LongBenchArgs& a, const nlohmann::json& results,
                          const std::string& md, const std::vector<LongBenchItem>& items,
                          const std::vector<LongBenchPrediction>& preds) {
  std::error_code ec;
  std::filesystem::create_directories(a.out_dir, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot create --out-dir ", a.out_dir));
  const auto dump = [](const nlohmann::json& j, int indent) {
    return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  std::ofstream(a.out_dir + "/results.json") << dump(results, 1) << "\n";
  std::ofstream(a.out_dir + "/summary.md") << md;
  std::ofstream out(a.out_dir + "/predictions.jsonl");
  for (const auto& p : preds) {
    const LongBenchItem& item = items[p.item];
    nlohmann::json j = {{"task", a.tasks[item.task]},
                        {"_id", item.sample.id},
                        {"policy", a.grid[p.policy].label},
                        {"answers", item.sample.answers}};
    if (p.ok) {
      j.update({{"pred", p.text}, {"score", p.score}, {"prompt_tokens", p.prompt_tokens}});
    } else {
      j["error"] = p.error;
    }
    out << dump(j, -1) << "\n";
  }
  out.close();
  if (!out)
    return absl::InternalError(absl::StrCat("cannot write ", a.out_dir, "/predictions.jsonl"));
  return absl::OkStatus();
}

absl::Status Execute(const LongBenchArgs& a) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, LoadEvalTokenizer(a.tokenizer_path));
  ASSIGN_OR_RETURN(std::unique_ptr<FunnelClient> client, FunnelClient::Create(a.client));
  ASSIGN_OR_RETURN(v1::ServerInfo info, client->GetServerInfo());
  RETURN_IF_ERROR(CheckTokenizerMatchesServer(*tok, info));
  ASSIGN_OR_RETURN(std::vector<LongBenchItem> items, BuildItems(a, *tok, info));
  const std::vector<LongBenchPrediction> preds = RunPredictions(a, *client, items);
  const auto scores = TaskScores(a, items, preds);
  const std::string md = SummaryMarkdown(a, scores);
  const nlohmann::json results = ResultsJson(a, info.model().id(), items, preds, scores);
  RETURN_IF_ERROR(WriteOutputs(a, results, md, items, preds));
  if (a.json) {
    PrintJson(results);
  } else {
    std::fputs(md.c_str(), stdout);
    std::printf("results: %s/results.json\n", a.out_dir.c_str());
  }
  std::fflush(stdout);
  int64_t ok = 0;
  for (const auto& p : preds) {
    if (p.ok) {
      ++ok;
    } else if (ok == 0) {
      spdlog::warn("longbench: a request failed: {}", p.error);
    }
  }
  if (ok == 0) return absl::UnavailableError("every request failed");
  return absl::OkStatus();
}

}  // namespace

int EvalLongBenchCommand(const std::vector<std::string>& args) {
  for (const auto& s : args) {
    if (s == "--help" || s == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  absl::StatusOr<LongBenchArgs> parsed = ParseLongBenchArgs(args);
  if (!parsed.ok()) return ReportError("eval longbench", parsed.status());
  if (absl::Status st = Execute(*parsed); !st.ok()) return ReportError("eval longbench", st);
  return 0;
}

}  // namespace funnel
