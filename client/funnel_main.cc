// The `funnel` CLI: dispatches to subcommands.
#include <cstdio>
#include <string>
#include <vector>

#include "client/commands.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

constexpr char kUsage[] =
    "usage: funnel <command> [options]\n"
    "commands:\n"
    "  run       generate in-process: --model PATH (--prompt TEXT | --prompt-ids IDS) [--json] ...\n"
    "  tokenize  print token ids: --model GGUF|HF-DIR|TOKENIZER-FILE --text TEXT [--no-bos]\n"
    "  model     model tools: model random --out PATH [shape options]\n"
    "  eval      evaluations: eval fidelity --model PATH (compressed vs full cache, in-process);\n"
    "            eval niah|longbench --server HOST:PORT --tokenizer MODEL.gguf (against a server)\n"
    "  generate  generate on a server: --server HOST:PORT (--prompt TEXT | --prompt-ids IDS) ...\n"
    "  session   server sessions: session create|get|list|delete --server HOST:PORT ...\n"
    "  bench     load a server: --server HOST:PORT [--concurrency C] [--requests N] ...\n"
    "run 'funnel <command> --help' for its options\n";

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr so stdout carries only results (JSON, text).
  spdlog::set_default_logger(spdlog::stderr_color_mt("funnel"));
  spdlog::set_level(spdlog::level::warn);
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "run") return funnel::RunCommand(args);
  if (command == "tokenize") return funnel::TokenizeCommand(args);
  if (command == "model") return funnel::ModelCommand(args);
  if (command == "eval") return funnel::EvalCommand(args);
  if (command == "generate") return funnel::GenerateCommand(args);
  if (command == "session") return funnel::SessionCommand(args);
  if (command == "bench") return funnel::BenchCommand(args);
  std::fprintf(stderr, "funnel: unknown command '%s'\n%s", command.c_str(), kUsage);
  return 2;
}
