#include "client/cli_args.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace funnel {

absl::StatusOr<CliArgs> CliArgs::Parse(const std::vector<std::string>& args, const CliSpec& spec) {
  CliArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 3 || a.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "'"));
    }
    std::string name = a.substr(2);
    std::optional<std::string> inline_value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const bool is_option = spec.options.contains(name) || spec.repeated.contains(name);
    if (!is_option && !spec.flags.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
    }
    if (!is_option) {
      if (inline_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      out.values_[name].push_back("");
      continue;
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = args[++i];
    }
    auto& slot = out.values_[name];
    if (!slot.empty() && !spec.repeated.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " given more than once"));
    }
    slot.push_back(std::move(value));
  }
  return out;
}

std::optional<std::string> CliArgs::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> CliArgs::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<std::string> CliArgs::Require(const std::string& name) const {
  std::optional<std::string> v = Get(name);
  if (!v) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  return *v;
}

absl::StatusOr<int64_t> CliArgs::GetInt(const std::string& name, int64_t fallback, int64_t min,
                                        int64_t max) const {
  std::optional<std::string> v = Get(name);
  if (!v) return fallback;
  int64_t x;
  if (!absl::SimpleAtoi(*v, &x) || x < min || x > max) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s must be an integer in [%d, %d], got '%s'", name, min, max, *v));
  }
  return x;
}

absl::StatusOr<double> CliArgs::GetDouble(const std::string& name, double fallback, double min,
                                          double max) const {
  std::optional<std::string> v = Get(name);
  if (!v) return fallback;
  double x;
  if (!absl::SimpleAtod(*v, &x) || !std::isfinite(x) || x < min || x > max) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s must be a number in [%g, %g], got '%s'", name, min, max, *v));
  }
  return x;
}

}  // namespace funnel
