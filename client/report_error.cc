#include <cstdio>

#include "client/commands.h"

namespace funnel {

int ReportError(const std::string& command, const absl::Status& status) {
  std::fprintf(stderr, "funnel %s: %s\n", command.c_str(), std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace funnel
