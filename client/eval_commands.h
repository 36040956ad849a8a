// The `funnel eval` subcommands. Each takes the arguments after its name and returns the process
// exit code (0 ok, 1 runtime error, 2 usage error). EvalCommand (client/commands.h) dispatches.
#pragma once

#include <string>
#include <vector>

namespace funnel {

int EvalFidelityCommand(const std::vector<std::string>& args);   // in-process, --model
int EvalNiahCommand(const std::vector<std::string>& args);       // against --server
int EvalLongBenchCommand(const std::vector<std::string>& args);  // against --server

}  // namespace funnel
