// "--name value" / "--name=value" command lines of the server binaries (funnel-server,
// funnel-gateway): unknown, repeated and valueless flags are InvalidArgument naming the flag;
// typed getters check ranges.
//
// Thread rules: parse once at start-up; then read-only.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace funnel {

class CommandLineFlags {
 public:
  // `known`: every flag (each takes a value); `repeatable`: those that may be given several times;
  // `switches`: those of `known` that take no value ("--name" alone; Get returns "").
  explicit CommandLineFlags(std::set<std::string> known, std::set<std::string> repeatable = {},
                            std::set<std::string> switches = {})
      : known_(std::move(known)),
        repeatable_(std::move(repeatable)),
        switches_(std::move(switches)) {}

  // `help` is set by --help / -h (which take no value).
  absl::Status Parse(const std::vector<std::string>& args, bool& help);
  // The (first) value of `name`, nullopt when absent.
  std::optional<std::string> Get(const std::string& name) const;
  // Every value of `name`, in order (empty when absent).
  const std::vector<std::string>& All(const std::string& name) const;
  // `def` when absent; InvalidArgument when not a number or outside [lo, hi].
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t def, int64_t lo,
                                 int64_t hi) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double def, double lo, double hi) const;

 private:
  std::set<std::string> known_;
  std::set<std::string> repeatable_;
  std::set<std::string> switches_;
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace funnel
