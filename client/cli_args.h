// Minimal command-line parsing for the `funnel` subcommands: "--name value" and "--flag".
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace funnel {

struct CliSpec {
  std::set<std::string> options;  // take a value ("--top-k 40" or "--top-k=40")
  std::set<std::string> flags;    // take none ("--json")
  std::set<std::string> repeated; // options that may appear several times ("--stop")
};

class CliArgs {
 public:
  // Unknown names, missing values and stray positional words are InvalidArgument.
  static absl::StatusOr<CliArgs> Parse(const std::vector<std::string>& args, const CliSpec& spec);

  bool Has(const std::string& name) const { return values_.contains(name); }
  bool Flag(const std::string& name) const { return Has(name); }
  std::optional<std::string> Get(const std::string& name) const;
  std::vector<std::string> GetAll(const std::string& name) const;
  absl::StatusOr<std::string> Require(const std::string& name) const;
  // Parsed numbers with range checks; `fallback` when the option is absent.
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback, int64_t min, int64_t max) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback, double min, double max) const;

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace funnel
