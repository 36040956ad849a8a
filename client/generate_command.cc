// funnel generate: one streamed generation on a funnel-server (see kUsage for the contract).
// --json prints the same object as `funnel run --json`, built from the stream and its final usage.
#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "client/funnel_client.h"
#include "client/remote_args.h"
#include "runtime/kv/layer_budget.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr char kUsage[] =
    "usage: funnel generate --server HOST:PORT (--prompt TEXT | --prompt-ids ID,ID,...)\n"
    "  [--session ID [--append]] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K]\n"
    "  [--min-p P] [--repetition-penalty R] [--presence-penalty P] [--frequency-penalty F]\n"
    "  [--seed S] [--stop STR]... [--ignore-eos]\n"
    "  [--kv-method full|pyramidkv|snapkv|streamingllm|h2o] [--kv-budget B | --kv-ratio R]\n"
    "  [--kv-window W] [--kv-pooling max|avg] [--kv-kernel K] [--kv-rounding exact|official]\n"
    "  [--api-key KEY | --api-key-file FILE] [--timeout SECONDS] [--request-id ID] [--json]\n"
    "  [--tls | --tls-ca PEM] [--tls-cert PEM --tls-key PEM] [--tls-server-name NAME]\n"
    "Streams the text to stdout; --json prints the result object of `funnel run --json`.\n"
    "Without --kv-* flags the server's default KV policy applies. Defaults as in `funnel run`:\n"
    "greedy, 128 tokens.\n";

struct GenerateArgs {
  ClientOptions client;
  v1::GenerateRequest request;
  bool json = false;
};

absl::StatusOr<GenerateArgs> ParseGenerateArgs(const std::vector<std::string>& argv) {
  CliSpec spec{{"prompt", "prompt-ids", "session", "request-id"}, {"append", "json"}, {}};
  AddConnectionFlags(spec);
  AddSamplingFlags(spec);
  AddKvFlags(spec);
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  GenerateArgs g;
  ASSIGN_OR_RETURN(g.client, ParseConnectionFlags(args));
  if (args.Has("prompt") == args.Has("prompt-ids")) {
    return absl::InvalidArgumentError("give exactly one of --prompt and --prompt-ids");
  }
  v1::GenerateRequest& r = g.request;
  if (auto prompt = args.Get("prompt")) r.set_prompt(*prompt);
  if (auto ids = args.Get("prompt-ids")) {
    ASSIGN_OR_RETURN(std::vector<int32_t> parsed, ParseIdList(*ids, "prompt-ids"));
    r.mutable_prompt_ids()->mutable_ids()->Assign(parsed.begin(), parsed.end());
  }
  if (auto session = args.Get("session")) r.set_session_id(*session);
  if (args.Flag("append")) {
    if (!args.Has("session")) return absl::InvalidArgumentError("--append needs --session");
    r.set_session_mode(v1::SESSION_MODE_APPEND);
  }
  if (auto id = args.Get("request-id")) r.set_request_id(*id);
  ASSIGN_OR_RETURN(*r.mutable_sampling(), ParseSamplingFlags(args));
  ASSIGN_OR_RETURN(std::optional<v1::KvPolicy> kv, ParseKvFlags(args));
  if (kv) *r.mutable_kv_policy() = *kv;
  g.json = args.Flag("json");
  return g;
}

// The "kv" block of `funnel run --json` (KvStats), from the final usage and the server's geometry.
nlohmann::json KvJson(const v1::GenerateRequest& request, const v1::ServerInfo& info,
                      const v1::Usage& usage, int64_t prompt_tokens) {
  const KvPolicy policy = EffectiveKvPolicy(
      request.has_kv_policy() ? &request.kv_policy() : nullptr, info.default_kv_policy());
  const int32_t num_layers = info.model().num_layers();
  // The cache described is the one right after prefill: the session's context plus this prompt.
  const int64_t n = usage.session_tokens_reused() + prompt_tokens;
  const LayerBudgets b = ComputeLayerBudgets(policy, std::max(num_layers, 1), n);
  const int64_t window = b.compress ? b.window : (policy.compresses() ? policy.window : 0);
  const int64_t block_size = std::max(info.block_size(), 1);
  const int64_t block_bytes = info.pool_blocks() > 0 ? info.pool_bytes() / info.pool_blocks() : 0;
  std::vector<int64_t> per_layer(usage.kv_entries_per_layer().begin(),
                                 usage.kv_entries_per_layer().end());
  int64_t kv_bytes = 0;
  for (int64_t t : per_layer) kv_bytes += (t + block_size - 1) / block_size * block_bytes;
  return {{"method", KvMethodName(policy.method)},
          {"budget", b.budget},
          {"window", window},
          {"per_layer_tokens", per_layer},
          {"kv_bytes", kv_bytes},
          {"full_kv_bytes", n * num_layers * (block_bytes / block_size)}};
}

// The object `funnel run --json` prints (ResultJson in run_command.cc).
nlohmann::json ResultJson(const v1::GenerateRequest& request, const GenerateResult& g,
                          const v1::ServerInfo& info) {
  const v1::GenerateFinal& f = g.final;
  std::vector<int32_t> prompt(f.prompt_ids().begin(), f.prompt_ids().end());
  if (prompt.empty() && request.has_prompt_ids()) {
    prompt.assign(request.prompt_ids().ids().begin(), request.prompt_ids().ids().end());
  }
  const v1::Usage& u = f.usage();
  const v1::Timings& t = u.timings();
  const int64_t prompt_tokens =
      u.prompt_tokens() > 0 ? u.prompt_tokens() : static_cast<int64_t>(prompt.size());
  // Forward passes after prefill: the last token is sampled but never fed.
  const int64_t decode_steps = std::max<int64_t>(u.completion_tokens() - 1, 0);
  auto rate = [](double n, double ms) { return ms > 0.0 ? n * 1000.0 / ms : 0.0; };
  return {{"prompt_ids", prompt},
          {"output_ids", g.output_ids},
          {"text", g.text},
          {"finish_reason", FinishReasonName(f.finish_reason())},
          {"timings",
           {{"prefill_ms", t.prefill_ms()},
            {"decode_ms", t.decode_ms()},
            {"prefill_tok_s", rate(static_cast<double>(prompt_tokens), t.prefill_ms())},
            {"decode_tok_s", rate(static_cast<double>(decode_steps), t.decode_ms())}}},
          {"kv", KvJson(request, info, u, prompt_tokens)}};
}

absl::Status Execute(const GenerateArgs& g) {
  ASSIGN_OR_RETURN(std::unique_ptr<FunnelClient> client, FunnelClient::Create(g.client));
  v1::ServerInfo info;
  if (g.json) {
    ASSIGN_OR_RETURN(info, client->GetServerInfo());
  }
  GenerateOptions options;
  bool printed = false;
  if (!g.json) {
    options.on_delta = [&printed](const v1::TokenDelta& d) {
      std::fwrite(d.text().data(), 1, d.text().size(), stdout);
      std::fflush(stdout);
      printed = printed || !d.text().empty();
      return true;
    };
  }
  absl::StatusOr<GenerateResult> generated = client->Generate(g.request, options);
  if (!generated.ok()) {
    if (printed) std::printf("\n");  // end the partial text before the error on stderr
    return generated.status();
  }
  const GenerateResult& result = *generated;
  if (g.json) {
    PrintJson(ResultJson(g.request, result, info));
  } else {
    const std::string& tail = result.final.text();
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::printf("\n");
  }
  return absl::OkStatus();
}

}  // namespace

int GenerateCommand(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  absl::StatusOr<GenerateArgs> parsed = ParseGenerateArgs(args);
  if (!parsed.ok()) return ReportError("generate", parsed.status());
  if (absl::Status st = Execute(*parsed); !st.ok()) {
    std::fflush(stdout);
    return ReportError("generate", WithCodeName(st));
  }
  return 0;
}

}  // namespace funnel
