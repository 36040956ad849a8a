// funnel eval <fidelity|niah|longbench>: dispatches to the evaluation subcommands.
#include <cstdio>

#include "client/commands.h"
#include "client/eval_commands.h"

namespace funnel {
namespace {

constexpr char kEvalUsage[] =
    "usage: funnel eval <fidelity|niah|longbench> [options]\n"
    "  fidelity   compressed vs full cache in-process: --model PATH (top-1 agreement, KL, greedy\n"
    "             prefix match per method and budget)\n"
    "  niah       needle-in-a-haystack against a server: --server HOST:PORT --tokenizer "
    "MODEL.gguf\n"
    "  longbench  LongBench v1 tasks against a server: --server HOST:PORT --tokenizer MODEL.gguf\n"
    "             --tasks a,b\n"
    "run 'funnel eval <name> --help' for its options\n";

}  // namespace

int EvalCommand(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kEvalUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "fidelity") return EvalFidelityCommand(rest);
  if (args[0] == "niah") return EvalNiahCommand(rest);
  if (args[0] == "longbench") return EvalLongBenchCommand(rest);
  std::fprintf(stderr, "funnel eval: unknown evaluation '%s'\n%s", args[0].c_str(), kEvalUsage);
  return 2;
}

}  // namespace funnel
