// Entry points of the `funnel` subcommands. Each takes the arguments after its name and
// returns the process exit code (0 ok, 1 runtime error, 2 usage error).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace funnel {

int RunCommand(const std::vector<std::string>& args);       // funnel run
int TokenizeCommand(const std::vector<std::string>& args);  // funnel tokenize
int ModelCommand(const std::vector<std::string>& args);     // funnel model random
int EvalCommand(const std::vector<std::string>& args);      // funnel eval fidelity
int GenerateCommand(const std::vector<std::string>& args);  // funnel generate (server)
int SessionCommand(const std::vector<std::string>& args);   // funnel session ... (server)
int BenchCommand(const std::vector<std::string>& args);     // funnel bench (server)

// Prints "funnel <command>: <message>" to stderr and returns the exit code for `status`.
int ReportError(const std::string& command, const absl::Status& status);

}  // namespace funnel
