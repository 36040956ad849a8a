// funnel run: in-process generation on the CPU or CUDA backend (see kUsage for the contract).
#include <cstdio>
#include <fstream>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "client/generation_flags.h"
#include "nlohmann/json.hpp"
#include "runtime/exec/generate.h"
#include "runtime/exec/model_runner_factory.h"
#include "runtime/model/model_loader.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer_loader.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr char kUsage[] =
    "usage: funnel run --model PATH (--prompt TEXT | --prompt-ids ID,ID,...) [--max-tokens N]\n"
    "  [--chat] [--chat-template NAME]\n"
    "  [--temperature T] [--top-p P] [--top-k K] [--min-p P] [--repetition-penalty R]\n"
    "  [--presence-penalty P] [--frequency-penalty F] [--seed S] [--stop STR]... [--ignore-eos]\n"
    "  [--device cpu|cuda] [--weights-dtype f32|bf16|f16]\n"
    "  [--kv-dtype f32|bf16|f16] [--threads N] [--kv-cache-bytes B]\n"
    "  [--json] [--dump-logits FILE]\n"
    "  [--kv-method full|pyramidkv|snapkv|streamingllm|h2o] [--kv-budget B | --kv-ratio R]\n"
    "  [--kv-window W] [--kv-pooling max|avg] [--kv-kernel K] [--kv-rounding exact|official]\n"
    "PATH is a GGUF file or a Hugging Face model directory (config.json, *.safetensors and\n"
    "tokenizer files). --chat sends the prompt as one user message through the model's chat\n"
    "template (recognised from the model files, or named with --chat-template; an unknown\n"
    "name lists the valid ones). --device cuda (default cpu) runs on the GPU; it needs a build\n"
    "with CUDA and a usable device, else the command fails with status 2; --weights-dtype "
    "bf16|f16\n"
    "keeps its weight matrices in 16 bits (half the memory; default f32), --kv-dtype bf16|f16\n"
    "its KV cache (twice the tokens in the same bytes; default f32); both need --device cuda.\n";

struct RunArgs {
  std::string model;
  std::optional<std::string> prompt;
  std::vector<int32_t> prompt_ids;
  SamplingParams sampling;
  Device device = Device::kCpu;
  RunnerOptions runner;
  KvPolicy kv;
  bool json = false;
  bool chat = false;
  std::optional<std::string> chat_template;  // a template name; else the model's own
  std::optional<std::string> dump_logits;
};

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& s) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--prompt-ids: '", part, "' is not an integer"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-ids is empty");
  return ids;
}

absl::StatusOr<RunArgs> ParseRunArgs(const std::vector<std::string>& argv) {
  CliSpec spec{{"model", "prompt", "prompt-ids", "threads", "kv-cache-bytes", "dump-logits",
                "block-size", "chat-template", "device", "weights-dtype", "kv-dtype"},
               {"json", "chat"},
               {}};
  AddSamplingFlags(spec);
  AddKvFlags(spec);
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  RunArgs r;
  ASSIGN_OR_RETURN(r.model, args.Require("model"));
  if (args.Has("prompt") == args.Has("prompt-ids")) {
    return absl::InvalidArgumentError("give exactly one of --prompt and --prompt-ids");
  }
  r.prompt = args.Get("prompt");
  if (auto ids = args.Get("prompt-ids")) {
    ASSIGN_OR_RETURN(r.prompt_ids, ParseIds(*ids));
  }
  ASSIGN_OR_RETURN(r.sampling, ParseSamplingParams(args));
  if (auto device = args.Get("device")) {
    absl::StatusOr<Device> d = ParseDevice(*device);
    if (!d.ok())
      return absl::InvalidArgumentError(absl::StrCat("--device: ", d.status().message()));
    r.device = *d;
  }
  for (auto [flag, field] : {std::pair{"weights-dtype", &r.runner.device_weights},
                             std::pair{"kv-dtype", &r.runner.kv_dtype}}) {
    const auto name = args.Get(flag);
    if (!name) continue;
    absl::StatusOr<DeviceDtype> t = ParseDeviceDtype(*name);
    if (!t.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", t.status().message()));
    }
    if (*t != DeviceDtype::kF32 && r.device != Device::kCuda) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, " ", *name, " needs --device cuda"));
    }
    *field = *t;
  }
  ASSIGN_OR_RETURN(r.runner.num_threads, args.GetInt("threads", 2, 1, 256));
  ASSIGN_OR_RETURN(r.runner.block_size, args.GetInt("block-size", 16, 1, 1024));
  ASSIGN_OR_RETURN(r.runner.kv_cache_bytes,
                   args.GetInt("kv-cache-bytes", r.runner.kv_cache_bytes, 1, INT64_MAX));
  ASSIGN_OR_RETURN(r.kv, ParseKvPolicy(args));
  r.json = args.Flag("json");
  r.chat = args.Flag("chat") || args.Has("chat-template");
  r.chat_template = args.Get("chat-template");
  if (r.chat && !r.prompt) return absl::InvalidArgumentError("--chat needs --prompt");
  r.dump_logits = args.Get("dump-logits");
  return r;
}

// Writes one JSON line per position: {"pos":P,"logits":[...]} (shortest round-trip floats).
class LogitsDumper {
 public:
  explicit LogitsDumper(const std::string& path) : out_(path) {}
  bool ok() const { return static_cast<bool>(out_); }
  void Write(int64_t pos, std::span<const float> logits) {
    nlohmann::json line = {{"pos", pos},
                           {"logits", std::vector<float>(logits.begin(), logits.end())}};
    out_ << line.dump() << '\n';
  }

 private:
  std::ofstream out_;
};

nlohmann::json ResultJson(const std::vector<int32_t>& prompt, const GenerationResult& g) {
  const auto& t = g.timings;
  auto rate = [](double n, double ms) { return ms > 0.0 ? n * 1000.0 / ms : 0.0; };
  return {{"prompt_ids", prompt},
          {"output_ids", g.output_ids},
          {"text", g.text},
          {"finish_reason", g.finish_reason},
          {"timings",
           {{"prefill_ms", t.prefill_ms},
            {"decode_ms", t.decode_ms},
            {"prefill_tok_s", rate(static_cast<double>(t.prefill_tokens), t.prefill_ms)},
            {"decode_tok_s", rate(static_cast<double>(t.decode_steps), t.decode_ms)}}},
          {"kv",
           {{"method", g.kv.method},
            {"budget", g.kv.budget},
            {"window", g.kv.window},
            {"per_layer_tokens", g.kv.per_layer_tokens},
            {"kv_bytes", g.kv.kv_bytes},
            {"full_kv_bytes", g.kv.full_kv_bytes}}}};
}

// The prompt ids: --prompt-ids as given, --prompt encoded, or with --chat as one user message
// through the chat template.
absl::StatusOr<std::vector<int32_t>> PromptIds(const RunArgs& r, const LoadedTokenizer& loaded) {
  if (!r.prompt) return r.prompt_ids;
  const Tokenizer& tokenizer = *loaded.tokenizer;
  if (!r.chat) return tokenizer.Encode(*r.prompt, EncodeOptions{});
  auto chat = r.chat_template ? ChatTemplate::FromName(*r.chat_template, tokenizer)
                              : ChatTemplate::Detect(loaded.chat_template, tokenizer);
  if (!chat.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        chat.status().message(), r.chat_template ? "" : " (name one with --chat-template)"));
  }
  const ChatMessage message{"user", *r.prompt};
  return chat->Apply({&message, 1});
}

absl::Status Run(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(RunArgs r, ParseRunArgs(argv));
  if (absl::Status s = CheckDeviceAvailable(r.device); !s.ok()) {  // a flag error: status 2
    return absl::InvalidArgumentError(
        absl::StrCat("--device ", DeviceName(r.device), ": ", s.message()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights, OpenModel(r.model));
  ASSIGN_OR_RETURN(LoadedTokenizer loaded, LoadTokenizerAndTemplate(r.model));
  const Tokenizer& tokenizer = *loaded.tokenizer;
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptIds(r, loaded));
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   CreateModelRunner(r.device, *weights, r.runner));

  std::unique_ptr<LogitsDumper> dumper;
  LogitsObserver observer;
  if (r.dump_logits) {
    dumper = std::make_unique<LogitsDumper>(*r.dump_logits);
    if (!dumper->ok())
      return absl::InvalidArgumentError(absl::StrCat("cannot write ", *r.dump_logits));
    observer = [&](int64_t pos, std::span<const float> l) { dumper->Write(pos, l); };
  }
  std::function<void(std::string_view)> on_text;
  if (!r.json) {
    on_text = [](std::string_view s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    };
  }
  const uint64_t default_seed = std::random_device{}();
  ASSIGN_OR_RETURN(GenerationResult g, Generate(*runner, tokenizer, prompt, r.sampling,
                                                default_seed, r.kv, observer, on_text));
  if (r.json) {
    std::printf("%s\n", ResultJson(prompt, g)
                            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                            .c_str());
  } else {
    std::printf("\n");
  }
  return absl::OkStatus();
}

}  // namespace

int RunCommand(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  if (absl::Status st = Run(args); !st.ok()) return ReportError("run", st);
  return 0;
}

}  // namespace funnel
